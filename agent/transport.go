package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// listen returns the listener the agent serves ttrpc on, for the transport
// the host chose on the kernel command line.
func listen(ctx context.Context, p Params) (net.Listener, error) {
	switch p.Transport {
	case "serial":
		dev, err := findPort(ctx, p.Port)
		if err != nil {
			return nil, err
		}
		return newSerialListener(dev), nil
	case "vsock":
		return listenVsock(p.VsockPort)
	default:
		return nil, fmt.Errorf("unknown agent transport %q on the kernel command line (want serial or vsock)", p.Transport)
	}
}

// findPort waits for the virtio-serial port called name: ports arrive through
// the device's control queue, possibly after PID 1 starts.
func findPort(ctx context.Context, name string) (string, error) {
	start := time.Now()
	warned := false
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if !warned && time.Since(start) > time.Second {
			logf(levelWarn, "still waiting for virtio-serial port %q (is the host's agent channel configured?)", name)
			warned = true
		}
		if dev, ok := portNow(name); ok {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("virtio-serial port %q not found: %w", name, ctx.Err())
		case <-time.After(delay):
		}
	}
}

// portNow returns the device of the virtio-serial port called name, if
// the guest has it now.
func portNow(name string) (string, bool) {
	entries, _ := os.ReadDir("/sys/class/virtio-ports")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			dev := filepath.Join("/dev", e.Name())
			if _, err := os.Stat(dev); err == nil {
				return dev, true
			}
		}
	}
	return "", false
}

func newSerialListener(dev string) *serialListener {
	return &serialListener{dev: dev, closed: make(chan struct{})}
}

// serialListener hands out the one virtio-serial port as a connection. When
// the host side goes away (reads return EOF), the port is reopened once the
// host is back, so a reconnecting host finds a fresh ttrpc session.
type serialListener struct {
	dev    string
	mu     sync.Mutex
	active chan struct{} // closed when the current connection closes
	closed chan struct{}
	once   sync.Once
}

func (l *serialListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	active := l.active
	l.mu.Unlock()
	if active != nil {
		select {
		case <-active:
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	// The port stays open while the host is away: closing it would
	// discard what a host that connects meanwhile has already sent.
	f, err := os.OpenFile(l.dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", l.dev, err)
	}
	for !hostConnected(f) {
		select {
		case <-l.closed:
			f.Close()
			return nil, net.ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
	done := make(chan struct{})
	l.mu.Lock()
	l.active = done
	l.mu.Unlock()
	return &fileConn{File: f, onClose: func() { close(done) }}, nil
}

// hostConnected reports whether the host end of the port is open: the driver
// sets POLLHUP while it is not.
func hostConnected(f *os.File) bool {
	raw, err := f.SyscallConn()
	if err != nil {
		return false
	}
	connected := false
	_ = raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
		if n, err := unix.Poll(fds, 0); err == nil && n >= 0 {
			connected = fds[0].Revents&unix.POLLHUP == 0
		}
	})
	return connected
}

func (l *serialListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *serialListener) Addr() net.Addr { return portAddr(l.dev) }

type portAddr string

func (a portAddr) Network() string { return "virtio-serial" }
func (a portAddr) String() string  { return string(a) }

// fileConn is a byte stream held in an *os.File (a serial port or a vsock
// socket) presented as a net.Conn, which is what ttrpc serves on.
type fileConn struct {
	*os.File
	onClose func()
	once    sync.Once
}

func (c *fileConn) Close() error {
	err := c.File.Close()
	c.once.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

func (c *fileConn) LocalAddr() net.Addr  { return portAddr(c.Name()) }
func (c *fileConn) RemoteAddr() net.Addr { return portAddr("host") }

// A serial port cannot always set deadlines; ttrpc does not need them.
func (c *fileConn) SetDeadline(t time.Time) error {
	if err := c.File.SetDeadline(t); err != nil && !errors.Is(err, os.ErrNoDeadline) {
		return err
	}
	return nil
}
