//go:build k8s

package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// cgroupHierarchies are the host's cgroup v1 hierarchies (and the hybrid
// layout's unified one), where kubelet makes its cgroups.
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// makeCgroupRoot makes kubelet's cgroupRoot in every hierarchy (kubelet
// refuses a root that does not exist). A new v1 cpuset has no CPUs: it
// gets its parent's.
func makeCgroupRoot(root string) error {
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// podCgroups lists the pod-level cgroups (and anything below them) under
// root: kubelet removes a pod's after the pod is gone.
func podCgroups(root string) []string {
	var pods []string
	for _, h := range cgroupHierarchies() {
		top := filepath.Join(h, root)
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != top && strings.HasPrefix(d.Name(), "pod") {
				pods = append(pods, strings.TrimPrefix(p, "/sys/fs/cgroup/"))
				return filepath.SkipDir
			}
			return nil
		})
	}
	return pods
}

// removeCgroupRoot removes root with what kubelet keeps for the node's
// life (kubepods and its QoS cgroups), deepest first.
func removeCgroupRoot(root string) error {
	var errs []string
	for _, h := range cgroupHierarchies() {
		var dirs []string
		filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cgroups that would not go (processes left in them?): %s", strings.Join(errs, "; "))
	}
	return nil
}
