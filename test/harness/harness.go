// Package harness is what podvm's integration tests and benchmarks share:
// finding the guest assets, skipping (or, under `make test`, failing) when
// the host lacks what a test needs, a census of what tests may leak, and
// summaries of measurements.
package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/podvm/podvm/vmconfig"
)

// Required reports whether tests must not skip: `make test` and CI set
// PODVM_TEST_REQUIRE=1, so a missing prerequisite fails instead of passing
// silently.
func Required() bool { return os.Getenv("PODVM_TEST_REQUIRE") == "1" }

// Need skips the test (or fails it, when Required) with why.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if Required() {
		t.Fatalf("prerequisite missing: %s", why)
	}
	t.Skipf("skipped: %s", why)
}

// NeedRoot needs uid 0.
func NeedRoot(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "needs root (run `make test` as root)")
}

// RepoRoot is the source tree's root, found from this file (or, in a
// binary built with -trimpath, from the working directory).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	if filepath.IsAbs(file) {
		return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	}
	// Built with -trimpath (the demo), file is module-relative: the tree
	// is the working directory or one of its parents.
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/podvm/podvm\n") {
			return d
		}
		if filepath.Dir(d) == d {
			return wd
		}
	}
}

// Assets returns the guest kernel and initramfs: $PODVM_KERNEL and
// $PODVM_INITRAMFS, else build/guest of the source tree.
func Assets() (kernel, initramfs string) {
	kernel = os.Getenv("PODVM_KERNEL")
	if kernel == "" {
		kernel = filepath.Join(RepoRoot(), "build", "guest", "vmlinux")
	}
	initramfs = os.Getenv("PODVM_INITRAMFS")
	if initramfs == "" {
		initramfs = filepath.Join(RepoRoot(), "build", "guest", "initramfs.cpio")
	}
	return kernel, initramfs
}

// VMConfig returns the configuration integration tests boot guests with:
// the defaults with the tree's guest assets and a state directory of the
// test's own. It skips (or fails) when QEMU, root or the assets are missing.
func VMConfig(t testing.TB) *vmconfig.Config {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped in -short mode: boots a VM")
	}
	NeedRoot(t)
	_, err := exec.LookPath("qemu-system-x86_64")
	Need(t, err == nil, "needs qemu-system-x86_64 (make deps)")
	kernel, initramfs := Assets()
	for _, p := range []string{kernel, initramfs} {
		_, err := os.Stat(p)
		Need(t, err == nil, p+" is missing (make guest)")
	}
	c := vmconfig.Default()
	c.Hypervisor.Kernel = kernel
	c.Hypervisor.Initramfs = initramfs
	// Share the accelerator probe's answer between tests: probing in every
	// test would multiply its cost.
	c.StateDir = sharedStateDir()
	c.Template.Dir = TemplateDir()
	return c
}

// sharedStateDir is the state directory the tests that boot VMs without
// containerd share (and where the host facts live between tests).
func sharedStateDir() string {
	return filepath.Join(os.TempDir(), "podvm-test-state")
}

// TemplateDir is where the tests keep VM templates: shared by every test
// of a run, so that each shape is built once, and out of /dev/shm, where
// the node's own templates live.
func TemplateDir() string {
	return filepath.Join(sharedStateDir(), "templates")
}
