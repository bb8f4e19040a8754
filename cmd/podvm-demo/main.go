// Command podvm-demo shows the furthest podvm gets on this machine: first a
// VM whose agent answers, then containers run through a private containerd
// with `ctr run --runtime io.containerd.podvm.v2`, beside runc.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

func main() {
	kernel := flag.String("kernel", "", "guest kernel (default: from the configuration)")
	initramfs := flag.String("initramfs", "", "guest initramfs (default: from the configuration)")
	debug := flag.Bool("debug", false, "show the guest console and verbose logs")
	flag.Parse()
	if err := run(*kernel, *initramfs, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "podvm-demo:", err)
		os.Exit(1)
	}
}

func run(kernel, initramfs string, debug bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
	defer stop()
	if debug {
		_ = log.SetLevel("debug")
	}
	cfg, err := vmconfig.Load()
	if err != nil {
		return err
	}
	if kernel != "" {
		cfg.Hypervisor.Kernel = kernel
	}
	if initramfs != "" {
		cfg.Hypervisor.Initramfs = initramfs
	}
	cfg.Debug = cfg.Debug || debug

	fmt.Println("== 1. a VM whose agent answers")
	g, err := vm.Boot(ctx, cfg, vm.Options{ID: "podvm-demo"})
	if err != nil {
		return err
	}
	defer g.Shutdown(context.Background())
	v, err := g.Agent.Version(ctx, &agentapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("agent version: %w", err)
	}
	fmt.Printf("accelerator:   %s (%s)\n", g.Accel.Accel, g.Accel.Reason)
	fmt.Printf("qemu:          pid %d, QEMU %s, machine %s\n", g.VM.PID(), g.VM.QMP().Version(), cfg.Hypervisor.Machine)
	fmt.Printf("guest kernel:  %s (%s)\n", v.KernelRelease, v.KernelVersion)
	fmt.Printf("guest agent:   %s, api %s, %s, %d vCPU, %d MiB\n", v.AgentVersion, v.ApiVersion, v.GoVersion, v.Cpus, v.MemoryBytes>>20)
	fmt.Printf("boot time:     %v from QEMU exec to the agent's first answer (guest: kernel start to agent serving %v)\n",
		g.BootTime.Round(time.Millisecond), g.AgentReady.Round(time.Millisecond))
	start := time.Now()
	if err := g.Shutdown(ctx); err != nil {
		return err
	}
	fmt.Printf("shutdown:      %v, QEMU exited cleanly\n", time.Since(start).Round(time.Millisecond))

	fmt.Println()
	fmt.Println("== 2. containers through a private containerd: ctr run --runtime io.containerd.podvm.v2")
	return containers(ctx, cfg)
}

// containers runs the same commands under runc and podvm through a private
// containerd (in a network namespace of its own) and shows the difference.
func containers(ctx context.Context, cfg *vmconfig.Config) error {
	if cfg.Hypervisor.Kernel != "" {
		os.Setenv("PODVM_KERNEL", cfg.Hypervisor.Kernel)
		os.Setenv("PODVM_INITRAMFS", cfg.Hypervisor.Initramfs)
	}
	ctd, err := harness.NewContainerd("")
	if ctd != nil {
		defer func() {
			for _, leak := range ctd.Stop() {
				fmt.Println("leak:", leak)
			}
			ctd.Remove()
		}()
	}
	if err != nil {
		return err
	}
	if err := ctd.Import(); err != nil {
		return err
	}
	fmt.Printf("containerd:    private, socket %s, network namespace %s\n", ctd.Address, ctd.NetNS)
	cmd := []string{"sh", "-c", "echo hello from $(uname -r) on $(hostname); id; exit 3"}
	for i, rt := range []string{"io.containerd.runc.v2", "io.containerd.podvm.v2"} {
		start := time.Now()
		out, errOut, err := ctd.Ctr(ctx, append([]string{"run", "--runtime", rt, "--rm", harness.BusyboxImage, fmt.Sprintf("demo-%d", i)}, cmd...)...)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			return fmt.Errorf("ctr run under %s: %v: %s", rt, err, errOut)
		}
		fmt.Printf("\n$ ctr run --runtime %s --rm %s demo-%d sh -c '...'\n%s%s(exit %d, %v)\n", rt, harness.BusyboxImage, i, out, errOut, code, time.Since(start).Round(time.Millisecond))
	}
	return nil
}
