package sandbox

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vmconfig"
)

// demand is what a container's limits ask of the VM: whole vCPUs and MiB
// (zero: no limit).
type demand struct {
	cpus, memoryMiB int
}

func demandOf(r *specs.LinuxResources) demand {
	var d demand
	if r == nil {
		return d
	}
	if r.CPU != nil && r.CPU.Quota != nil && r.CPU.Period != nil {
		d.cpus = vmconfig.CPUsOf(*r.CPU.Quota, int64(*r.CPU.Period))
	}
	if r.Memory != nil && r.Memory.Limit != nil {
		d.memoryMiB = vmconfig.MiBOf(*r.Memory.Limit)
	}
	return d
}

// updated is the demand after an Update, which may name only some
// resources: the others keep their limits.
func (d demand) updated(r *specs.LinuxResources) demand {
	n := demandOf(r)
	if r.CPU == nil || r.CPU.Quota == nil {
		n.cpus = d.cpus
	}
	if r.Memory == nil || r.Memory.Limit == nil {
		n.memoryMiB = d.memoryMiB
	}
	return n
}

func specResources(s *specs.Spec) *specs.LinuxResources {
	if s == nil || s.Linux == nil {
		return nil
	}
	return s.Linux.Resources
}

// fit makes room in the VM for container id's limits, as Kata sizes its
// VMs: the configured base for the guest itself plus the sum of the
// containers' limits, never less than what the VM booted with. A VM that
// can grow (q35) gets CPUs and memory hot-plugged; one that cannot
// (microvm) refuses an Update whose limits it could never honour, and
// otherwise lets the containers share what it has, as runc's containers
// share an overcommitted node. It records the demand on success.
//
// Growths are serialized by sb.grow, which only fit takes: nothing but
// another fit waits for a guest slow to bring memory online.
func (sb *Pod) fit(ctx context.Context, id string, d demand, update bool) error {
	g := sb.Guest()
	if g == nil {
		return fmt.Errorf("the VM of sandbox %s is not running: %w", sb.id, errdefs.ErrFailedPrecondition)
	}
	select {
	case sb.grow <- struct{}{}:
		defer func() { <-sb.grow }()
	case <-ctx.Done():
		return ctx.Err()
	}
	base := sb.config().Hypervisor
	sb.resizeMu.Lock()
	need := demand{base.VCPUs, base.MemoryMiB}.plus(d)
	for other, od := range sb.demands {
		if other != id {
			need = need.plus(od)
		}
	}
	sb.resizeMu.Unlock()

	cpus, mem := g.VM.Resources()
	if need.cpus <= cpus && need.memoryMiB <= mem {
		sb.setDemand(id, d)
		return nil
	}
	maxCPUs, maxMem := g.VM.Limits()
	logger := log.G(ctx).WithField("container", id)
	if !g.VM.CanResize() {
		if update && (d.cpus > cpus || d.memoryMiB > mem) {
			return fmt.Errorf("the limits of %s (%s) exceed its VM's %d vCPUs and %d MiB, and %w: %w",
				id, d, cpus, mem, hypervisor.ErrNoResize, errdefs.ErrFailedPrecondition)
		}
		logger.Infof("the pod's limits add up to %d vCPUs and %d MiB, more than its VM's %d and %d MiB; the containers share them", need.cpus, need.memoryMiB, cpus, mem)
		sb.setDemand(id, d)
		return nil
	}
	if d.cpus > maxCPUs || d.memoryMiB > maxMem {
		return fmt.Errorf("the limits of %s (%s) exceed what its VM can grow to, %d vCPUs (the host's CPUs) and %d MiB (hypervisor.max_memory_mib): lower them or raise max_memory_mib: %w",
			id, d, maxCPUs, maxMem, errdefs.ErrInvalidArgument)
	}
	want := demand{min(max(need.cpus, cpus), maxCPUs), min(max(need.memoryMiB, mem), maxMem)}
	if err := g.Grow(ctx, want.cpus, want.memoryMiB); err != nil {
		return err
	}
	cpus, mem = g.VM.Resources()
	sb.metrics.Resized(cpus, mem)
	logger.Infof("VM grown to %d vCPUs and %d MiB for the pod's limits (%d vCPUs, %d MiB)", cpus, mem, need.cpus, need.memoryMiB)
	sb.setDemand(id, d)
	return nil
}

// plus adds two demands without overflowing: limits come from specs.
func (d demand) plus(o demand) demand {
	return demand{vmconfig.SaturatingAdd(d.cpus, o.cpus), vmconfig.SaturatingAdd(d.memoryMiB, o.memoryMiB)}
}

// demand returns container id's recorded demand.
func (sb *Pod) demand(id string) demand {
	sb.resizeMu.Lock()
	defer sb.resizeMu.Unlock()
	return sb.demands[id]
}

// setDemand puts back a demand (an Update that failed after fit).
func (sb *Pod) setDemand(id string, d demand) {
	sb.resizeMu.Lock()
	sb.demands[id] = d
	sb.resizeMu.Unlock()
}

// forget drops a deleted container's demand. The VM does not shrink:
// unplugging memory the guest has used is slow and may fail.
func (sb *Pod) forget(id string) {
	sb.resizeMu.Lock()
	delete(sb.demands, id)
	sb.resizeMu.Unlock()
}

func (d demand) String() string {
	s := "no limits"
	switch {
	case d.cpus > 0 && d.memoryMiB > 0:
		s = fmt.Sprintf("%d vCPUs, %d MiB", d.cpus, d.memoryMiB)
	case d.cpus > 0:
		s = fmt.Sprintf("%d vCPUs", d.cpus)
	case d.memoryMiB > 0:
		s = fmt.Sprintf("%d MiB", d.memoryMiB)
	}
	return s
}
