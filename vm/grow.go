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

// Health is the guest's own account of itself.
type Health struct {
	// Uptime is since the guest kernel started; AgentReady is when, after
	// that, the agent began to serve.
	Uptime, AgentReady time.Duration
	// MemoryTotal and MemoryAvailable are /proc/meminfo's, in bytes.
	MemoryTotal, MemoryAvailable uint64
	CPUsOnline                   int
}

// Health asks the agent how the guest is.
func (g *Guest) Health(ctx context.Context) (Health, error) {
	var h Health
	err := g.call(ctx, request, "guest health", func(ctx context.Context) error {
		r, err := g.agent.Health(ctx, &agentapi.HealthRequest{})
		if err != nil {
			return err
		}
		if r.CpusOnline > maxGuestCPUs || r.MemoryAvailableBytes > r.MemoryTotalBytes || r.UptimeNs < 0 || r.AgentReadyNs < 0 {
			return fmt.Errorf("health %v: %w", r, ErrBadReply)
		}
		h = Health{
			Uptime: time.Duration(r.UptimeNs), AgentReady: time.Duration(r.AgentReadyNs),
			MemoryTotal: r.MemoryTotalBytes, MemoryAvailable: r.MemoryAvailableBytes, CPUsOnline: int(r.CpusOnline),
		}
		return nil
	})
	return h, err
}

// maxGuestCPUs is the guest kernel's CONFIG_NR_CPUS.
const maxGuestCPUs = 64

// Version is what the guest runs.
type Version struct {
	Agent, API, KernelRelease, KernelVersion, Go string
	CPUs                                         int
	MemoryBytes                                  uint64
}

// Version asks the agent what it and its kernel are.
func (g *Guest) Version(ctx context.Context) (Version, error) {
	var v Version
	err := g.call(ctx, request, "guest version", func(ctx context.Context) error {
		r, err := g.agent.Version(ctx, &agentapi.VersionRequest{})
		if err != nil {
			return err
		}
		if r.Cpus > maxGuestCPUs {
			return fmt.Errorf("%d CPUs: %w", r.Cpus, ErrBadReply)
		}
		v = Version{
			Agent: Printable(r.AgentVersion, 80), API: Printable(r.ApiVersion, 16),
			KernelRelease: Printable(r.KernelRelease, 80), KernelVersion: Printable(r.KernelVersion, 160),
			Go: Printable(r.GoVersion, 40), CPUs: int(r.Cpus), MemoryBytes: r.MemoryBytes,
		}
		return nil
	})
	return v, err
}

// Grow hot-plugs vCPUs and memory until the VM has at least cpus and
// memoryMiB, and waits until the guest has them online.
func (g *Guest) Grow(ctx context.Context, cpus, memoryMiB int) error {
	c0, m0 := g.VM.Resources()
	if cpus <= c0 && memoryMiB <= m0 {
		return nil
	}
	h, err := g.Health(ctx)
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
	want := &agentapi.OnlineResourcesRequest{Cpus: uint32(c), MemoryTotalBytes: h.MemoryTotal + uint64(m-m0)<<20}
	// Onlining is slow under TCG, but the agent answers liveness checks
	// meanwhile: a request like any other.
	err = g.call(octx, request, "bring hot-plugged CPUs and memory online", func(ctx context.Context) error {
		_, err := g.agent.OnlineResources(ctx, want)
		return err
	})
	if err != nil {
		return fmt.Errorf("VM %s: hot-plugged CPUs and memory did not come online: %w", g.ID, err)
	}
	return nil
}
