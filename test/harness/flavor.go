package harness

import (
	"os"
	"path/filepath"
)

// The tests run against one containerd line at a time: Debian's 1.6 by
// default, the pinned 2.x that `make deps` builds into build/tools when
// PODVM_CONTAINERD=2 (`make test` runs the end-to-end suites under both).

// Containerd2 reports whether this run is against containerd 2.x.
func Containerd2() bool { return os.Getenv("PODVM_CONTAINERD") == "2" }

// containerd2Dir holds the pinned containerd 2.x binaries.
func containerd2Dir() string { return filepath.Join(RepoRoot(), "build", "tools", "containerd-2") }

// Containerd2Bin is the pinned containerd 2.x, whichever line this run
// is against.
func Containerd2Bin() string { return filepath.Join(containerd2Dir(), "containerd") }

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
