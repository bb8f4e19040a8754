package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvm/podvm/agent"
)

func TestPauseName(t *testing.T) {
	if pauseName != agent.PauseName {
		t.Errorf("pause.c answers to %q, the host runs %q", pauseName, agent.PauseName)
	}
}

// TestPause runs this test binary, whose constructors are the agent's, as
// pause and PID 1 of a namespace of its own, the infra process's place.
// It must stay one thread (a Go runtime would have started more), reap an
// orphan the pod leaves it, and end on SIGTERM with status 0.
func TestPause(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("a PID namespace needs root")
	}
	if os.Getenv("PODVM_PAUSE_TEST") != "" {
		t.Skip("this is the pause under test, reached Go: see the parent's result")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pause := filepath.Join(t.TempDir(), agent.PauseName)
	if err := os.Symlink(self, pause); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pause)
	cmd.Env = append(os.Environ(), "PODVM_PAUSE_TEST=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()
	time.Sleep(200 * time.Millisecond)
	if threads := statusField(t, pid, "Threads"); threads != "1" {
		t.Errorf("pause has %s threads, want 1: Go started", threads)
	}
	// sh enters the namespace, starts sleep and exits: sleep is
	// reparented to pause, whose child it becomes when it exits.
	orphan := exec.Command("nsenter", "--pid=/proc/"+strconv.Itoa(pid)+"/ns/pid", "--", "sh", "-c", "sleep 0.2 &")
	if out, err := orphan.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	time.Sleep(time.Second)
	if z := children(t, pid); len(z) > 0 {
		t.Errorf("pause left its exited children unreaped: %v", z)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("pause after SIGTERM: %v, want status 0", err)
	}
}

// statusField is a field of /proc/pid/status.
func statusField(t *testing.T, pid int, name string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// children are the PIDs whose parent is pid, from /proc/*/stat.
func children(t *testing.T, pid int) []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, filepath.Base(filepath.Dir(s))+" "+f[0])
		}
	}
	return out
}
