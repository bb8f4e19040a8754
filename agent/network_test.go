package agent

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/test/harness"
)

// inNewNetNS runs f on a thread in a network namespace of its own, which
// goes with the thread when f returns.
func inNewNetNS(t *testing.T, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the thread ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestLoopbackUp: in a new network namespace, whose lo starts down (as a
// guest's does), loopbackUp brings lo up and 127.0.0.1 answers.
func TestLoopbackUp(t *testing.T) {
	harness.NeedRoot(t)
	inNewNetNS(t, func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		if lo.Flags&net.FlagUp != 0 {
			return fmt.Errorf("lo of a new namespace was up already (%v): the test shows nothing", lo.Flags)
		}
		if err := loopbackUp(); err != nil {
			return err
		}
		if lo, err = net.InterfaceByName("lo"); err != nil {
			return err
		}
		if lo.Flags&net.FlagUp == 0 {
			return fmt.Errorf("lo after loopbackUp: %v, want up", lo.Flags)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// TestConfigure gives a NIC the pod's identity as a restored guest's gets
// it: one end of a veth pair stands for the template's NIC (its name and
// MAC), and Configure finds it by that MAC, renames it, sets the pod's MAC
// and MTU, adds the address, brings it up and adds the routes and a
// neighbour; each is then read back.
func TestConfigure(t *testing.T) {
	harness.NeedRoot(t)
	inNewNetNS(t, func() error {
		templateMAC, _ := net.ParseMAC("02:70:6f:64:00:00")
		podMAC, _ := net.ParseMAC("0a:58:0a:42:00:07")
		nic := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tmpl0", HardwareAddr: templateMAC}, PeerName: "peer0"}
		if err := netlink.LinkAdd(nic); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		cfg := &agentapi.NetworkConfig{
			Interfaces: []*agentapi.Interface{{Name: "eth0", Mac: podMAC.String(), CurrentMac: templateMAC.String(), Mtu: 1400, Addresses: []string{"10.66.0.7/24"}}},
			Routes: []*agentapi.Route{
				{Dest: "10.77.0.0/16", Gateway: "10.66.0.1", Device: "eth0", Family: unix.AF_INET},
				{Dest: "", Gateway: "10.66.0.1", Device: "eth0", Family: unix.AF_INET},
			},
			Neighbours: []*agentapi.Neighbour{{Ip: "10.66.0.1", Mac: "0a:58:0a:42:00:01", Device: "eth0"}},
		}
		if _, err := (&networkService{}).Configure(context.Background(), cfg); err != nil {
			return err
		}
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			return fmt.Errorf("no eth0 after Configure: %w", err)
		}
		if eth0.HardwareAddr.String() != podMAC.String() || eth0.MTU != 1400 || eth0.Flags&net.FlagUp == 0 {
			return fmt.Errorf("eth0 is %v mtu %d %v, want %v mtu 1400 up", eth0.HardwareAddr, eth0.MTU, eth0.Flags, podMAC)
		}
		addrs, _ := eth0.Addrs()
		if !slices.ContainsFunc(addrs, func(a net.Addr) bool { return a.String() == "10.66.0.7/24" }) {
			return fmt.Errorf("eth0's addresses %v lack 10.66.0.7/24", addrs)
		}
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var got []string
		for _, r := range routes {
			got = append(got, fmt.Sprintf("%v via %v", r.Dst, r.Gw))
		}
		for _, want := range []string{"10.77.0.0/16 via 10.66.0.1", "0.0.0.0/0 via 10.66.0.1"} {
			if !slices.Contains(got, want) {
				return fmt.Errorf("routes %q lack %q", got, want)
			}
		}
		neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
			return n.IP.String() == "10.66.0.1" && n.HardwareAddr.String() == "0a:58:0a:42:00:01" && n.State == netlink.NUD_PERMANENT
		}) {
			return fmt.Errorf("neighbours %v lack 10.66.0.1 at 0a:58:0a:42:00:01", neighs)
		}
		return nil
	})
}
