package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvm/podvm/guest/initramfs"
	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vmconfig"
)

func boot(t *testing.T, cfg *vmconfig.Config) *Guest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-" + strings.ReplaceAll(t.Name(), "/", "-")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Shutdown(context.Background()) })
	return g
}

func TestBootAndShutdown(t *testing.T) {
	for _, machine := range []string{"microvm", "q35"} {
		t.Run(machine, func(t *testing.T) {
			cfg := harness.VMConfig(t)
			harness.WatchLeaks(t)
			cfg.Hypervisor.Machine = machine
			cfg.Hypervisor.VCPUs = min(2, vmconfig.MaxVCPUs())
			g := boot(t, cfg)
			ctx := context.Background()

			h, err := g.Health(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if h.Uptime <= 0 || h.AgentReady <= 0 || h.AgentReady > h.Uptime {
				t.Errorf("health = %+v", h)
			}
			v, err := g.Version(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(v.KernelRelease, "-podvm") || v.API != "v1" || v.Agent == "" {
				t.Errorf("version = %+v", v)
			}
			if v.CPUs != cfg.Hypervisor.VCPUs {
				t.Errorf("guest sees %d CPUs, want %d", v.CPUs, cfg.Hypervisor.VCPUs)
			}
			if mib := v.MemoryBytes >> 20; mib < uint64(cfg.Hypervisor.MemoryMiB)*8/10 || mib > uint64(cfg.Hypervisor.MemoryMiB) {
				t.Errorf("guest sees %d MiB, configured %d", mib, cfg.Hypervisor.MemoryMiB)
			}
			if g.BootTime <= 0 || g.BootTime > cfg.Timeouts.Boot.Duration {
				t.Errorf("boot time %v", g.BootTime)
			}

			pid := g.VM.PID()
			if err := g.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			// A graceful stop is the guest powering off: QEMU exits 0.
			if err := g.VM.Err(); err != nil {
				t.Errorf("QEMU exit after graceful shutdown: %v", err)
			}
			if err := syscall.Kill(pid, 0); err == nil {
				t.Errorf("QEMU pid %d still exists after Shutdown", pid)
			}
			// Shutdown is idempotent; the agent is gone.
			if err := g.Shutdown(ctx); err != nil {
				t.Errorf("second Shutdown: %v", err)
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := g.Health(cctx); !errors.Is(err, ErrStopped) {
				t.Errorf("a call after shutdown: %v, want ErrStopped", err)
			}
		})
	}
}

func TestKillReported(t *testing.T) {
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	g := boot(t, cfg)
	ctx := context.Background()

	// A call in flight when QEMU dies must fail, not hang.
	callErr := make(chan error, 1)
	go func() {
		for {
			if _, err := g.Health(ctx); err != nil {
				callErr <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(g.VM.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.VM.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("QEMU's exit was not noticed")
	}
	var exit *hypervisor.ExitError
	if err := g.VM.Err(); !errors.As(err, &exit) || exit.Signal != syscall.SIGKILL {
		t.Errorf("exit = %v, want killed by SIGKILL", err)
	} else if !strings.Contains(err.Error(), "signal 9") {
		t.Errorf("exit message %q does not say signal 9", err)
	}
	select {
	case err := <-callErr:
		if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "signal 9") {
			t.Errorf("call in flight: %v, want ErrStopped saying QEMU was killed", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("agent call still hangs after QEMU died")
	}
	if err := g.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown after kill: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	base := harness.VMConfig(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a kernel and not an archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A well-formed archive without /init: the kernel finds nothing to run.
	noInit := filepath.Join(dir, "noinit.cpio")
	writeArchive(t, noInit, initramfs.Entry{Name: "dev", Mode: initramfs.TypeDir | 0o755},
		initramfs.Entry{Name: "dev/console", Mode: initramfs.TypeChar | 0o600, Major: 5, Minor: 1})
	self, _ := os.Executable()
	tests := []struct {
		name string
		edit func(c *vmconfig.Config)
		want []string
	}{
		{"missing qemu", func(c *vmconfig.Config) { c.Hypervisor.Path = "/nonexistent/qemu-system-x86_64" }, []string{"not found", "apt-get install qemu-system-x86"}},
		{"missing kernel", func(c *vmconfig.Config) { c.Hypervisor.Kernel = filepath.Join(dir, "vmlinux") }, []string{"does not exist", "make guest"}},
		{"corrupt kernel", func(c *vmconfig.Config) { c.Hypervisor.Kernel = garbage }, []string{"not an ELF vmlinux"}},
		{"kernel without PVH entry", func(c *vmconfig.Config) { c.Hypervisor.Kernel = self }, []string{"no PVH entry point"}},
		{"missing initramfs", func(c *vmconfig.Config) { c.Hypervisor.Initramfs = filepath.Join(dir, "initramfs.cpio") }, []string{"does not exist"}},
		{"corrupt initramfs", func(c *vmconfig.Config) { c.Hypervisor.Initramfs = garbage }, []string{"not a cpio archive"}},
		{"unknown machine", func(c *vmconfig.Config) { c.Hypervisor.Machine = "pc" }, []string{`"pc" is not a supported machine type`, "microvm"}},
		{"initramfs without init", func(c *vmconfig.Config) { c.Hypervisor.Initramfs = noInit }, []string{"guest stopped before its agent answered", "Kernel panic"}},
		{"agent never answers", func(c *vmconfig.Config) {
			// The agent waits for a port that does not exist.
			c.Hypervisor.KernelParams = "podvm.port=nowhere"
			c.Timeouts.Boot = vmconfig.Duration{Duration: 5 * time.Second}
		}, []string{"did not answer within 5s", "timeouts.boot", `still waiting for virtio-serial port "nowhere"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			harness.WatchLeaks(t)
			cfg := *base
			tt.edit(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			g, err := Boot(ctx, &cfg, Options{ID: "podvm-test-bad"})
			if err == nil {
				g.Shutdown(ctx)
				t.Fatal("Boot succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestQEMUDiesDuringBoot kills QEMU while the guest boots: Boot must say so
// at once instead of waiting for its timeout.
func TestQEMUDiesDuringBoot(t *testing.T) {
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	cfg.Timeouts.Boot = vmconfig.Duration{Duration: time.Minute}
	var started time.Time
	cfg.Hypervisor.KernelParams = "podvm.port=nowhere" // never ready on its own
	done := make(chan error, 1)
	go func() {
		_, err := Boot(context.Background(), cfg, Options{ID: "podvm-test-dies", Console: func(line string) {
			// The first console line proves the guest is booting.
			if started.IsZero() {
				started = time.Now()
				pid := findQEMU(t, "podvm-test-dies")
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "qemu killed by signal 9") || !strings.Contains(err.Error(), "guest stopped before its agent answered") {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Boot still waiting 30 s after QEMU was killed")
	}
}

func findQEMU(t *testing.T, name string) int {
	for _, q := range harness.TakeCensus().QEMU {
		if strings.Contains(q, "-name "+name+" ") {
			var pid int
			if _, err := fmt.Sscan(q, &pid); err == nil {
				return pid
			}
		}
	}
	t.Errorf("QEMU -name %s not found", name)
	return -1
}

func writeArchive(t *testing.T, path string, entries ...initramfs.Entry) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := initramfs.NewWriter(f)
	for _, e := range entries {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
