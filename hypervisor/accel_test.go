package hypervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/test/harness"
)

func testConfig(t *testing.T) Config {
	c := harness.VMConfig(t)
	return Config{
		ID: "podvm-test-" + strings.ReplaceAll(t.Name(), "/", "-"), QEMU: c.Hypervisor.Path, Kernel: c.Hypervisor.Kernel, Initramfs: c.Hypervisor.Initramfs,
		Machine: "microvm", Accel: TCG, CPUs: 1, MemoryMiB: 256, TBSizeMiB: 32, TSCKHz: HostTSCKHz(),
		Ports: []string{agentapi.SerialPortName}, ProbeMarker: agentapi.ProbeMarker,
	}
}

// TestChooseAccel runs the real probe: on a host whose /dev/kvm works it
// must pick KVM, where /dev/kvm is absent or broken (as on the nested
// machines podvm is developed on) TCG, with the reason.
func TestChooseAccel(t *testing.T) {
	base := testConfig(t)
	harness.WatchLeaks(t)
	ctx := context.Background()
	cache := t.TempDir()

	probe := base
	probe.KernelParams = []string{agentapi.ParamProbe + "=1"}
	c, err := ChooseAccel(ctx, "auto", probe, cache)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("auto: %s (%s)", c.Accel, c.Reason)
	_, kvmErr := os.Stat("/dev/kvm")
	switch {
	case kvmErr != nil:
		if c.Accel != TCG || !strings.Contains(c.Reason, "/dev/kvm") {
			t.Errorf("without /dev/kvm: %+v", c)
		}
	case c.Accel == TCG:
		if !strings.Contains(c.Reason, "probe boot failed") && !strings.Contains(c.Reason, "cannot be opened") {
			t.Errorf("TCG despite /dev/kvm, but the reason does not say why: %q", c.Reason)
		}
	case c.Accel == KVM:
		// The probe said KVM works: a real boot under KVM must too.
		if err := ProbeKVM(ctx, probe); err != nil {
			t.Errorf("probe chose KVM, but a second probe boot failed: %v", err)
		}
	}
	if kvmErr == nil {
		// The answer is cached: the second call is instant and the same.
		start := time.Now()
		again, err := ChooseAccel(ctx, "auto", probe, cache)
		if err != nil || !again.Cached || again.Accel != c.Accel || time.Since(start) > time.Second {
			t.Errorf("second call: %+v, %v after %v", again, err, time.Since(start))
		}
		if _, err := os.Stat(filepath.Join(cache, "accel.json")); err != nil {
			t.Errorf("no cache file: %v", err)
		}
	}

	if c, err := ChooseAccel(ctx, "tcg", base, cache); err != nil || c.Accel != TCG {
		t.Errorf("forced tcg: %+v, %v", c, err)
	}
	if _, err := ChooseAccel(ctx, "hvf", base, cache); err == nil || !strings.Contains(err.Error(), `"hvf"`) {
		t.Errorf("unknown accelerator: %v", err)
	}
	if kvmErr != nil {
		if _, err := ChooseAccel(ctx, "kvm", base, cache); err == nil {
			t.Error("forced kvm without /dev/kvm accepted")
		}
	}
}

// TestStartStop exercises the QEMU process without the agent: QMP answers,
// Stop without a cooperating guest falls back to QMP quit.
func TestStartStop(t *testing.T) {
	cfg := testConfig(t)
	harness.WatchLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := vm.QMP().QueryStatus(ctx)
	if err != nil || !st.Running || st.Status != "running" {
		t.Errorf("status = %+v, %v", st, err)
	}
	// Under TCG, QEMU runs without transparent huge pages, which would
	// back its translation cache 2 MiB at a time.
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", vm.PID())); err != nil || !strings.Contains(string(status), "THP_enabled:\t0") {
		t.Errorf("QEMU under TCG has transparent huge pages (%v):\n%s", err, status)
	}
	if v := vm.QMP().Version(); v.Major < 7 {
		t.Errorf("QEMU version %v", v)
	}
	// Pause and resume the vCPUs.
	if err := vm.QMP().Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := vm.QMP().QueryStatus(ctx); st.Status != "paused" {
		t.Errorf("after stop: %+v", st)
	}
	if err := vm.QMP().Cont(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := vm.Port(agentapi.SerialPortName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Port(agentapi.SerialPortName); err == nil {
		t.Error("the serial channel was handed out twice")
	}
	start := time.Now()
	if err := vm.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("Stop took %v; QMP quit should be quick", time.Since(start))
	}
	if err := vm.Err(); err != nil {
		t.Errorf("QEMU told to quit exited with %v", err)
	}
	// The host end of the agent channel is closed with QEMU.
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("agent channel still readable after QEMU exited")
	}
	if err := vm.Stop(ctx, 0); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}
