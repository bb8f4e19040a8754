package network

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/test/harness"
)

// dialIn connects to addr from inside the namespace.
func dialIn(t *testing.T, ns *Namespace, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := InNamespace(ns.Path, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

// TestLoopback plays containerd's port-forward: connections to any port
// on the namespace's loopback, IPv4 and IPv6, reach the one listener with
// the port asked for; once it is closed, the loopback is the namespace's
// own again (nothing listens: refused).
func TestLoopback(t *testing.T) {
	harness.NeedRoot(t)
	harness.WatchLeaks(t)
	ns := testNS(t, "lo")
	h, err := handleAt(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	addrs, _ := h.AddrList(lo, netlink.FAMILY_V6)
	l, err := ListenLoopback(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	targets := []struct {
		addr string
		port int
	}{{"127.0.0.1:80", 80}, {"127.0.0.53:8080", 8080}}
	if len(addrs) > 0 {
		targets = append(targets, struct {
			addr string
			port int
		}{"[::1]:443", 443})
	}
	for _, tc := range targets {
		t.Logf("connect to %s", tc.addr)
		c, err := dialIn(t, ns, tc.addr)
		if err != nil {
			t.Fatalf("connect to %s: %v", tc.addr, err)
		}
		got, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if p := got.LocalAddr().(*net.TCPAddr).Port; p != tc.port {
			t.Errorf("connection to %s accepted with local port %d", tc.addr, p)
		}
		if _, err := c.Write([]byte("ping " + tc.addr)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		b, err := io.ReadAll(got)
		if err != nil || string(b) != "ping "+tc.addr {
			t.Errorf("read %q, %v", b, err)
		}
		got.Close()
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if c, err := dialIn(t, ns, "127.0.0.1:80"); !errors.Is(err, unix.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("connect after Close: %v, want refused", err)
	}
}
