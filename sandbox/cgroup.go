package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The VM is accounted where the pod is: the shim joins the cgroup
// containerd gave the sandbox (linux.cgroupsPath of its spec; for `ctr
// run`, the container's) before it starts QEMU, which inherits it, as
// Kata's sandbox_cgroup_only does. kubelet's pod cgroup above it then
// holds the VM's whole cost, and host limits apply to it. No limits are
// set on the cgroup itself: the containers' limits are enforced inside the
// guest, and a 64 MiB container limit applied to QEMU would kill the VM.
// When the VM is gone the shim moves back to where it came from and
// removes the cgroup.

// cgroupState records the pod cgroup for `delete` after a crash.
const cgroupState = "cgroup.json"

// podCgroup is the sandbox's cgroup with the shim in it.
type podCgroup struct {
	Path string `json:"path"` // below the cgroup root(s), systemd slices expanded

	v1, home1 cgroup1.Cgroup
	v2, home2 *cgroup2.Manager

	homeOnce sync.Once
	homeErr  error
}

// cgroupfsPath turns a spec's cgroupsPath into a path below the cgroup
// root. The systemd driver's "slice:prefix:name" names the scope
// /a.slice/a-b.slice/prefix-name.scope, which is where systemd would put
// it; podvm creates it directly, so it works with or without systemd.
func cgroupfsPath(p string) (string, error) {
	parts := strings.Split(p, ":")
	if len(parts) == 1 {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return "", fmt.Errorf("cgroupsPath %q is not a clean absolute path", p)
		}
		return p, nil
	}
	if len(parts) != 3 {
		return "", fmt.Errorf("cgroupsPath %q is neither a path nor slice:prefix:name", p)
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	for _, s := range parts {
		if strings.ContainsAny(s, "/") || s == "." || s == ".." {
			return "", fmt.Errorf("cgroupsPath %q has a bad component %q", p, s)
		}
	}
	if slice == "" {
		slice = "system.slice"
	}
	dir, err := expandSlice(slice)
	if err != nil {
		return "", fmt.Errorf("cgroupsPath %q: %w", p, err)
	}
	unit := name
	if !strings.HasSuffix(name, ".slice") {
		unit = prefix + "-" + name + ".scope"
		if prefix == "" {
			unit = name + ".scope"
		}
	}
	return filepath.Join(dir, unit), nil
}

// expandSlice is systemd's nesting of a slice name: a-b-c.slice lives in
// /a.slice/a-b.slice/a-b-c.slice.
func expandSlice(slice string) (string, error) {
	if !strings.HasSuffix(slice, ".slice") || strings.Contains(slice, "/") {
		return "", fmt.Errorf("%q is not a slice", slice)
	}
	name := strings.TrimSuffix(slice, ".slice")
	if name == "-" {
		return "/", nil
	}
	path, prefix := "", ""
	for _, part := range strings.Split(name, "-") {
		if part == "" {
			return "", fmt.Errorf("%q is not a valid slice name", slice)
		}
		path += "/" + prefix + part + ".slice"
		prefix += part + "-"
	}
	return path, nil
}

// specCgroupsPath is the spec's cgroupsPath, if any.
func specCgroupsPath(s *specs.Spec) string {
	if s == nil || s.Linux == nil {
		return ""
	}
	return s.Linux.CgroupsPath
}

// joinPodCgroup creates the cgroup at path (v1 or v2, whichever the host
// runs) and moves the shim into it.
func joinPodCgroup(path string) (*podCgroup, error) {
	c := &podCgroup{Path: path}
	self := uint64(os.Getpid())
	var err error
	if cgroups.Mode() == cgroups.Unified {
		home, herr := cgroup2.PidGroupPath(os.Getpid())
		if herr != nil {
			return nil, fmt.Errorf("the shim's cgroup: %w", herr)
		}
		if c.home2, err = cgroup2.Load(home); err != nil {
			return nil, fmt.Errorf("the shim's cgroup %s: %w", home, err)
		}
		if c.v2, err = cgroup2.NewManager("/sys/fs/cgroup", path, &cgroup2.Resources{}); err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", path, err)
		}
		err = c.v2.AddProc(self)
	} else {
		if c.home1, err = cgroup1.Load(cgroup1.PidPath(os.Getpid())); err != nil {
			return nil, fmt.Errorf("the shim's cgroup: %w", err)
		}
		if c.v1, err = cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{}); err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", path, err)
		}
		err = c.v1.AddProc(self)
	}
	if err != nil {
		_ = c.leave()
		return nil, fmt.Errorf("join cgroup %s: %w", path, err)
	}
	return c, nil
}

// goHome moves the shim back to its own cgroup. Only the first call moves
// it; later ones wait for that and return its result. A move costs the
// kernel's cgroup lock (on cgroup v1, an RCU grace period: 5-28 ms here),
// so a stopping pod starts it while its VM shuts down, which needs the
// shim in no particular cgroup.
func (c *podCgroup) goHome() error {
	c.homeOnce.Do(func() {
		self := uint64(os.Getpid())
		switch {
		case c.v2 != nil:
			c.homeErr = c.home2.AddProc(self)
		case c.v1 != nil:
			c.homeErr = c.home1.AddProc(self)
		}
	})
	return c.homeErr
}

// leave moves the shim back to its own cgroup (if goHome has not) and
// removes the pod's, which must hold nothing else by then (QEMU has
// exited).
func (c *podCgroup) leave() error {
	if c == nil {
		return nil
	}
	errs := []error{c.goHome()}
	switch {
	case c.v2 != nil:
		errs = append(errs, c.v2.Delete())
	case c.v1 != nil:
		errs = append(errs, c.v1.Delete())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("leave cgroup %s: %w", c.Path, err)
	}
	return nil
}

func (c *podCgroup) save(file string) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o600)
}

// removeSavedCgroup removes the cgroup a dead shim recorded. Whatever still
// runs in it is the dead shim's (QEMU, a log binary) and is killed first;
// processes that are exiting get a moment to go. Removing what is gone is
// not an error.
func removeSavedCgroup(file string) error {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var c podCgroup
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	if _, err := cgroupfsPath(c.Path); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	for i := 0; i < 50; i++ {
		if err = removeCgroup(c.Path); err == nil {
			if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", c.Path, err)
}

// removeCgroup kills what runs in the cgroup at path and removes it.
func removeCgroup(path string) error {
	if cgroups.Mode() == cgroups.Unified {
		m, err := cgroup2.Load(path)
		if err == nil {
			if err = m.Kill(); err == nil {
				err = m.Delete()
			}
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil
	}
	if err != nil {
		return err
	}
	if procs, err := cg.Processes(cgroup1.Devices, true); err == nil {
		for _, p := range procs {
			_ = unix.Kill(p.Pid, unix.SIGKILL)
		}
	}
	return cg.Delete()
}

// cgroupStats are the host's accounting of the pod's cgroup at path (the
// VM's whole cost): cgroup v2's or v1's metrics, as containerd reports a
// task's.
func cgroupStats(path string) (any, error) {
	if cgroups.Mode() == cgroups.Unified {
		m, err := cgroup2.Load(path)
		if err != nil {
			return nil, err
		}
		return m.Stat()
	}
	c, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		return nil, err
	}
	return c.Stat(cgroup1.IgnoreNotExist)
}
