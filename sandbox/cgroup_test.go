package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podvm/podvm/test/harness"
)

func TestCgroupfsPath(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{in: "/default/c1", want: "/default/c1"},
		{in: "/kubepods/burstable/pod123/abc", want: "/kubepods/burstable/pod123/abc"},
		{in: "system.slice:cri-containerd:abc", want: "/system.slice/cri-containerd-abc.scope"},
		{in: "kubepods-burstable-pod12.slice:cri-containerd:abc", want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-abc.scope"},
		{in: ":cri-containerd:abc", want: "/system.slice/cri-containerd-abc.scope"},
		{in: "-.slice:p:n", want: "/p-n.scope"},
		{in: "relative/path", err: "not a clean absolute path"},
		{in: "/a/../../etc", err: "not a clean absolute path"},
		{in: "/", err: "not a clean absolute path"},
		{in: "a.slice:p", err: "neither a path nor slice:prefix:name"},
		{in: "a.slice:p:../../x", err: "bad component"},
		{in: "notaslice:p:n", err: "is not a slice"},
		{in: "a--b.slice:p:n", err: "not a valid slice name"},
	} {
		got, err := cgroupfsPath(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: %q, %v; want an error saying %q", tt.in, got, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%q: %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestPodCgroupLeave: the shim joins a pod cgroup and starts a child in
// it (QEMU's place); while the child still runs, the shim goes home (as a
// stopping pod does during its VM's shutdown), then, once the child is
// gone, leave removes the cgroup. The shim ends in the cgroup it started
// in and nothing of the pod's cgroup is left.
func TestPodCgroupLeave(t *testing.T) {
	harness.NeedRoot(t)
	before, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/podvm-test-%d", os.Getpid())
	c, err := joinPodCgroup(path)
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		_ = c.leave()
		t.Fatal(err)
	}
	in, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", child.Process.Pid))
	if !strings.Contains(string(in), path) {
		t.Errorf("the child is not in the pod cgroup: %s", in)
	}
	home := make(chan error, 1)
	go func() { home <- c.goHome() }()
	if err := <-home; err != nil {
		t.Errorf("goHome with the child still in the pod cgroup: %v", err)
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	if err := c.leave(); err != nil {
		t.Fatalf("leave: %v", err)
	}
	after, _ := os.ReadFile("/proc/self/cgroup")
	if string(after) != string(before) {
		t.Errorf("the shim's cgroups after leave:\n%s\nwant:\n%s", after, before)
	}
	if err := removeCgroup(path); err != nil {
		t.Errorf("removing what leave left: %v", err)
	}
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"} {
		if _, err := os.Stat(filepath.Join(root, path)); err == nil {
			t.Errorf("%s%s is left", root, path)
		}
	}
}
