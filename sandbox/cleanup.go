package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/podvm/podvm/network"
)

// Cleanup is `delete` after the shim died: QEMU normally died
// with it (it runs with a parent-death signal), but is killed here if not;
// the container's mounts, and for the sandbox's own container its network
// and the whole sandbox directory, are removed. The directory, which holds
// the records of what to undo, goes last and only once the rest is undone,
// so that a failed cleanup can be run again.
func Cleanup(dir, sandboxID, containerID, shareDir string) error {
	if containerID != sandboxID {
		if shareDir == "" {
			shareDir = containerID
		}
		return unmountTree(dir, filepath.Join("shared", shareDir))
	}
	if b, err := os.ReadFile(filepath.Join(dir, qemuPidFile)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			killQEMU(pid, sandboxID)
		}
	}
	var errs []error
	if err := removeSavedCgroup(filepath.Join(dir, cgroupState)); err != nil {
		errs = append(errs, err)
	}

	if err := network.Cleanup(filepath.Join(dir, networkState)); err != nil {
		errs = append(errs, err)
	}
	if err := network.RemoveSaved(filepath.Join(dir, netnsState)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return unmountTree(dir, ".")
}

// killQEMU kills pid if it is still the QEMU of the sandbox (the PID may
// have been reused since).
func killQEMU(pid int, sandboxID string) {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmd), "\x00-name\x00"+sandboxID+"\x00") {
		return
	}
	p, err := os.FindProcess(pid)
	if err == nil {
		_ = p.Kill()
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
