package e2e

import (
	"context"
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

// pidIn finds the PID of the census entry ("pid cmdline") containing
// needle.
func qemuPid(id string) int { return harness.TakeCensus().QEMUPid(id) }
func shimPid(id string) int { return harness.TakeCensus().ShimPid(id) }

// create makes a container in a pod without starting it.
func (c *cri) create(pod, podConfig, name string, cmd ...string) string {
	c.t.Helper()
	id, err := c.tryCreate(pod, podConfig, name, nil, cmd...)
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

// remove stops and removes a pod whose VM or shim was hurt: it must go
// within bound, however often kubelet would have to ask.
func (c *cri) remove(pod string, bound time.Duration) {
	c.t.Helper()
	start := time.Now()
	var err error
	for attempt := 1; time.Since(start) < bound; attempt++ {
		if _, err = c.run("stopp", pod); err == nil {
			if _, err = c.run("rmp", pod); err == nil {
				c.t.Logf("pod removed after %v (%d attempts)", time.Since(start).Round(time.Millisecond), attempt)
				break
			}
		}
		c.t.Logf("attempt %d: %v", attempt, err)
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		c.t.Fatalf("pod %s not removable within %v: %v", pod, bound, err)
	}
	// containerd's `delete` of a killed shim may still be at work.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && (len(qemuOf(pod)) > 0 || shimPid(pod) != 0); {
		time.Sleep(100 * time.Millisecond)
	}
	if q := qemuOf(pod); len(q) != 0 {
		c.t.Errorf("QEMU of the removed pod still runs: %v", q)
	}
	if pid := shimPid(pod); pid != 0 {
		c.t.Errorf("shim of the removed pod still runs: pid %d", pid)
	}
}

// TestFaults hurts pods at each step of their life: QEMU or the shim
// SIGKILLed after RunPodSandbox, after CreateContainer, after
// StartContainer, during an exec and during StopPodSandbox; QEMU
// SIGSTOPped (a guest that stops answering); the agent killed inside the
// guest; containerd restarted under a running pod. Each pod must then be
// removable, and nothing may be left. On containerd 2.x, also for pods of
// the Sandbox API.
func TestFaults(t *testing.T) {
	c := newCRI(t)
	for _, handler := range criHandlers()[1:] {
		t.Run(handler, func(t *testing.T) { faults(t, c, handler) })
	}
}

// faults are TestFaults for one handler.
func faults(t *testing.T, c *cri, handler string) {
	ctd := c.ctd
	find := func(victim, pod string) int {
		if victim == "shim" {
			return shimPid(pod)
		}
		return qemuPid(pod)
	}
	kill := func(t *testing.T, victim, pod string) {
		t.Helper()
		pid := find(victim, pod)
		if pid == 0 {
			t.Fatalf("no %s for pod %s", victim, pod)
		}
		if err := killPid(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, victim := range []string{"qemu", "shim"} {
		for _, phase := range []string{"runp", "create", "start", "exec", "stopp"} {
			t.Run(victim+" killed after "+phase, func(t *testing.T) {
				c.t = t
				pod, podConfig := c.runp(handler, nil)
				var id string
				switch phase {
				case "create":
					id = c.create(pod, podConfig, "sleeper", "sleep", "100000")
				case "start", "exec", "stopp":
					id = c.container(pod, podConfig, "sleeper", "sleep", "100000")
				}
				switch phase {
				case "exec":
					done := make(chan error, 1)
					go func() { _, err := c.run("exec", "-s", id, "sleep", "60"); done <- err }()
					time.Sleep(1500 * time.Millisecond)
					kill(t, victim, pod)
					select {
					case err := <-done:
						if err == nil {
							t.Error("an exec whose VM died succeeded")
						}
					case <-time.After(45 * time.Second):
						t.Fatal("an exec whose VM died still runs after 45 s")
					}
				case "stopp":
					// Killed while StopPodSandbox tears the pod down,
					// as soon as it has begun (it may be too late).
					pid := find(victim, pod)
					done := make(chan error, 1)
					go func() { _, err := c.run("stopp", pod); done <- err }()
					time.Sleep(50 * time.Millisecond)
					if err := killPid(pid, syscall.SIGKILL); err != nil {
						t.Logf("%s already gone: %v", victim, err)
					}
					<-done
				default:
					kill(t, victim, pod)
				}
				c.remove(pod, 60*time.Second)
				checkNoAllocations(t, ctd)
			})
		}
	}

	// The heart of it: a guest that stops answering (QEMU stopped) must
	// not hold the pod. Stop and remove finish well within kubelet's
	// two minutes, because the shim kills the VM from the host.
	t.Run("qemu stopped", func(t *testing.T) {
		c.t = t
		pod, podConfig := c.runp(handler, nil)
		c.container(pod, podConfig, "sleeper", "sleep", "100000")
		pid := qemuPid(pod)
		if err := killPid(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := c.run("stopp", pod); err != nil {
			t.Errorf("stopp of a pod whose QEMU is stopped: %v", err)
		}
		took := time.Since(start)
		t.Logf("stopp took %v", took.Round(time.Millisecond))
		if took > 40*time.Second {
			t.Errorf("stopp took %v with a stuck guest", took)
		}
		start = time.Now()
		if _, err := c.run("rmp", pod); err != nil {
			t.Errorf("rmp: %v", err)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("rmp took %v", took)
		}
		if err := killPid(pid, 0); err == nil {
			killPid(pid, syscall.SIGKILL)
			t.Error("the stopped QEMU was left alive")
		}
		checkNoAllocations(t, ctd)
	})

	t.Run("containerd restarted", func(t *testing.T) {
		c.t = t
		pod, podConfig := c.runp(handler, nil)
		id := c.container(pod, podConfig, "sleeper", "sleep", "100000")
		qemu := qemuPid(pod)
		if err := ctd.Restart(); err != nil {
			t.Fatal(err)
		}
		// The pod carried on, and containerd found its shim again.
		if qemuPid(pod) != qemu {
			t.Errorf("QEMU changed across a containerd restart")
		}
		waitFor(t, func() bool {
			out, err := c.run("exec", "-s", id, "echo", "still-here")
			return err == nil && out == "still-here"
		})
		c.remove(pod, 60*time.Second)
		checkNoAllocations(t, ctd)
	})
}

// TestFaultsCtr: the same for plain `ctr run` containers: a stopped QEMU
// and an agent killed inside its guest leave a task that reports 137 and
// is deleted cleanly.
func TestFaultsCtr(t *testing.T) {
	s := newSuite(t)
	withConsole := filepath.Join(t.TempDir(), "console.toml")
	if err := os.WriteFile(withConsole, []byte("debug_console = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(s.ctd.Dir, "podvm")
	for _, fault := range []string{"qemu stopped", "agent killed"} {
		t.Run(fault, func(t *testing.T) {
			id := s.id(podvm)
			if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--runtime-config-path", withConsole, harness.BusyboxImage, id, "sleep", "100000"); r.code != 0 {
				t.Fatalf("ctr run -d: %+v", r)
			}
			defer s.ctr(nil, "container", "delete", id)
			pid := qemuPid(id)
			start := time.Now()
			switch fault {
			case "qemu stopped":
				killPid(pid, syscall.SIGSTOP)
				if r := s.ctr(nil, "task", "kill", "-s", "KILL", id); r.code != 0 {
					t.Errorf("kill of a task whose QEMU is stopped: %+v", r)
				}
			case "agent killed":
				// A guest-root shell kills PID 1, the agent: the guest
				// kernel panics and the VM ends.
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, harness.ShimBinary(), "console", "--state-dir", stateDir, id)
				cmd.Stdin = strings.NewReader("kill -ABRT 1\nsleep 30\n")
				out, _ := cmd.CombinedOutput()
				t.Logf("console: %q", out)
			}
			waitFor(t, func() bool { return strings.Contains(s.ctr(nil, "task", "ls").stdout, "STOPPED") })
			t.Logf("%s: task stopped after %v", fault, time.Since(start).Round(time.Millisecond))
			r := s.ctr(nil, "task", "delete", id)
			if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "137") && fault == "qemu stopped" {
				t.Errorf("delete: %+v", r)
			}
			if took := time.Since(start); took > 45*time.Second {
				t.Errorf("%s: kill and delete took %v", fault, took)
			}
			if err := killPid(pid, 0); err == nil {
				killPid(pid, syscall.SIGKILL)
				t.Errorf("QEMU %d left alive", pid)
			}
		})
	}
}

// killPid signals pid, but never 0 or below: a census that found nothing
// must not turn into kill(0), which would signal the test's own group.
func killPid(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return fmt.Errorf("no process to signal (pid %d)", pid)
	}
	return syscall.Kill(pid, sig)
}
