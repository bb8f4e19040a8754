// Package unixsock listens on and dials unix sockets whose paths are longer
// than sockaddr_un allows (108 bytes), as a sandbox directory named by a
// 64-character CRI ID under a long state_dir makes them.
package unixsock

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxPath is what fits in sockaddr_un's sun_path with its terminating NUL.
const maxPath = 107

// Listen listens on the socket at path. The listener does not remove the
// socket when closed: the caller removes path (a long path was bound
// through a directory descriptor that is gone by then).
func Listen(path string) (net.Listener, error) {
	var l net.Listener
	err := viaDir(path, func(p string) error {
		var err error
		l, err = net.Listen("unix", p)
		return err
	})
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
}

// Dial connects to the socket at path.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	var c net.Conn
	err := viaDir(path, func(p string) error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "unix", p)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// viaDir calls f with path, or, when path is too long for a socket
// address, with a short name for it through its directory's descriptor.
func viaDir(path string, f func(string) error) error {
	if len(path) <= maxPath {
		return f(path)
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: filepath.Dir(path), Err: err}
	}
	defer unix.Close(fd)
	short := fmt.Sprintf("/proc/self/fd/%d/%s", fd, filepath.Base(path))
	if len(short) > maxPath {
		return fmt.Errorf("socket name %q is too long", filepath.Base(path))
	}
	if err := f(short); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
