package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/test/harness"
)

// bindSource makes what critest's mount specs make: a host directory that
// is a shared mount, with a tmpfs below it.
func bindSource(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "tmpfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, src, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(src, unix.MNT_DETACH) })
	if err := unix.Mount("", src, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(src, "tmpfs"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	return src
}

// checkBinds compares a container's host binds under runc and podvm's
// handlers: a read-only bind leaves its submounts writable, a recursively
// read-only one (containerd 2.x, whose CRI asks the runtime's features)
// does not, a HostToContainer bind shows a mount the host makes later;
// Bidirectional is refused by podvm, naming the mount.
func checkBinds(t *testing.T, c *cri) {
	src := bindSource(t)
	mounts := []map[string]any{
		{"container_path": "/ro", "host_path": src, "readonly": true},
		{"container_path": "/slave", "host_path": src, "propagation": 1},
	}
	script := "touch /ro/tmpfs/a && echo ro-sub-rw; touch /ro/b 2>/dev/null || echo ro-top-ro; "
	want := "ro-sub-rw ro-top-ro"
	if harness.Containerd2() {
		mounts = append(mounts, map[string]any{"container_path": "/rro", "host_path": src, "readonly": true, "recursive_read_only": true})
		script += "touch /rro/tmpfs/c 2>/dev/null || echo rro-sub-ro; "
		want += " rro-sub-ro"
	}
	script += "cat /slave/late/flag"
	want += " flag-from-host"
	late := filepath.Join(src, "late")
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, handler := range criHandlers() {
		pod, podConfig := c.runp(handler, nil)
		id := c.containerWith(pod, podConfig, "binds", map[string]any{"mounts": mounts}, "sleep", "100000")
		if err := unix.Mount("tmpfs", late, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(late, "flag"), []byte("flag-from-host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.run("exec", "-s", id, "sh", "-c", script)
		if got := strings.Join(strings.Fields(out), " "); got != want {
			t.Errorf("%s: binds seen in the container: %q (%v), want %q", handler, got, err, want)
		}
		if err := unix.Unmount(late, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
		if handler != "runc" {
			// containerd's CRI hands a container to the runtime at
			// StartContainer.
			id, err := c.tryCreate(pod, podConfig, "bidirectional", map[string]any{"mounts": []map[string]any{
				{"container_path": "/shared", "host_path": src, "propagation": 2}}}, "sleep", "100000")
			if err == nil {
				_, err = c.run("start", id)
			}
			if err == nil || !strings.Contains(err.Error(), "/shared") || !strings.Contains(err.Error(), "Bidirectional") {
				t.Errorf("%s: a Bidirectional bind: %v", handler, err)
			}
		}
		c.must("stopp", pod)
		c.must("rmp", pod)
	}
}
