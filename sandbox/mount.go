package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/containerd/mount"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The sandbox's shared directory is writable by the guest's root: it can
// plant links, rename directories and race the host. So the host never
// walks a path in it: every path below the directory is resolved by the
// kernel beneath it without following links (openat2), mounts go to the
// file descriptor of their target (move_mount, /proc/self/fd), and what
// the host mounts there is nosuid and nodev.

// resolveBeneath keeps a lookup below its starting directory, away from
// links of any kind.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openDir opens a directory the host owns (not below a share) without
// following a link at its end, as an O_PATH handle.
func openDir(path string) (*os.File, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openBeneath opens rel below root without leaving it or following links.
func openBeneath(root *os.File, rel string, flags int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat2(int(root.Fd()), rel, &unix.OpenHow{
		Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolveBeneath,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(root.Name(), rel), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root.Name(), rel)), nil
}

// mkdirBeneath makes rel and its parents below root, one component at a
// time, each opened without following links; it returns an O_PATH handle
// of the last.
func mkdirBeneath(root *os.File, rel string, mode uint32) (*os.File, error) {
	rel = filepath.Clean(rel)
	if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s is not below %s", rel, root.Name())
	}
	dir, err := openBeneath(root, ".", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	if rel == "." {
		return dir, nil
	}
	for _, name := range strings.Split(rel, "/") {
		if err := unix.Mkdirat(int(dir.Fd()), name, mode); err != nil && !errors.Is(err, unix.EEXIST) {
			dir.Close()
			return nil, &os.PathError{Op: "mkdir", Path: filepath.Join(dir.Name(), name), Err: err}
		}
		next, err := openBeneath(dir, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		dir.Close()
		if err != nil {
			return nil, err
		}
		dir = next
	}
	return dir, nil
}

// createBeneath makes an empty regular file rel below root (for a file
// bind mount to cover) and returns an O_PATH handle of it.
func createBeneath(root *os.File, rel string, mode uint32) (*os.File, error) {
	parent, err := mkdirBeneath(root, filepath.Dir(rel), 0o755)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	f, err := openBeneath(parent, filepath.Base(rel), unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW, mode)
	if err != nil {
		return nil, err
	}
	f.Close()
	return openBeneath(parent, filepath.Base(rel), unix.O_PATH|unix.O_NOFOLLOW, 0)
}

// procPath names an open file for the calls that only take paths: the
// kernel resolves it to that very file.
func procPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// bindOptions say how a host path is bound into the share, from the
// spec's mount options as runc reads them.
type bindOptions struct {
	recursive bool // rbind: its submounts come along
	readonly  bool // ro: its top mount is read-only, submounts as they are
	rro       bool // rro: every mount of it is read-only
	// propagation is MS_PRIVATE, MS_SLAVE or MS_UNBINDABLE for the whole
	// tree; 0 leaves it as the clone has it.
	propagation uint64
}

// bindOptionsOf reads a spec bind mount's options. Without a propagation
// option the bind is a slave, as runc's binds are under its default
// rslave rootfs: host mounts appear in it, none go back.
func bindOptionsOf(m specs.Mount) bindOptions {
	o := bindOptions{recursive: slices.Contains(m.Options, "rbind"), propagation: unix.MS_SLAVE}
	for _, opt := range m.Options {
		switch opt {
		case "ro":
			o.readonly = true
		case "rw":
			o.readonly = false
		case "rro":
			o.readonly, o.rro = true, true
		case "private", "rprivate":
			o.propagation = unix.MS_PRIVATE
		case "slave", "rslave":
			o.propagation = unix.MS_SLAVE
		case "unbindable", "runbindable":
			o.propagation = unix.MS_UNBINDABLE
		}
	}
	return o
}

// attachBind binds src (a host path, resolved as runc would) onto target
// with the whole tree nosuid and nodev.
func attachBind(src string, target *os.File, o bindOptions) error {
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC
	if o.recursive {
		flags |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, uint(flags))
	if err != nil {
		return &os.PathError{Op: "open_tree", Path: src, Err: err}
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Propagation: o.propagation}
	if o.rro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("set mount attributes of %s: %w", src, err)
	}
	if o.readonly && !o.rro {
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("make %s read-only: %w", src, err)
		}
	}
	if err := unix.MoveMount(tree, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach %s at %s: %w", src, target.Name(), err)
	}
	return nil
}

// submount is a mount below a bind's source. Each is exposed on its own
// in the share and the guest mounts it on top of the bind (subBind): see
// bindIntoShare.
type submount struct {
	rel      string // below the source
	readonly bool   // read-only on the host side
}

// submountsOf lists the mounts below real (a path without links; not
// real itself), parents first, each once.
func submountsOf(real string) ([]submount, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(real))
	if err != nil {
		return nil, err
	}
	var subs []submount
	for _, mi := range infos {
		rel, err := filepath.Rel(real, mi.Mountpoint)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		subs = append(subs, submount{rel: rel, readonly: slices.Contains(strings.Split(mi.Options, ","), "ro")})
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].rel < subs[j].rel })
	return slices.CompactFunc(subs, func(a, b submount) bool { return a.rel == b.rel }), nil
}

// subShare is where the i-th submount of the bind at rel is exposed in
// the share, beside the bind, never inside it.
func subShare(rel string, i int) string { return fmt.Sprintf("%s.%d", rel, i) }

