// Command podvm-bench measures what a podvm guest costs: boot time from
// QEMU's exec to the agent's first answer (median and spread over many
// boots) and the host memory of an idle VM under several settings.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

func main() {
	kernel := flag.String("kernel", "", "guest kernel")
	initramfs := flag.String("initramfs", "", "guest initramfs")
	boots := flag.Int("boots", 20, "boots to time")
	machines := flag.String("machines", "microvm,q35", "machine types to time")
	memory := flag.Bool("memory", true, "measure the memory of an idle VM")
	flag.Parse()
	cfg := vmconfig.Default()
	if *kernel != "" {
		cfg.Hypervisor.Kernel = *kernel
	}
	if *initramfs != "" {
		cfg.Hypervisor.Initramfs = *initramfs
	}
	ctx := context.Background()
	failed := false
	for _, m := range strings.Split(*machines, ",") {
		c := *cfg
		c.Hypervisor.Machine = m
		if err := bootTimes(ctx, &c, *boots); err != nil {
			fmt.Fprintln(os.Stderr, "podvm-bench:", err)
			failed = true
		}
	}
	if *memory {
		if err := memoryTable(ctx, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "podvm-bench:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// bootTimes boots n VMs one after another and prints the distribution.
func bootTimes(ctx context.Context, cfg *vmconfig.Config, n int) error {
	var host, guest []time.Duration
	failures := 0
	var accel string
	for i := 0; i < n; i++ {
		g, err := vm.Boot(ctx, cfg, vm.Options{ID: fmt.Sprintf("podvm-bench-%d", i), Console: func(string) {}})
		if err != nil {
			failures++
			fmt.Fprintf(os.Stderr, "boot %d failed: %v\n", i, err)
			continue
		}
		accel = string(g.Accel.Accel)
		host = append(host, g.BootTime)
		guest = append(guest, g.AgentReady)
		if err := g.Shutdown(ctx); err != nil {
			return err
		}
	}
	fmt.Printf("boot to agent ready, %s, %s, %d vCPU, %d MiB: %d boots, %d failed\n",
		cfg.Hypervisor.Machine, accel, cfg.Hypervisor.VCPUs, cfg.Hypervisor.MemoryMiB, n, failures)
	fmt.Printf("  QEMU exec -> first agent answer: %s\n", harness.Summary(host))
	fmt.Printf("  guest kernel start -> agent serving: %s\n", harness.Summary(guest))
	if failures > 0 {
		return fmt.Errorf("%d of %d boots failed", failures, n)
	}
	return nil
}

// memoryTable boots one VM per setting, lets it settle and reads QEMU's
// smaps_rollup.
func memoryTable(ctx context.Context, base *vmconfig.Config) error {
	type setting struct {
		name      string
		memoryMiB int
		cacheMiB  int
	}
	settings := []setting{
		{"QEMU's default TCG cache, 512 MiB", 512, 0},
		{"TCG cache 32 MiB (podvm default), 512 MiB", 512, 32},
		{"TCG cache 16 MiB, 512 MiB", 512, 16},
		{"TCG cache 32 MiB, 256 MiB", 256, 32},
		{"TCG cache 32 MiB, 2048 MiB", 2048, 32},
	}
	fmt.Println("host memory of an idle VM (QEMU's smaps_rollup, 3 s after the agent answered):")
	fmt.Printf("  %-45s %8s %8s %8s\n", "setting", "RSS MiB", "PSS MiB", "anon MiB")
	for _, s := range settings {
		c := *base
		c.Hypervisor.MemoryMiB = s.memoryMiB
		c.Hypervisor.TCGCacheMiB = s.cacheMiB
		g, err := vm.Boot(ctx, &c, vm.Options{ID: "podvm-bench-mem", Console: func(string) {}})
		if err != nil {
			return err
		}
		time.Sleep(3 * time.Second)
		m, err := harness.ReadMemory(g.VM.PID())
		g.Shutdown(ctx)
		if err != nil {
			return err
		}
		if g.Accel.Accel != "tcg" && s.cacheMiB != 32 {
			continue
		}
		fmt.Printf("  %-45s %8.1f %8.1f %8.1f\n", s.name, m.RSS, m.PSS, m.Anon)
	}
	return nil
}
