package agent

import (
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// vsockListener accepts host connections on an AF_VSOCK port. The net
// package has no vsock support, so accepted sockets are carried as files.
type vsockListener struct {
	fd   int
	port uint32
	once sync.Once
}

func listenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return &vsockListener{fd: fd, port: port}, nil
}

func (l *vsockListener) Accept() (net.Conn, error) {
	for {
		// Non-blocking, so that the runtime's poller serves the
		// connection and the hello can have a deadline.
		nfd, sa, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("accept on vsock port %d: %w", l.port, err)
		}
		c := &vsockConn{fileConn: fileConn{File: os.NewFile(uintptr(nfd), fmt.Sprintf("vsock:%d", l.port))}}
		if vm, ok := sa.(*unix.SockaddrVM); ok {
			c.peer = vm.CID
		}
		return c, nil
	}
}

// vsockConn is an accepted vsock connection and who made it.
type vsockConn struct {
	fileConn
	peer uint32
}

// PeerCID is the context ID of the connecting side (2: the host).
func (c *vsockConn) PeerCID() uint32 { return c.peer }

func (c *vsockConn) RemoteAddr() net.Addr { return portAddr(fmt.Sprintf("vsock cid %d", c.peer)) }

func (l *vsockListener) Close() error {
	var err error
	l.once.Do(func() {
		// shutdown wakes a blocked accept; close alone does not.
		_ = unix.Shutdown(l.fd, unix.SHUT_RDWR)
		err = unix.Close(l.fd)
	})
	return err
}

func (l *vsockListener) Addr() net.Addr { return portAddr(fmt.Sprintf("vsock:%d", l.port)) }