// mountRootfs mounts the container's root filesystem at rel below the
// share: containerd's rootfs mounts (an overlay from the snapshotter,
// typically), or the bundle's rootfs directory when there are none
// (`ctr run --rootfs`).
func mountRootfs(share *os.File, rel, bundle string, spec *specs.Spec, rootfs []mount.Mount) error {
	target, err := mkdirBeneath(share, rel, 0o755)
	if err != nil {
		return err
	}
	defer target.Close()
	if len(rootfs) > 0 {
		for i := range rootfs {
			rootfs[i].Options = append(rootfs[i].Options, "nosuid", "nodev")
		}
		if err := mount.All(rootfs, procPath(target)); err != nil {
			return fmt.Errorf("mount rootfs: %w", err)
		}
		return nil
	}
	src := spec.Root.Path
	if !filepath.IsAbs(src) {
		src = filepath.Join(bundle, src)
	}
	if err := attachBind(src, target, bindOptions{recursive: true}); err != nil {
		return fmt.Errorf("bind rootfs: %w", err)
	}
	return nil
}

// bindIntoShare exposes a host path the spec binds into the container at
// rel below the share, read-only on the host side too where the spec says
// so, and returns the submounts the guest must mount on top of it. Each
// mount of the source is cloned on its own: the source's at rel, the i-th
// submount's (rbind) at subShare(rel, i). Cloned as one tree, a submount's
// clone would sit on the host's own directory, which the host then could
// not remove while the pod runs (EBUSY: podvm's clones live in the host's
// mount namespace, runc's in the container's). The guest sees the share as
// one 9p mount anyway and rebuilds the tree (guestSpec), which also gives
// a read-only bind runc's meaning: its top read-only, submounts as they are.
func bindIntoShare(share *os.File, m specs.Mount, rel string) ([]submount, error) {
	st, err := os.Stat(m.Source)
	if err != nil {
		return nil, fmt.Errorf("bind mount source %s: %w", m.Source, err)
	}
	o := bindOptionsOf(m)
	var subs []submount
	real := m.Source
	if o.recursive && st.IsDir() {
		// Resolved once: the submounts are found and opened below the
		// same directory, whatever its links point at meanwhile.
		if real, err = filepath.EvalSymlinks(m.Source); err != nil {
			return nil, fmt.Errorf("bind mount source %s: %w", m.Source, err)
		}
		if subs, err = submountsOf(real); err != nil {
			return nil, fmt.Errorf("bind mount source %s: %w", m.Source, err)
		}
	}
	top := o
	top.recursive = false
	if err := bindOne(share, m.Source, rel, st.IsDir(), top); err != nil {
		return nil, fmt.Errorf("bind %s for %s: %w", m.Source, m.Destination, err)
	}
	var kept []submount
	for _, sub := range subs {
		src := filepath.Join(real, sub.rel)
		sst, err := os.Stat(src)
		if err != nil {
			// Hidden by a mount above it: the container would not see
			// it either.
			continue
		}
		so := bindOptions{readonly: o.rro, rro: o.rro, propagation: o.propagation}
		if err := bindOne(share, src, subShare(rel, len(kept)), sst.IsDir(), so); err != nil {
			return nil, fmt.Errorf("bind %s for %s: %w", src, m.Destination, err)
		}
		sub.readonly = sub.readonly || o.rro
		kept = append(kept, sub)
	}
	return kept, nil
}

// bindOne attaches one clone of src at rel below the share.
func bindOne(share *os.File, src, rel string, dir bool, o bindOptions) error {
	var target *os.File
	var err error
	if dir {
		target, err = mkdirBeneath(share, rel, 0o755)
	} else {
		target, err = createBeneath(share, rel, 0o644)
	}
	if err != nil {
		return err
	}
	defer target.Close()
	return attachBind(src, target, o)
}

// unmountTree unmounts everything mounted at or below base/rel and removes
// it; base is a directory the host owns (a sandbox's), rel may lie in its
// share. Each mount is reached through a handle opened beneath base
// without following links, so a guest that renamed or linked directories
// meanwhile cannot point the host at anything else; a link the guest left
// at rel is removed, not followed. Mounts a guest moved away from rel are
// left for the sandbox's own teardown, which runs after the VM is gone.
// Unmounting what is already gone, or a directory that does not exist, is
// not an error: teardown runs again after a crash.
func unmountTree(base, rel string) error {
	root, err := openDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	dir := filepath.Join(base, rel)
	var errs []error
	for _, mp := range mountsUnder(dir) {
		r, err := filepath.Rel(base, mp)
		if err != nil {
			continue
		}
		f, err := openBeneath(root, r, unix.O_PATH, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			continue
		}
		err = unix.Unmount(procPath(f), unix.MNT_DETACH)
		f.Close()
		if err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		// Never remove a tree that still holds a mount: it could be a
		// user's volume.
		return errors.Join(append(errs, fmt.Errorf("%s still has mounts (%s); leaving it", dir, strings.Join(left, ", ")))...)
	}
	// RemoveAll opens base/rel's parent (the host's) and goes on from
	// there without following links.
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range ms {
		if m.Mountpoint == dir || strings.HasPrefix(m.Mountpoint, dir+"/") {
			out = append(out, m.Mountpoint)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}
