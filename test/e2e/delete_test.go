package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// shimDelete runs `containerd-shim-podvm-v2 delete` in bundle, as
// containerd does after a shim died.
func (s *suite) shimDelete(bundle, id string) (string, error) {
	cmd := exec.Command(harness.ShimBinary(), "-namespace", "default", "-address", s.ctd.Address, "-id", id, "delete")
	cmd.Dir = bundle
	cmd.Env = s.ctd.Env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// bundleOf is a task's bundle in the test containerd's state.
func (s *suite) bundleOf(id string) string {
	return filepath.Join(s.ctd.Dir, "state", "io.containerd.runtime.v2.task", "default", id)
}

// TestDeleteAfterCrash: `containerd-shim-podvm-v2 delete` cleans up after a
// dead shim whatever happened meanwhile (the configuration broke, the pod
// had several containers, the shim died between making the network
// namespace and recording it), keeps its records when it cannot finish,
// and does nothing while the pod's shim still answers.
func TestDeleteAfterCrash(t *testing.T) {
	s := newSuite(t)
	stateDir := filepath.Join(s.ctd.Dir, "podvm")
	configFile := filepath.Join(s.ctd.Dir, "podvm.toml")
	goodConfig, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	gone := func(t *testing.T, sandbox string) {
		t.Helper()
		waitFor(t, func() bool {
			_, err := os.Stat(filepath.Join(stateDir, "sandboxes", sandbox))
			return os.IsNotExist(err) && qemuPid(sandbox) == 0
		})
		if m := harness.MountsUnder(stateDir); len(m) > 0 {
			t.Errorf("mounts left: %v", m)
		}
	}
	removeTasks := func(t *testing.T, ids ...string) {
		t.Helper()
		for _, id := range ids {
			waitFor(t, func() bool {
				out := s.ctr(nil, "task", "ls").stdout
				return !strings.Contains(out, id+" ") || strings.Contains(out, "STOPPED")
			})
			s.ctr(nil, "task", "delete", id)
			if r := s.ctr(nil, "container", "delete", id); r.code != 0 {
				t.Errorf("container delete %s: %+v", id, r)
			}
		}
	}

	t.Run("configuration broken", func(t *testing.T) {
		id := s.id(podvm)
		if r := s.ctr(nil, "run", "-d", "--runtime", podvm, harness.BusyboxImage, id, "sleep", "100000"); r.code != 0 {
			t.Fatalf("run: %+v", r)
		}
		// The operator breaks the configuration, then the shim dies:
		// containerd's delete must still find and undo everything.
		if err := os.WriteFile(configFile, []byte("this is [not toml\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(configFile, goodConfig, 0o644)
		killPid(shimPid(id), syscall.SIGKILL)
		removeTasks(t, id)
		gone(t, id)
	})

	t.Run("grouped containers", func(t *testing.T) {
		pod, member := s.id(podvm), s.id(podvm)
		if r := s.ctr(nil, "run", "-d", "--runtime", podvm, harness.BusyboxImage, pod, "sleep", "100000"); r.code != 0 {
			t.Fatalf("run: %+v", r)
		}
		if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--annotation", "io.podvm.group="+pod, harness.BusyboxImage, member, "sleep", "100000"); r.code != 0 {
			t.Fatalf("run member: %+v", r)
		}
		killPid(shimPid(pod), syscall.SIGKILL)
		removeTasks(t, member, pod)
		gone(t, pod)
	})

	// What a shim that died at the wrong moment leaves: the record of a
	// network namespace, with the namespace made or not yet.
	for _, made := range []bool{false, true} {
		t.Run(fmt.Sprintf("network namespace recorded, made %v", made), func(t *testing.T) {
			id := s.id(podvm)
			dir := filepath.Join(stateDir, "sandboxes", id)
			bundle := t.TempDir()
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			ns := "podvm-" + id
			writeJSON(t, filepath.Join(dir, "netns.json"), map[string]any{"path": "/var/run/netns/" + ns, "owned": true})
			writeJSON(t, filepath.Join(bundle, "podvm.json"), map[string]any{"sandbox_id": id, "sandbox_dir": dir})
			if made {
				if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
					t.Fatalf("ip netns add: %v: %s", err, out)
				}
			}
			if out, err := s.shimDelete(bundle, id); err != nil {
				t.Fatalf("delete: %v: %s", err, out)
			}
			if _, err := os.Stat("/var/run/netns/" + ns); !os.IsNotExist(err) {
				exec.Command("ip", "netns", "del", ns).Run()
				t.Errorf("network namespace left: %v", err)
			}
			gone(t, id)
		})
	}

	t.Run("failed cleanup is kept for the next delete", func(t *testing.T) {
		id := s.id(podvm)
		dir := filepath.Join(stateDir, "sandboxes", id)
		bundle := t.TempDir()
		os.MkdirAll(dir, 0o700)
		writeJSON(t, filepath.Join(bundle, "podvm.json"), map[string]any{"sandbox_id": id, "sandbox_dir": dir})
		// A network record that cannot be read: delete must say so and
		// keep the directory with its records.
		os.WriteFile(filepath.Join(dir, "network.json"), []byte("{garbage"), 0o600)
		out, err := s.shimDelete(bundle, id)
		if err == nil || !strings.Contains(out, "network.json") || !strings.Contains(out, "run delete again") {
			t.Errorf("delete with an unreadable record: %v: %s", err, out)
		}
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("the sandbox's records went although cleanup failed: %v", err)
		}
		os.Remove(filepath.Join(dir, "network.json"))
		if out, err := s.shimDelete(bundle, id); err != nil {
			t.Errorf("second delete: %v: %s", err, out)
		}
		gone(t, id)
	})

	t.Run("shim still answers", func(t *testing.T) {
		id := s.id(podvm)
		if r := s.ctr(nil, "run", "-d", "--runtime", podvm, harness.BusyboxImage, id, "sleep", "100000"); r.code != 0 {
			t.Fatalf("run: %+v", r)
		}
		qemu := qemuPid(id)
		if out, err := s.shimDelete(s.bundleOf(id), id); err != nil {
			t.Errorf("delete while the shim runs: %v: %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
		if qemuPid(id) != qemu {
			t.Error("delete touched a VM whose shim still answers")
		}
		if r := s.ctr(nil, "task", "exec", "--exec-id", "e1", id, "echo", "alive"); r.stdout != "alive\n" {
			t.Errorf("the container after a delete its shim survived: %+v", r)
		}
		s.ctr(nil, "task", "kill", "-s", "KILL", id)
		removeTasks(t, id)
		gone(t, id)
	})
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
