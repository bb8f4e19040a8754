// Package bench holds podvm's benchmarks, run by `make bench`: each prints
// medians and spreads, and runc's figures beside podvm's where runc does
// the same thing.
package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

// BenchmarkBoot times QEMU's exec to the agent's first answer: cold boots
// of both machines, and restores from a VM template.
func BenchmarkBoot(b *testing.B) {
	cfg := harness.VMConfig(b)
	cfg.Template.Dir = filepath.Join(b.TempDir(), "templates")
	ctx := context.Background()
	for _, run := range []struct {
		machine  string
		template bool
	}{{"microvm", false}, {"microvm", true}, {"q35", false}, {"q35", true}} {
		c := *cfg
		c.Hypervisor.Machine = run.machine
		c.Template.Enabled = run.template
		if run.template {
			// The template is built once, outside the samples.
			if _, err := vm.PrepareTemplate(ctx, &c, vm.Options{ID: "podvm-bench"}); err != nil {
				b.Fatal(err)
			}
		}
		n := harness.Samples(20)
		var host, guest, restore, agent []time.Duration
		var accel string
		for i := 0; i < n; i++ {
			g, err := vm.Boot(ctx, &c, vm.Options{ID: fmt.Sprintf("podvm-bench-%d", i), Console: func(string) {}})
			if err != nil {
				b.Fatalf("boot %d: %v", i, err)
			}
			if run.template && g.Template == "" {
				b.Fatalf("boot %d: not restored from the template", i)
			}
			accel = string(g.Accel.Accel)
			host = append(host, g.BootTime)
			guest = append(guest, g.AgentReady)
			restore = append(restore, g.Timings.Restore)
			agent = append(agent, g.Timings.Agent)
			if err := g.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
		}
		how := "cold boot"
		if run.template {
			how = "restored from a template"
		}
		fmt.Printf("%s to agent ready, %s, %s, %d vCPU, %d MiB, %d VMs:\n", how, run.machine, accel, c.Hypervisor.VCPUs, c.Hypervisor.MemoryMiB, n)
		fmt.Printf("  QEMU exec -> first agent answer:      %s\n", harness.Summary(host))
		if run.template {
			fmt.Printf("    of which restore + cont:            %s\n", harness.Summary(restore))
			fmt.Printf("    of which boot record -> answer:     %s\n", harness.Summary(agent))
		} else {
			// CLOCK_BOOTTIME: until the kernel switches to the TSC
			// clocksource, timekeeping runs on jiffies, which lose ticks
			// while TCG translates (~90 ms of a cold boot here).
			fmt.Printf("  guest clock when the agent serves:    %s (a lower bound of the guest's time)\n", harness.Summary(guest))
		}
	}
}

// BenchmarkGrow times what an Update that outgrows a q35 VM costs: one
// vCPU and 1 GiB more, from the first QMP command to the guest having them
// online.
func BenchmarkGrow(b *testing.B) {
	cfg := harness.VMConfig(b)
	cfg.Hypervisor.Machine = "q35"
	if vmconfig.MaxVCPUs() < cfg.Hypervisor.VCPUs+1 {
		b.Skip("needs a host CPU more than the guest's")
	}
	ctx := context.Background()
	n := harness.Samples(10)
	var grow []time.Duration
	for i := 0; i < n; i++ {
		g, err := vm.Boot(ctx, cfg, vm.Options{ID: fmt.Sprintf("podvm-bench-grow-%d", i), Console: func(string) {}})
		if err != nil {
			b.Fatalf("boot %d: %v", i, err)
		}
		start := time.Now()
		err = g.Grow(ctx, cfg.Hypervisor.VCPUs+1, cfg.Hypervisor.MemoryMiB+1024)
		grow = append(grow, time.Since(start))
		if serr := g.Shutdown(ctx); err == nil {
			err = serr
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	fmt.Printf("grow a q35 VM by 1 vCPU and 1 GiB until the guest has them online, %d VMs:\n  %s\n", n, harness.Summary(grow))
}

// BenchmarkIdleMemory reads QEMU's memory after the guests settled, for
// several guest sizes and TCG translation cache caps, and for ten VMs at
// once booted or restored from one template (whose pages they share).
func BenchmarkIdleMemory(b *testing.B) {
	base := harness.VMConfig(b)
	ctx := context.Background()
	base.Template.Dir = filepath.Join(b.TempDir(), "templates")
	settings := []struct {
		name            string
		memory, tbCache int
		template        bool
		vms             int
	}{
		{"QEMU's default TCG cache, 512 MiB guest", 512, 0, false, 1},
		{"TCG cache 32 MiB (default), 512 MiB guest", 512, 32, false, 1},
		{"TCG cache 16 MiB, 512 MiB guest", 512, 16, false, 1},
		{"TCG cache 32 MiB, 256 MiB guest", 256, 32, false, 1},
		{"TCG cache 32 MiB, 2048 MiB guest", 2048, 32, false, 1},
		{"defaults, booted, 10 VMs", 512, 32, false, 10},
		{"defaults, restored from a template, 1 VM", 512, 32, true, 1},
		{"defaults, restored from a template, 10 VMs", 512, 32, true, 10},
	}
	fmt.Println("host memory of idle VMs (QEMU's smaps_rollup 3 s after the last agent answered; per VM):")
	fmt.Printf("  %-45s %8s %8s %8s\n", "setting", "RSS MiB", "PSS MiB", "anon MiB")
	for _, s := range settings {
		c := *base
		c.Hypervisor.MemoryMiB, c.Hypervisor.TCGCacheMiB = s.memory, s.tbCache
		c.Template.Enabled = s.template
		var gs []*vm.Guest
		for i := 0; i < s.vms; i++ {
			g, err := vm.Boot(ctx, &c, vm.Options{ID: fmt.Sprintf("podvm-bench-mem-%d", i), Console: func(string) {}})
			if err != nil {
				b.Fatal(err)
			}
			gs = append(gs, g)
		}
		time.Sleep(3 * time.Second)
		var sum harness.Memory
		var rerr error
		for _, g := range gs {
			m, err := harness.ReadMemory(g.VM.PID())
			if err != nil {
				rerr = err
			}
			sum = sum.Add(m)
		}
		for _, g := range gs {
			g.Shutdown(ctx)
		}
		if rerr != nil {
			b.Fatal(rerr)
		}
		n := float64(len(gs))
		fmt.Printf("  %-45s %8.1f %8.1f %8.1f\n", s.name, sum.RSS/n, sum.PSS/n, sum.Anon/n)
	}
}
