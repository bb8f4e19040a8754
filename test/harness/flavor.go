package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The tests run against one containerd line at a time: Debian's 1.6 by
// default, the pinned 2.x that `make deps` builds into build/tools when
// PODVM_CONTAINERD=2 (`make test` runs the end-to-end suites under both).

// Containerd2 reports whether this run is against containerd 2.x.
func Containerd2() bool { return os.Getenv("PODVM_CONTAINERD") == "2" }

// containerd2Dir holds the pinned containerd 2.x binaries, or those of
// another 2.x in PODVM_CONTAINERD2_DIR (for trying other releases).
func containerd2Dir() string {
	if d := os.Getenv("PODVM_CONTAINERD2_DIR"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "build", "tools", "containerd-2")
}

// Containerd2Bin is the pinned containerd 2.x, whichever line this run
// is against.
func Containerd2Bin() string { return filepath.Join(containerd2Dir(), "containerd") }

// Containerd2Minor is the minor version of this run's containerd 2.x, as
// its --version says (-1 if it cannot tell).
func Containerd2Minor() int {
	out, err := exec.Command(filepath.Join(containerd2Dir(), "containerd"), "--version").Output()
	if err != nil {
		return -1
	}
	for _, f := range strings.Fields(string(out)) {
		var major, minor int
		if n, _ := fmt.Sscanf(strings.TrimPrefix(f, "v"), "%d.%d", &major, &minor); n == 2 && major == 2 {
			return minor
		}
	}
	return -1
}

// ContainerdBin is the containerd binary of this run.
func ContainerdBin() string {
	if Containerd2() {
		return filepath.Join(containerd2Dir(), "containerd")
	}
	return "containerd"
}

// CtrBin is the ctr of this run: each containerd line with its own.
func CtrBin() string {
	if Containerd2() {
		return filepath.Join(containerd2Dir(), "ctr")
	}
	return "ctr"
}
