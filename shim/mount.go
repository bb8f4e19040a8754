package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountRootfs mounts the container's root filesystem at target, inside the
// share the guest sees: containerd's rootfs mounts (an overlay from the
// snapshotter, typically), or the bundle's rootfs directory when there are
// none (`ctr run --rootfs`).
func mountRootfs(target, bundle string, spec *specs.Spec, rootfs []mount.Mount) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if len(rootfs) > 0 {
		if err := mount.All(rootfs, target); err != nil {
			return fmt.Errorf("mount rootfs: %w", err)
		}
		return nil
	}
	src := spec.Root.Path
	if !filepath.IsAbs(src) {
		src = filepath.Join(bundle, src)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s: %w", src, err)
	}
	return nil
}

// bindIntoShare exposes a host path the spec binds into the container at
// target in the share. A read-only bind stays read-only on the host side
// too.
func bindIntoShare(m specs.Mount, target string) error {
	st, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("bind mount source %s: %w", m.Source, err)
	}
	if st.IsDir() {
		err = os.MkdirAll(target, 0o755)
	} else {
		if err = os.MkdirAll(filepath.Dir(target), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.Close()
			}
		}
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s for %s: %w", m.Source, m.Destination, err)
	}
	if isReadonly(m) {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("make %s read-only: %w", m.Destination, err)
		}
	}
	return nil
}

// unmountTree unmounts everything mounted at or below dir and removes the
// directory. Unmounting what is already gone, or a directory that does not
// exist, is not an error: teardown runs again after a crash.
func unmountTree(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := mount.UnmountRecursive(dir, unix.MNT_DETACH); err != nil {
		// Never remove a tree that may still hold a mount: it could be a
		// user's volume.
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return os.RemoveAll(dir)
}
