// Package network connects a pod's network namespace to its VM: it creates
// (or adopts) the namespace, finds the interfaces CNI made there, joins each
// to a TAP device the VM gets, and describes them for the guest.
package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// NetNSDir is where persistent network namespaces live, as `ip netns` and
// CRI keep them.
const NetNSDir = "/var/run/netns"

// Namespace is a sandbox's network namespace, and whether podvm made it (and
// so removes it) or was given it (CRI's, which podvm never deletes).
type Namespace struct {
	Path  string `json:"path"`
	Owned bool   `json:"owned"`
}

// CreateNS makes a persistent network namespace: a new namespace whose nsfs
// file is bind-mounted at NetNSDir/name, so it outlives every process in it.
// It is created from a locked OS thread that switches back before it is
// released; a thread that cannot switch back is never reused.
func CreateNS(name string) (*Namespace, error) {
	if name == "" || filepath.Base(name) != name {
		return nil, fmt.Errorf("invalid network namespace name %q", name)
	}
	if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(NetNSDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()

	err = onThreadIn(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		return nil
	}, func() error {
		return unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	})
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("create network namespace %s: %w", name, err)
	}
	return &Namespace{Path: path, Owned: true}, nil
}

// onThreadIn runs fn on a locked OS thread that enter moved into another
// network namespace, then moves the thread back. A thread that cannot
// switch back is never reused: the runtime ends it with its goroutine.
func onThreadIn(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("return to the original network namespace: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// Remove deletes the namespace if podvm owns it: unmounting the nsfs file
// lets the kernel free the namespace once nothing runs in it. Removing what
// is gone already is not an error.
func (n *Namespace) Remove() error {
	if n == nil || !n.Owned {
		return nil
	}
	if err := unix.Unmount(n.Path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", n.Path, err)
	}
	if err := os.Remove(n.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// SaveNS records the namespace in a state file, so that its removal happens
// exactly once, even from another process after a crash (RemoveSaved).
func SaveNS(stateFile string, n *Namespace) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	tmp := stateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, stateFile)
}

// RemoveSaved removes the namespace a state file records, then the file.
// Calling it again, or with no state file, does nothing.
func RemoveSaved(stateFile string) error {
	b, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var n Namespace
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("read %s: %w", stateFile, err)
	}
	if err := n.Remove(); err != nil {
		return err
	}
	return os.Remove(stateFile)
}
