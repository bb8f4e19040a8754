package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/install"
	"github.com/podvm/podvm/test/harness"
)

// TestCheck runs `containerd-shim-podvm-v2 check` as an operator would: it
// boots the configured guest, passes on this machine, and says which
// containerd stanza is missing; `check --config` names a bad key.
func TestCheck(t *testing.T) {
	harness.NeedRoot(t)
	harness.WatchLeaks(t)
	dir := t.TempDir()
	kernel, initramfs := harness.Assets()
	config := filepath.Join(dir, "podvm.toml")
	os.WriteFile(config, []byte(fmt.Sprintf("state_dir = %q\n[hypervisor]\nkernel = %q\ninitramfs = %q\n", filepath.Join(dir, "state"), kernel, initramfs)), 0o644)
	ctdConfig := filepath.Join(dir, "containerd.toml")
	os.WriteFile(ctdConfig, []byte("version = 2\n"), 0o644)

	run := func(args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, harness.ShimBinary(), args...)
		cmd.Env = append(os.Environ(), "PODVM_CONFIG="+config)
		out, err := cmd.CombinedOutput()
		return string(out), exitCode(err)
	}
	out, code := run("check", "--containerd-config", ctdConfig)
	for _, want := range []string{"ok    guest boot: agent", "warn  containerd config", install.Stanza(2, "podvm")[:40], "this host can run podvm"} {
		if !strings.Contains(out, want) {
			t.Errorf("check does not say %q", want)
		}
	}
	if code != 0 {
		t.Errorf("check: exit %d", code)
	}
	if t.Failed() {
		t.Logf("check:\n%s", out)
	}

	os.WriteFile(config, []byte("[hypervisor]\nmemory_mib = \"lots\"\n"), 0o644)
	out, code = run("check", "--config")
	if code != 1 || !strings.Contains(out, "hypervisor.memory_mib") {
		t.Errorf("check --config of a bad file: exit %d:\n%s", code, out)
	}
	out, code = run("check")
	if code != 1 || !strings.Contains(out, "hypervisor.memory_mib") {
		t.Errorf("check with a bad file: exit %d:\n%s", code, out)
	}
}
