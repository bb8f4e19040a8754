package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3"

	"github.com/podvm/podvm/test/harness"
)

// cgroupOf is a process's cgroup as the host accounts memory: the memory
// hierarchy's path on cgroup v1, the unified path on v2.
func cgroupOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && (f[1] == "memory" || (f[0] == "0" && f[1] == "")) {
			return f[2]
		}
	}
	return ""
}

// cgroupDir is where path lives in the memory hierarchy.
func cgroupDir(path string) string {
	if cgroups.Mode() == cgroups.Unified {
		return filepath.Join("/sys/fs/cgroup", path)
	}
	return filepath.Join("/sys/fs/cgroup/memory", path)
}

// TestCgroup: the VM is accounted where the pod is. QEMU and the shim run
// in the cgroup containerd gives the sandbox (ctr run's /NAMESPACE/ID,
// CRI's under the pod's cgroup parent), and the cgroup is gone with the
// pod, also after the shim was killed.
func TestCgroup(t *testing.T) {
	s := newSuite(t)
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("ctr run, shim killed %v", crash), func(t *testing.T) {
			id := s.id(podvm)
			if r := s.ctr(nil, "run", "-d", "--runtime", podvm, harness.BusyboxImage, id, "sleep", "100000"); r.code != 0 {
				t.Fatalf("run: %+v", r)
			}
			want := "/default/" + id
			qemu, shimPID := qemuPid(id), shimPid(id)
			if qemu == 0 || shimPID == 0 {
				t.Fatalf("no QEMU (%d) or shim (%d) for %s in the census", qemu, shimPID, id)
			}
			if got := cgroupOf(qemu); got != want {
				t.Errorf("QEMU's cgroup %q, want the container's %q", got, want)
			}
			if got := cgroupOf(shimPID); got != want {
				t.Errorf("the shim's cgroup %q, want %q", got, want)
			}
			if crash {
				killPid(shimPID, syscall.SIGKILL)
			} else {
				s.ctr(nil, "task", "kill", "-s", "KILL", id)
			}
			waitFor(t, func() bool { return !strings.Contains(s.ctr(nil, "task", "ls").stdout, "RUNNING") })
			s.ctr(nil, "task", "delete", id)
			s.ctr(nil, "container", "delete", id)
			waitFor(t, func() bool {
				_, err := os.Stat(cgroupDir(want))
				return os.IsNotExist(err)
			})
			// containerd 2.x runs `delete` after a dead shim on its own,
			// after the task delete answered: the sandbox directory goes
			// last, once the cgroup, network and mounts are undone.
			waitFor(t, func() bool {
				_, err := os.Stat(filepath.Join(s.ctd.Dir, "podvm", "sandboxes", id))
				return os.IsNotExist(err)
			})
		})
	}
}

// TestCgroupCRI: the same through CRI, with the pod's cgroup parent.
func TestCgroupCRI(t *testing.T) {
	c := newCRI(t)
	ctd := c.ctd
	parent := "/podvm-test-" + filepath.Base(ctd.Dir)
	defer func() {
		if cgroups.Mode() == cgroups.Unified {
			os.Remove(cgroupDir(parent))
			return
		}
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + parent)
		for _, d := range dirs {
			os.Remove(d)
		}
	}()
	config, err := harness.WriteJSON(c.dir, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "cg", "namespace": "default", "uid": "uid-cg"},
		"log_directory": c.dir,
		"linux":         map[string]any{"cgroup_parent": parent},
	})
	if err != nil {
		t.Fatal(err)
	}
	pod := c.must("runp", "--runtime", "podvm", config)
	c.container(pod, config, "sleeper", "sleep", "100000")
	want := parent + "/" + pod
	if got := cgroupOf(qemuPid(pod)); got != want {
		t.Errorf("QEMU's cgroup %q, want the sandbox's %q", got, want)
	}
	c.must("stopp", pod)
	c.must("rmp", pod)
	if _, err := os.Stat(cgroupDir(want)); !os.IsNotExist(err) {
		t.Errorf("the pod's cgroup %s is left: %v", want, err)
	}
}
