package sandbox

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestDemand(t *testing.T) {
	quota, period, limit := int64(150000), uint64(100000), int64(100<<20+1)
	d := demandOf(&specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
		Memory: &specs.LinuxMemory{Limit: &limit},
	})
	// Whole CPUs and MiB, rounded up.
	if d != (demand{cpus: 2, memoryMiB: 101}) {
		t.Errorf("demand %+v", d)
	}
	if got := demandOf(nil); got != (demand{}) {
		t.Errorf("no resources: %+v", got)
	}
	unlimited := int64(-1)
	if got := demandOf(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &unlimited}}); got != (demand{}) {
		t.Errorf("memory limit -1 (none): %+v", got)
	}
	// An Update that names only memory keeps the CPU limit.
	newLimit := int64(1 << 30)
	if got := d.updated(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &newLimit}}); got != (demand{cpus: 2, memoryMiB: 1024}) {
		t.Errorf("after a memory update: %+v", got)
	}
	if got := d.updated(&specs.LinuxResources{}); got != d {
		t.Errorf("after an empty update: %+v", got)
	}
}
