package agent

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// Only the pod's own shim may talk to the agent. Over vsock any process on
// the host (or in another pod that can open AF_VSOCK) could connect to the
// agent's port; so every connection must open with the host's hello, which
// carries a secret that the shim made for this VM and handed over a
// virtio-serial port only the agent reads (not the kernel command line,
// which every process in the guest can read), and a vsock peer must be the
// host itself.

// readSecret reads the VM's boot record from its port, once. A VM saved as a
// template waits here: the ready byte tells the host it may be saved, and
// every VM restored from it reads a record of its own.
func readSecret(ctx context.Context, port string, prepare func() <-chan struct{}, beforeSave func()) (*agentapi.BootRecord, error) {
	dev, err := findPort(ctx, port)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the secret port: %w", err)
	}
	defer f.Close()
	// A booting VM's record is there already (the host wrote it at once);
	// a template's comes only after the ready byte, and the template
	// must be saved with the containers' preparations done.
	if !readable(f, recordGrace) {
		select {
		case <-prepare():
		case <-ctx.Done():
			return nil, fmt.Errorf("prepare for containers: %w", ctx.Err())
		}
		beforeSave()
	}
	buf := make([]byte, agentapi.BootRecordSize)
	errc := make(chan error, 1)
	go func() {
		if _, err := f.Write([]byte{agentapi.ReadyByte}); err != nil {
			errc <- fmt.Errorf("say ready: %w", err)
			return
		}
		_, err := io.ReadFull(f, buf)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil {
			return nil, fmt.Errorf("read the boot record: %w", err)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("no boot record from the host: %w", ctx.Err())
	}
	rec, err := agentapi.ParseBootRecord(buf)
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// recordGrace is how long a booting VM's agent looks for a boot record
// the host wrote before it started.
const recordGrace = 20 * time.Millisecond

// readable says whether f has data within d.
func readable(f *os.File, d time.Duration) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(d/time.Millisecond))
		ok = err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
	})
	return ok
}

// helloTimeout bounds how long a connection may take to say hello.
var helloTimeout = 10 * time.Second

// authListener hands out only the connections that passed the hello.
// Handshakes run apart from Accept, so that a client that says nothing
// holds up no one.
type authListener struct {
	net.Listener
	secret []byte
	// peerOK vets the connecting peer before it may say anything.
	peerOK func(net.Conn) error

	conns chan net.Conn
	errc  chan error
	once  sync.Once
}

func newAuthListener(l net.Listener, secret []byte, peerOK func(net.Conn) error) *authListener {
	a := &authListener{Listener: l, secret: secret, peerOK: peerOK, conns: make(chan net.Conn), errc: make(chan error, 1)}
	return a
}

func (a *authListener) Accept() (net.Conn, error) {
	a.once.Do(func() { go a.acceptLoop() })
	select {
	case c := <-a.conns:
		return c, nil
	case err := <-a.errc:
		a.errc <- err
		return nil, err
	}
}

func (a *authListener) acceptLoop() {
	defer recoverPanic("accept")
	for {
		c, err := a.Listener.Accept()
		if err != nil {
			a.errc <- err
			return
		}
		go func() {
			defer recoverPanic("hello")
			if err := a.handshake(c); err != nil {
				logf(levelWarn, "refused a connection from %v: %v", c.RemoteAddr(), err)
				c.Close()
				return
			}
			a.conns <- c
		}()
	}
}

// handshake checks the peer and its hello.
func (a *authListener) handshake(c net.Conn) error {
	if a.peerOK != nil {
		if err := a.peerOK(c); err != nil {
			return err
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(helloTimeout))
	defer c.SetReadDeadline(time.Time{})
	want := append([]byte(agentapi.Hello), a.secret...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("no hello: %w", err)
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return errors.New("wrong hello or secret")
	}
	return nil
}

// hostPeer accepts only the host (CID 2) as a vsock peer.
func hostPeer(c net.Conn) error {
	if v, ok := c.(interface{ PeerCID() uint32 }); ok && v.PeerCID() == unix.VMADDR_CID_HOST {
		return nil
	}
	return fmt.Errorf("peer %v is not the host", c.RemoteAddr())
}
