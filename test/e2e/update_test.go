package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/metrics"
	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vmconfig"
)

// TestUpdateGrowsVM raises a container's limits past its VM through
// containerd's Update: a q35 VM gets a vCPU and memory hot-plugged and the
// container sees them with its new cgroup limits; a microvm VM refuses
// with an error that says to use q35, and leaves the limits as they were.
func TestUpdateGrowsVM(t *testing.T) {
	harness.NeedRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: boots VMs")
	}
	harness.Need(t, vmconfig.MaxVCPUs() >= 2, "needs 2 host CPUs")
	harness.WatchLeaks(t)
	ctd := harness.StartContainerd(t, "")
	ctd.ImportBusybox(t)
	s := &suite{t: t, ctd: ctd}
	q35 := filepath.Join(t.TempDir(), "q35.toml")
	if err := os.WriteFile(q35, []byte("[hypervisor]\nmachine = \"q35\"\nvcpus = 1\nmemory_mib = 512\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cgroupMount := "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro"
	grown, fixed := s.id(podvm), s.id(podvm)
	if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--runtime-config-path", q35, "--mount", cgroupMount, harness.BusyboxImage, grown, "sleep", "100000"); r.code != 0 {
		t.Fatalf("ctr run on q35: %+v", r)
	}
	if r := s.ctr(nil, "run", "-d", "--runtime", podvm, "--mount", cgroupMount, harness.BusyboxImage, fixed, "sleep", "100000"); r.code != 0 {
		t.Fatalf("ctr run on microvm: %+v", r)
	}
	defer func() {
		for _, id := range []string{grown, fixed} {
			s.ctr(nil, "task", "delete", "-f", id)
			s.ctr(nil, "container", "delete", id)
		}
	}()
	n := 0
	run := func(id, script string) string {
		t.Helper()
		n++
		r := s.ctr(nil, "task", "exec", "--exec-id", "x"+strconv.Itoa(n), id, "sh", "-c", script)
		if r.code != 0 {
			t.Fatalf("exec %q in %s: %+v", script, id, r)
		}
		return strings.TrimSpace(r.stdout)
	}
	memTotalMiB := func(id string) int {
		t.Helper()
		kb, err := strconv.Atoi(run(id, "awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
		if err != nil {
			t.Fatal(err)
		}
		return kb >> 10
	}
	cgroupFile := func(id, name string) string {
		return run(id, "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/"+name)
	}

	if got := run(grown, "nproc"); got != "1" {
		t.Fatalf("nproc before the update: %s", got)
	}
	before := memTotalMiB(grown)
	// 1 GiB and 2 CPUs: the VM needs its 512 MiB and 1 vCPU besides, so
	// it grows to 1.5 GiB and to the host's 2 CPUs.
	limit, quota, period := int64(1<<30), int64(200000), uint64(100000)
	if err := updateResources(ctd, grown, &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
	}); err != nil {
		t.Fatalf("update on q35: %v", err)
	}
	if got := run(grown, "nproc"); got != "2" {
		t.Errorf("nproc after the update: %s, want 2", got)
	}
	if after := memTotalMiB(grown); after-before != 1024 {
		t.Errorf("guest MemTotal %d MiB -> %d MiB, want 1024 MiB more", before, after)
	}
	if got := cgroupFile(grown, "memory.max"); got != "1073741824" {
		t.Errorf("memory.max after the update: %s", got)
	}
	if got := cgroupFile(grown, "cpu.max"); got != "200000 100000" {
		t.Errorf("cpu.max after the update: %s", got)
	}
	// The shim's metrics follow the VM's new size.
	out, err := exec.Command(harness.ShimBinary(), "metrics", "--state-dir", filepath.Join(ctd.Dir, "podvm")).Output()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	fams, err := metrics.Parse(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for name, want := range map[string]float64{"podvm_vm_vcpus": 2, "podvm_vm_memory_bytes": 1536 << 20} {
		got, _ := metrics.Value(fams, name, "sandbox_id", grown)
		if got != want {
			t.Errorf("%s of the grown VM: %v, want %v", name, got, want)
		}
	}
	// Past what the VM may ever have: refused, naming the bound.
	huge := int64(64 << 30)
	err = updateResources(ctd, grown, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &huge}})
	if err == nil || !strings.Contains(err.Error(), "max_memory_mib") {
		t.Errorf("update to 64 GiB: %v", err)
	}
	if got := cgroupFile(grown, "memory.max"); got != "1073741824" {
		t.Errorf("memory.max after a refused update: %s", got)
	}

	// microvm cannot hot-plug.
	err = updateMemory(ctd, fixed, 1<<30)
	if err == nil || !strings.Contains(err.Error(), `machine = "q35"`) {
		t.Errorf("update past a microvm VM: %v", err)
	}
	if got := cgroupFile(fixed, "memory.max"); got != "max" {
		t.Errorf("memory.max after a refused update: %s", got)
	}
	// Within the VM it works as under runc.
	if err := updateMemory(ctd, fixed, 256<<20); err != nil {
		t.Errorf("update within a microvm VM: %v", err)
	}
	if got := cgroupFile(fixed, "memory.max"); got != "268435456" {
		t.Errorf("memory.max after the update: %s", got)
	}
}
