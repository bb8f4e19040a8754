package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/podvm/podvm/metrics"
	"github.com/podvm/podvm/test/harness"
)

// TestMetrics reads a running shim's metrics the way an operator's node
// exporter would, through `containerd-shim-podvm-v2 metrics`.
func TestMetrics(t *testing.T) {
	harness.NeedRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: boots a VM")
	}
	harness.WatchLeaks(t)
	ctd := harness.StartContainerd(t, "")
	ctd.ImportBusybox(t)
	s := &suite{t: t, ctd: ctd}
	id := s.id(podvm)
	if r := s.ctr(nil, "run", "-d", "--runtime", podvm, harness.BusyboxImage, id, "sleep", "100000"); r.code != 0 {
		t.Fatalf("ctr run: %+v", r)
	}
	// An exec of a missing binary: one failed task call.
	s.ctr(nil, "task", "exec", "--exec-id", "missing", id, "/no/such/binary")

	stateDir := filepath.Join(ctd.Dir, "podvm")
	sock := filepath.Join(stateDir, "sandboxes", id, metrics.SocketName)
	gather := func() map[string]*dto.MetricFamily {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, harness.ShimBinary(), "metrics", "--state-dir", stateDir)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		fams, err := metrics.Parse(strings.NewReader(string(out)))
		if err != nil {
			t.Fatalf("metrics output does not parse: %v\n%s", err, out)
		}
		return fams
	}
	fams := gather()
	value := func(name string, labels ...string) float64 {
		t.Helper()
		if name != "podvm_shims" {
			labels = append([]string{"sandbox_id", id}, labels...)
		}
		v, ok := metrics.Value(fams, name, labels...)
		if !ok {
			t.Errorf("no %s%v", name, labels)
		}
		return v
	}
	if v := value("podvm_vm_boot_seconds"); v <= 0 || v > 60 {
		t.Errorf("boot time %v s", v)
	}
	if v := value("podvm_agent_rpc_duration_seconds", "method", "Containers/CreateContainer"); v < 1 {
		t.Errorf("CreateContainer RPCs timed: %v", v)
	}
	if v := value("podvm_task_rpc_duration_seconds", "method", "Create"); v != 1 {
		t.Errorf("Create calls timed: %v", v)
	}
	if v := value("podvm_task_rpc_errors_total", "method", "Start"); v < 1 {
		t.Errorf("failed Start of the missing binary not counted: %v", v)
	}
	if v := value("podvm_qemu_rss_bytes"); v < 10<<20 {
		t.Errorf("QEMU RSS %v", v)
	}
	total, avail := value("podvm_guest_memory_total_bytes"), value("podvm_guest_memory_available_bytes")
	if total < 256<<20 || avail <= 0 || avail > total {
		t.Errorf("guest memory total %v available %v", total, avail)
	}
	if v := value("podvm_containers"); v != 1 {
		t.Errorf("containers %v", v)
	}
	if v := value("podvm_shims", "state", "answered"); v != 1 {
		t.Errorf("shims answered %v", v)
	}
	if v := value("process_resident_memory_bytes"); v <= 0 {
		t.Errorf("shim RSS %v", v)
	}

	s.ctr(nil, "task", "kill", "-s", "KILL", id)
	waitFor(t, func() bool { return strings.Contains(s.ctr(nil, "task", "ls").stdout, "STOPPED") })
	if r := s.ctr(nil, "task", "delete", id); r.code != 0 {
		t.Fatalf("task delete: %+v", r)
	}
	s.ctr(nil, "container", "delete", id)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("metrics socket left after the shim went: %v", err)
	}
}
