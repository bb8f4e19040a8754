package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/podvm/podvm/test/harness"
)

// TestVirtioFS: containers whose files reach the guest over virtio-fs
// (hypervisor.shared_fs in a runtime configuration file, as a runtime
// handler's options would set it). The rootfs and a bind mount, both
// mounted into the share after the daemon started, are virtiofs in the
// guest; writes reach the host; the exit code is the container's. A killed
// shim takes its VM and its daemon with it.
func TestVirtioFS(t *testing.T) {
	s := newSuite(t)
	stateDir := filepath.Join(s.ctd.Dir, "podvm")
	conf := filepath.Join(t.TempDir(), "virtiofs.toml")
	if err := os.WriteFile(conf, []byte("[hypervisor]\nshared_fs = \"virtio-fs\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "in"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := s.id(podvm)
	r := s.ctr(nil, "run", "--rm", "--runtime", podvm, "--runtime-config-path", conf,
		"--mount", "type=bind,src="+data+",dst=/data,options=rbind:rw", harness.BusyboxImage, id,
		"sh", "-c", `awk '$2 == "/" || $2 == "/data" { print $2, $3 }' /proc/mounts; cat /data/in; echo out > /data/out; exit 7`)
	if want := "/ virtiofs\n/data virtiofs\nfrom the host\n"; r.code != 7 || r.stdout != want {
		t.Errorf("ctr run over virtio-fs: %+v, want exit 7 and %q", r, want)
	}
	if b, err := os.ReadFile(filepath.Join(data, "out")); err != nil || string(b) != "out\n" {
		t.Errorf("file written through the bind mount: %q, %v", b, err)
	}

	t.Run("container ID used again at once", func(t *testing.T) {
		// The guest trusts its lookups in the share for a second; a
		// container whose ID was just deleted must still see its own
		// files, not an empty or stale directory.
		pod := s.id(podvm)
		if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--runtime-config-path", conf, harness.BusyboxImage, pod, "sleep", "100000"); r.code != 0 {
			t.Fatalf("ctr run -d: %+v", r)
		}
		defer func() {
			s.ctr(nil, "task", "kill", "-s", "KILL", pod)
			waitFor(t, func() bool { return !strings.Contains(s.ctr(nil, "task", "ls").stdout, "RUNNING") })
			s.ctr(nil, "task", "delete", pod)
			s.ctr(nil, "container", "delete", pod)
		}()
		member := s.id(podvm)
		for i := 0; i < 3; i++ {
			r := s.ctr(nil, "run", "--rm", "--runtime", podvm, "--annotation", "io.podvm.group="+pod, harness.BusyboxImage, member, "sh", "-c", "ls /bin/sh /etc/passwd")
			if r.code != 0 || r.stdout != "/bin/sh\n/etc/passwd\n" {
				t.Errorf("run %d of container %s in one pod: %+v", i, member, r)
			}
		}
	})

	t.Run("shim killed", func(t *testing.T) {
		id := s.id(podvm)
		if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--runtime-config-path", conf, harness.BusyboxImage, id, "sleep", "100000"); r.code != 0 {
			t.Fatalf("ctr run -d: %+v", r)
		}
		defer s.ctr(nil, "container", "delete", id)
		share := filepath.Join(stateDir, "sandboxes", id, "shared")
		daemon := harness.TakeCensus().VirtiofsdPid(share)
		if daemon == 0 {
			t.Fatalf("no virtiofsd serving %s", share)
		}
		killPid(shimPid(id), syscall.SIGKILL)
		// containerd then runs the shim's delete (at once on 1.6, in the
		// background on 2.x): the sandbox's directory goes last.
		waitFor(t, func() bool {
			_, err := os.Stat(filepath.Join(stateDir, "sandboxes", id))
			return os.IsNotExist(err) && qemuPid(id) == 0 && harness.TakeCensus().VirtiofsdPid(share) == 0
		})
		waitFor(t, func() bool {
			out := s.ctr(nil, "task", "ls").stdout
			return !strings.Contains(out, id+" ") || strings.Contains(out, "STOPPED")
		})
		s.ctr(nil, "task", "delete", id)
	})
}
