package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNoResize says the machine type cannot hot-plug CPUs or memory.
var ErrNoResize = errors.New(`machine type microvm cannot hot-plug CPUs or memory: set [hypervisor] machine = "q35" to let a VM grow, or give it more from the start with vcpus and memory_mib`)

// dimmMiB aligns hot-plugged memory to the guest's memory block size
// (128 MiB on x86-64): the kernel onlines whole blocks only.
const dimmMiB = 128

// resources is what a VM has now, hot-plugged parts included.
type resources struct {
	mu        sync.Mutex // serializes growth; the fields are read under it
	cpus      int
	memoryMiB int
	dimms     int
}

// Resources returns the vCPUs and memory the VM has now.
func (vm *VM) Resources() (cpus, memoryMiB int) {
	vm.res.mu.Lock()
	defer vm.res.mu.Unlock()
	return vm.res.cpus, vm.res.memoryMiB
}

// Limits returns how far the VM can grow: its maximum vCPUs and memory
// (its current ones when it cannot grow).
func (vm *VM) Limits() (cpus, memoryMiB int) {
	cpus, memoryMiB = vm.Resources()
	if !machines[vm.cfg.Machine].resizable() {
		return cpus, memoryMiB
	}
	return max(cpus, vm.cfg.MaxCPUs), max(memoryMiB, vm.cfg.MaxMemoryMiB)
}

// CanResize reports whether the VM can take CPUs or memory while it runs.
func (vm *VM) CanResize() bool {
	c, m := vm.Limits()
	c0, m0 := vm.Resources()
	return c > c0 || m > m0
}

// hotpluggableCPU is one entry of query-hotpluggable-cpus.
type hotpluggableCPU struct {
	Type    string         `json:"type"`
	Props   map[string]any `json:"props"`
	QOMPath string         `json:"qom-path"`
}

// AddCPUs gives the running VM vCPUs until it has want, by hot-plug or by
// allowing more of its present ones (see CPUPlug); the guest must still
// online them. It returns the count the VM has.
func (vm *VM) AddCPUs(ctx context.Context, want int) (int, error) {
	vm.res.mu.Lock()
	defer vm.res.mu.Unlock()
	if want <= vm.res.cpus {
		return vm.res.cpus, nil
	}
	if !machines[vm.cfg.Machine].resizable() {
		return vm.res.cpus, ErrNoResize
	}
	if want > vm.cfg.MaxCPUs {
		return vm.res.cpus, fmt.Errorf("%d vCPUs asked for, the VM can have at most %d (the host's CPUs)", want, vm.cfg.MaxCPUs)
	}
	if vm.cfg.cpuPlug() == PlugPresent {
		// QEMU has them already; the guest onlines them.
		vm.res.cpus = want
		return want, nil
	}
	var slots []hotpluggableCPU
	if err := vm.qmp.Execute(ctx, "query-hotpluggable-cpus", nil, &slots); err != nil {
		return vm.res.cpus, fmt.Errorf("query-hotpluggable-cpus: %w", err)
	}
	for _, s := range slots {
		if vm.res.cpus >= want {
			break
		}
		if s.QOMPath != "" {
			continue // plugged already
		}
		dev := map[string]any{"driver": s.Type, "id": fmt.Sprintf("cpu%d", vm.res.cpus)}
		for k, v := range s.Props {
			dev[k] = v
		}
		if err := vm.qmp.Execute(ctx, "device_add", dev, nil); err != nil {
			return vm.res.cpus, fmt.Errorf("plug vCPU %d: %w", vm.res.cpus, err)
		}
		vm.res.cpus++
	}
	if vm.res.cpus < want {
		return vm.res.cpus, fmt.Errorf("QEMU has no free CPU slot for vCPU %d of %d", vm.res.cpus+1, want)
	}
	return vm.res.cpus, nil
}

// AddMemory plugs a DIMM into the running VM so that it has at least want
// MiB (rounded up to whole memory blocks). It returns the VM's memory.
func (vm *VM) AddMemory(ctx context.Context, want int) (int, error) {
	vm.res.mu.Lock()
	defer vm.res.mu.Unlock()
	if want <= vm.res.memoryMiB {
		return vm.res.memoryMiB, nil
	}
	if !machines[vm.cfg.Machine].resizable() {
		return vm.res.memoryMiB, ErrNoResize
	}
	size := (want - vm.res.memoryMiB + dimmMiB - 1) / dimmMiB * dimmMiB
	if vm.res.memoryMiB+size > vm.cfg.MaxMemoryMiB {
		return vm.res.memoryMiB, fmt.Errorf("%d MiB asked for, the VM can have at most %d MiB (hypervisor.max_memory_mib)", want, vm.cfg.MaxMemoryMiB)
	}
	if vm.res.dimms >= memorySlots {
		return vm.res.memoryMiB, fmt.Errorf("all %d memory slots of the VM are used", memorySlots)
	}
	id := fmt.Sprintf("dimm%d", vm.res.dimms)
	backend := map[string]any{"qom-type": "memory-backend-ram", "id": id + "-mem", "size": uint64(size) << 20}
	if vm.cfg.virtioFS() {
		// virtiofsd must reach every page of the guest's RAM.
		backend["qom-type"], backend["share"] = "memory-backend-memfd", true
	}
	if err := vm.qmp.Execute(ctx, "object-add", backend, nil); err != nil {
		return vm.res.memoryMiB, fmt.Errorf("object-add %d MiB: %w", size, err)
	}
	if err := vm.qmp.Execute(ctx, "device_add", map[string]any{"driver": "pc-dimm", "id": id, "memdev": id + "-mem"}, nil); err != nil {
		_ = vm.qmp.Execute(ctx, "object-del", map[string]any{"id": id + "-mem"}, nil)
		return vm.res.memoryMiB, fmt.Errorf("plug a %d MiB DIMM: %w", size, err)
	}
	vm.res.dimms++
	vm.res.memoryMiB += size
	return vm.res.memoryMiB, nil
}
