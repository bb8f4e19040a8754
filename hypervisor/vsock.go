package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vhostVsockSetGuestCID is VHOST_VSOCK_SET_GUEST_CID, _IOW(0xAF, 0x60, __u64).
const vhostVsockSetGuestCID = 0x4008af60

// VsockAvailable reports whether the host can give guests a vsock device.
func VsockAvailable() bool {
	f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// openVhostVsock opens /dev/vhost-vsock and claims a free guest context ID
// on it. Claiming the CID here, rather than letting QEMU pick, avoids two
// VMs racing for the same one; QEMU gets the open fd (vhostfd=).
func openVhostVsock() (*os.File, uint32, error) {
	f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("vsock transport: %w (set agent.transport = \"serial\" on hosts without vhost-vsock)", err)
	}
	// CIDs 0-2 are reserved; start from a random point so that concurrent
	// shims rarely collide, and walk on when one does.
	cid := uint64(3 + rand.Uint32N(1<<30))
	for i := 0; i < 64; i++ {
		c := cid + uint64(i)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), vhostVsockSetGuestCID, uintptr(unsafe.Pointer(&c)))
		switch errno {
		case 0:
			return f, uint32(c), nil
		case unix.EADDRINUSE:
			continue
		default:
			f.Close()
			return nil, 0, fmt.Errorf("vsock transport: set guest CID: %w", errno)
		}
	}
	f.Close()
	return nil, 0, errors.New("vsock transport: no free guest CID found")
}

// dialVsock connects to the agent's vsock port, retrying while the guest
// boots (the connection is refused or reset until the agent listens).
func dialVsock(ctx context.Context, cid, port uint32, vmDone <-chan struct{}) (net.Conn, error) {
	for delay := 2 * time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		conn, err := connectVsock(cid, port)
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial agent at vsock %d:%d: %w (last error: %v)", cid, port, ctx.Err(), err)
		case <-vmDone:
			return nil, fmt.Errorf("dial agent at vsock %d:%d: qemu exited", cid, port)
		case <-time.After(delay):
		}
	}
}

func connectVsock(cid, port uint32) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &vsockConn{File: os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d:%d", cid, port)), cid: cid, port: port}, nil
}

// vsockConn carries a connected AF_VSOCK socket as a net.Conn: the net
// package does not know the address family.
type vsockConn struct {
	*os.File
	cid, port uint32
}

type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("%d:%d", a.cid, a.port) }

func (c *vsockConn) LocalAddr() net.Addr  { return vsockAddr{unix.VMADDR_CID_HOST, 0} }
func (c *vsockConn) RemoteAddr() net.Addr { return vsockAddr{c.cid, c.port} }
