package vm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vmconfig"
)

// TestGrow hot-plugs a vCPU and memory into a running q35 guest over QMP
// and checks the guest has them online; microvm refuses, saying what to
// use instead.
func TestGrow(t *testing.T) {
	harness.Need(t, vmconfig.MaxVCPUs() >= 2, "needs 2 host CPUs")
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	cfg.Hypervisor.Machine = "q35"
	cfg.Hypervisor.MaxMemoryMiB = 2048
	g := boot(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before, err := g.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.CPUsOnline != 1 {
		t.Fatalf("guest boots with %d CPUs online, want 1", before.CPUsOnline)
	}
	// 200 MiB more is rounded up to a whole 128 MiB memory block.
	if err := g.Grow(ctx, 2, cfg.Hypervisor.MemoryMiB+200); err != nil {
		t.Fatal(err)
	}
	if c, m := g.VM.Resources(); c != 2 || m != cfg.Hypervisor.MemoryMiB+256 {
		t.Errorf("VM resources after growing: %d vCPUs, %d MiB; want 2, %d", c, m, cfg.Hypervisor.MemoryMiB+256)
	}
	after, err := g.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.CPUsOnline != 2 {
		t.Errorf("guest has %d CPUs online after the hot-plug, want 2", after.CPUsOnline)
	}
	if grown := int64(after.MemoryTotal) - int64(before.MemoryTotal); grown != 256<<20 {
		t.Errorf("guest MemTotal grew by %d MiB, want 256", grown>>20)
	}
	// A second growth takes another DIMM; asking for less is a no-op.
	if err := g.Grow(ctx, 1, cfg.Hypervisor.MemoryMiB+384); err != nil {
		t.Fatal(err)
	}
	if _, m := g.VM.Resources(); m != cfg.Hypervisor.MemoryMiB+384 {
		t.Errorf("memory after a second growth: %d MiB", m)
	}
	err = g.Grow(ctx, 1, 4096)
	if err == nil || !strings.Contains(err.Error(), "max_memory_mib") {
		t.Errorf("growing past max_memory_mib: %v", err)
	}
	err = g.Grow(ctx, vmconfig.MaxVCPUs()+1, 0)
	if err == nil || !strings.Contains(err.Error(), "host's CPUs") {
		t.Errorf("growing past the host's CPUs: %v", err)
	}

	// Kata's way, device_add of a vCPU, which KVM hosts use. Under TCG it
	// works only while QEMU's translation cache has a free region, as in
	// a guest that has just booted.
	t.Run("qmp", func(t *testing.T) {
		cfg := harness.VMConfig(t)
		cfg.Hypervisor.Machine = "q35"
		g, err := Boot(ctx, cfg, Options{ID: "podvm-test-grow-qmp", CPUPlug: hypervisor.PlugQMP})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Shutdown(context.Background())
		if err := g.Grow(ctx, 2, 0); err != nil {
			t.Fatal(err)
		}
		if h, err := g.Health(ctx); err != nil || h.CPUsOnline != 2 {
			t.Errorf("after device_add of a vCPU: %v CPUs online, %v", h.CPUsOnline, err)
		}
	})

	t.Run("microvm", func(t *testing.T) {
		cfg := harness.VMConfig(t)
		cfg.Hypervisor.Machine = "microvm"
		g := boot(t, cfg)
		err := g.Grow(ctx, 1, cfg.Hypervisor.MemoryMiB+128)
		if !errors.Is(err, hypervisor.ErrNoResize) || !strings.Contains(err.Error(), `machine = "q35"`) {
			t.Errorf("growing a microvm: %v", err)
		}
		if g.VM.CanResize() {
			t.Error("microvm says it can resize")
		}
	})
}
