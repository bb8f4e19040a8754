package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/podvm/podvm/test/harness"
)

// TestLogs reads what podvm's shim wrote to containerd's log when
// containerd runs at debug level (so shims get -debug): every line names
// the sandbox (and the container where there is one), and the guest's
// console and agent lines are there, prefixed. A VM restored from a
// template never boots its kernel (the template's build logged that, in
// whichever shim built it), so the kernel's lines are looked for in a cold
// boot.
func TestLogs(t *testing.T) {
	harness.NeedRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: boots a VM")
	}
	harness.WatchLeaks(t)
	ctd := harness.StartContainerd(t, "")
	ctd.ImportBusybox(t)
	s := &suite{t: t, ctd: ctd}

	restored := s.id(podvm)
	if r := s.ctr(nil, "run", "--rm", "--runtime", podvm, harness.BusyboxImage, restored, "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("ctr run: %+v", r)
	}
	lines, _, agent := shimLog(t, ctd.Log(), restored)
	if lines == 0 || agent == 0 {
		t.Errorf("shim log of a VM from a template: %d lines, %d of the agent", lines, agent)
	}

	configFile := filepath.Join(ctd.Dir, "podvm.toml")
	config, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	cold := strings.Replace(string(config), "[template]\n", "[template]\nenabled = false\n", 1)
	if err := os.WriteFile(configFile, []byte(cold), 0o644); err != nil {
		t.Fatal(err)
	}
	booted := s.id(podvm)
	if r := s.ctr(nil, "run", "--rm", "--runtime", podvm, harness.BusyboxImage, booted, "true"); r.code != 0 {
		t.Fatalf("ctr run: %+v", r)
	}
	lines, kernel, agent := shimLog(t, ctd.Log(), booted)
	if lines == 0 || kernel == 0 || agent == 0 {
		t.Errorf("shim log of a cold-booted VM: %d lines, %d of the guest kernel, %d of the agent", lines, kernel, agent)
	}
}

// shimLog counts the lines of the shim serving sandbox id in containerd's
// log, and of them the guest kernel's banner and the agent's lines. Every
// line of that shim must name its sandbox.
func shimLog(t *testing.T, log, id string) (lines, kernel, agent int) {
	t.Helper()
	names := regexp.MustCompile(`\b(sandbox|container)=` + regexp.QuoteMeta(id) + `( |$)`)
	for _, line := range strings.Split(log, "\n") {
		// containerd 2.x names the runtime in some lines of its own.
		if !strings.Contains(line, "runtime="+podvm) || strings.Contains(line, `msg="creating task"`) {
			continue
		}
		if !strings.Contains(line, "sandbox=") && !strings.Contains(line, "container=") {
			t.Errorf("shim log line without the sandbox's ID: %s", line)
			continue
		}
		if !names.MatchString(line) {
			continue // the other run's shim
		}
		lines++
		if strings.Contains(line, `msg="guest: `) {
			if strings.Contains(line, "Linux version") {
				kernel++
			}
			if strings.Contains(line, "podvm-agent") {
				agent++
			}
		}
	}
	t.Logf("sandbox %s: %d shim lines, %d kernel, %d agent", id, lines, kernel, agent)
	return lines, kernel, agent
}
