package vm

import (
	"context"
	"fmt"
	"time"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// onlineTimeout bounds how long the guest may take to see hot-plugged
// CPUs and memory (ACPI events, then onlining); TCG is slow at it.
const onlineTimeout = time.Minute

// Grow hot-plugs vCPUs and memory until the VM has at least cpus and
// memoryMiB, and waits until the guest has them online.
func (g *Guest) Grow(ctx context.Context, cpus, memoryMiB int) error {
	c0, m0 := g.VM.Resources()
	if cpus <= c0 && memoryMiB <= m0 {
		return nil
	}
	h, err := g.Agent.Health(ctx, &agentapi.HealthRequest{})
	if err != nil {
		return fmt.Errorf("guest memory before growing: %w", err)
	}
	c, err := g.VM.AddCPUs(ctx, cpus)
	if err != nil {
		return fmt.Errorf("grow VM %s to %d vCPUs: %w", g.ID, cpus, err)
	}
	m, err := g.VM.AddMemory(ctx, memoryMiB)
	if err != nil {
		return fmt.Errorf("grow VM %s to %d MiB: %w", g.ID, memoryMiB, err)
	}
	octx, cancel := context.WithTimeout(ctx, onlineTimeout)
	defer cancel()
	want := &agentapi.OnlineResourcesRequest{Cpus: uint32(c), MemoryTotalBytes: h.MemoryTotalBytes + uint64(m-m0)<<20}
	if _, err := g.Agent.OnlineResources(octx, want); err != nil {
		return fmt.Errorf("VM %s: hot-plugged CPUs and memory did not come online: %w", g.ID, err)
	}
	return nil
}
