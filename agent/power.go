package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// replyGrace is how long the agent waits after accepting a Shutdown call
// before the VM goes away, so that the reply reaches the host first.
const replyGrace = 20 * time.Millisecond

// powerOff stops every process, syncs and resets the guest. The host runs
// QEMU with -no-reboot and the kernel with reboot=t, so a reset ends QEMU: a
// microvm without ACPI has no other way to power off.
func powerOff(grace time.Duration) {
	defer recoverPanic("power off")
	time.Sleep(replyGrace)
	endProcesses(grace)
	logf(levelInfo, "powering off")
	flushLogs(100 * time.Millisecond)
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		logf(levelError, "reboot: %v", err)
	}
}

// endProcesses ends every process but PID 1, SIGTERM first when there is
// grace, and syncs what they wrote.
func endProcesses(grace time.Duration) {
	if grace > 0 {
		_ = unix.Kill(-1, unix.SIGTERM)
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) && othersAlive() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
}

// othersAlive reports whether any process besides PID 1 and kernel threads
// still runs: kill(-1, 0) succeeds while one can be signalled.
func othersAlive() bool {
	return unix.Kill(-1, 0) == nil
}

// emptied reports whether no process is left in any container: each
// container's cgroup is empty, so its init, its execs and whatever they
// started have exited. (The host skips deleting a pod's last container
// before it stops the VM.)
func (s *containerService) emptied() bool {
	s.mu.Lock()
	cs := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		// nil: being created.
		if c == nil || c.rt == nil || c.rt.cgroupDir() == "" {
			return false
		}
		b, err := os.ReadFile(filepath.Join(c.rt.cgroupDir(), "cgroup.events"))
		if err != nil || !bytes.Contains(b, []byte("populated 0\n")) {
			return false
		}
	}
	return true
}
