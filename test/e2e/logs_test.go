package e2e

import (
	"strings"
	"testing"

	"github.com/podvm/podvm/test/harness"
)

// TestLogs reads what podvm's shim wrote to containerd's log when
// containerd runs at debug level (so shims get -debug): every line names
// the sandbox (and the container where there is one), and the guest's
// console and agent lines are there, prefixed.
func TestLogs(t *testing.T) {
	harness.NeedRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: boots a VM")
	}
	harness.WatchLeaks(t)
	ctd := harness.StartContainerd(t, "")
	ctd.ImportBusybox(t)
	s := &suite{t: t, ctd: ctd}
	id := s.id(podvm)
	if r := s.ctr(nil, "run", "--rm", "--runtime", podvm, harness.BusyboxImage, id, "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("ctr run: %+v", r)
	}

	var shimLines, kernel, agent int
	for _, line := range strings.Split(ctd.Log(), "\n") {
		// containerd 2.x names the runtime in some lines of its own.
		if !strings.Contains(line, "runtime="+podvm) || strings.Contains(line, `msg="creating task"`) {
			continue
		}
		shimLines++
		if !strings.Contains(line, "sandbox="+id) && !strings.Contains(line, "container="+id) {
			t.Errorf("shim log line without the sandbox's ID: %s", line)
		}
		if strings.Contains(line, `msg="guest: `) {
			if strings.Contains(line, "Linux version") {
				kernel++
			}
			if strings.Contains(line, "podvm-agent") {
				agent++
			}
		}
	}
	t.Logf("%d shim lines, %d kernel, %d agent", shimLines, kernel, agent)
	if shimLines == 0 || kernel == 0 || agent == 0 {
		t.Errorf("shim log: %d lines, %d of the guest kernel, %d of the agent", shimLines, kernel, agent)
	}
}
