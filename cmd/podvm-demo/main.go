// Command podvm-demo shows the furthest podvm gets on this machine: first a
// VM whose agent answers, then containers run through a private containerd
// with `ctr run --runtime io.containerd.podvm.v2`, beside runc, then a pod
// through CRI.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/metrics"
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
	v, err := g.Version(ctx)
	if err != nil {
		return fmt.Errorf("agent version: %w", err)
	}
	fmt.Printf("accelerator:   %s (%s)\n", g.Accel.Accel, g.Accel.Reason)
	fmt.Printf("qemu:          pid %d, QEMU %s, machine %s\n", g.VM.PID(), g.VM.QMP().Version(), cfg.Hypervisor.Machine)
	fmt.Printf("guest kernel:  %s (%s)\n", v.KernelRelease, v.KernelVersion)
	fmt.Printf("guest agent:   %s, api %s, %s, %d vCPU, %d MiB\n", v.Agent, v.API, v.Go, v.CPUs, v.MemoryBytes>>20)
	fmt.Printf("boot time:     %v from QEMU exec to the agent's first answer (guest: kernel start to agent serving %v)\n",
		g.BootTime.Round(time.Millisecond), g.AgentReady.Round(time.Millisecond))
	if g.Template != "" {
		tm := g.Timings
		fmt.Printf("               restored from VM template %s (finding or building it %v; QEMU %v, restore %v, agent %v)\n",
			g.Template, tm.Template.Round(time.Millisecond), tm.QEMU.Round(time.Millisecond), tm.Restore.Round(time.Millisecond), tm.Agent.Round(time.Millisecond))
	}
	start := time.Now()
	if err := g.Shutdown(ctx); err != nil {
		return err
	}
	fmt.Printf("shutdown:      %v, QEMU exited cleanly\n", time.Since(start).Round(time.Millisecond))

	fmt.Println()
	fmt.Println("== 2. containers through a private containerd: ctr run --runtime io.containerd.podvm.v2")
	if err := containers(ctx, cfg); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println("== 3. a pod through CRI (crictl runp --runtime podvm), on a CNI bridge")
	return pod(ctx)
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
		defer teardown(ctd)
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

// pod runs a Kubernetes-style pod through containerd's CRI: a server
// container and a client container that reaches it over localhost, both in
// one VM, and the server reached from outside the pod over the CNI bridge.
func pod(ctx context.Context) error {
	ctd, err := harness.NewCRI()
	if ctd != nil {
		defer teardown(ctd)
	}
	if err != nil {
		return err
	}
	crictl := func(args ...string) (string, error) {
		out, errOut, err := ctd.Crictl(ctx, args...)
		if err != nil {
			return "", fmt.Errorf("crictl %v: %v: %s", args, err, errOut)
		}
		return strings.TrimSpace(out), nil
	}
	dir := ctd.CNIDir
	podCfg, _ := harness.WriteJSON(dir, "pod.json", map[string]any{
		"metadata": map[string]any{"name": "demo", "namespace": "default", "uid": "demo"}, "hostname": "demo-pod",
		"log_directory": dir, "linux": map[string]any{}})
	start := time.Now()
	pod, err := crictl("runp", "--runtime", "podvm", podCfg)
	if err != nil {
		return err
	}
	var st struct {
		Status struct {
			Network struct{ IP string } `json:"network"`
		} `json:"status"`
	}
	out, _ := crictl("inspectp", "-o", "json", pod)
	json.Unmarshal([]byte(out), &st)
	fmt.Printf("pod:           %s, IP %s (CNI bridge), runp took %v\n", pod[:12], st.Status.Network.IP, time.Since(start).Round(time.Millisecond))
	mk := func(name string, cmd ...string) (string, error) {
		cfg, _ := harness.WriteJSON(dir, name+".json", map[string]any{
			"metadata": map[string]any{"name": name}, "image": map[string]any{"image": harness.BusyboxImage},
			"command": cmd, "log_path": name + ".log", "linux": map[string]any{}})
		id, err := crictl("create", pod, cfg, podCfg)
		if err != nil {
			return "", err
		}
		_, err = crictl("start", id)
		return id, err
	}
	server, err := mk("server", "nc", "-ll", "-p", "8080", "-e", "sh", "-c", "echo hello from $(hostname), kernel $(uname -r)")
	if err != nil {
		return err
	}
	client, err := mk("client", "sh", "-c", "until nc -w 2 127.0.0.1 8080; do sleep 0.2; done; sleep 100000")
	if err != nil {
		return err
	}
	var logs string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if logs, _ = crictl("logs", client); logs != "" {
			break
		}
	}
	fmt.Printf("client -> server over localhost in the pod: %s\n", logs)
	from, _ := exec.Command("nsenter", "--net=/var/run/netns/"+ctd.NetNS, harness.Busybox, "nc", "-w", "5", st.Status.Network.IP, "8080").CombinedOutput()
	fmt.Printf("host side of the bridge -> server:            %s", from)
	qemus := 0
	for _, q := range harness.TakeCensus().QEMU {
		if strings.Contains(q, "-name "+pod+" ") {
			qemus++
		}
	}
	fmt.Printf("containers %s and %s share %d VM (QEMU process)\n", server[:12], client[:12], qemus)
	printMetrics(ctd, pod)
	if _, err := crictl("stopp", pod); err != nil {
		return err
	}
	_, err = crictl("rmp", pod)
	return err
}

// printMetrics shows what an operator's node exporter would scrape for the
// pod, through `containerd-shim-podvm-v2 metrics`.
func printMetrics(ctd *harness.Containerd, pod string) {
	out, err := exec.Command(harness.ShimBinary(), "metrics", "--state-dir", filepath.Join(ctd.Dir, "podvm")).Output()
	if err != nil {
		fmt.Println("metrics:", err)
		return
	}
	fams, err := metrics.Parse(bytes.NewReader(out))
	if err != nil {
		fmt.Println("metrics:", err)
		return
	}
	value := func(name string) float64 {
		v, _ := metrics.Value(fams, name, "sandbox_id", pod)
		return v
	}
	fmt.Printf("metrics:       boot %.2f s, QEMU RSS %d MiB, guest %d MiB (%d MiB available), %v containers\n",
		value("podvm_vm_boot_seconds"), int(value("podvm_qemu_rss_bytes"))>>20,
		int(value("podvm_guest_memory_total_bytes"))>>20, int(value("podvm_guest_memory_available_bytes"))>>20, value("podvm_containers"))
}

// teardown stops a private containerd and says what it left behind (which
// would be a podvm bug).
func teardown(ctd *harness.Containerd) {
	for _, leak := range ctd.Stop() {
		fmt.Println("leak:", leak)
	}
	ctd.Remove()
}
