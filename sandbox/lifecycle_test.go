package sandbox

import (
	"context"
	"testing"

	"github.com/containerd/containerd/errdefs"

	"github.com/podvm/podvm/vmconfig"
)

// TestLifecycle walks the pod lifecycle's table: every phase's allowed
// successors succeed, every other one is refused.
func TestLifecycle(t *testing.T) {
	all := []phase{phaseNew, phaseBooting, phaseRunning, phaseExited, phaseStopping, phaseStopped}
	allowed := map[[2]phase]bool{
		{phaseNew, phaseBooting}: true, {phaseNew, phaseStopping}: true,
		{phaseBooting, phaseRunning}: true, {phaseBooting, phaseNew}: true,
		{phaseRunning, phaseExited}: true, {phaseRunning, phaseStopping}: true,
		{phaseExited, phaseStopping}:  true,
		{phaseStopping, phaseStopped}: true,
	}
	for _, from := range all {
		for _, to := range all {
			got, err := from.to(to)
			switch {
			case allowed[[2]phase{from, to}] && (err != nil || got != to):
				t.Errorf("%v -> %v refused: %v", from, to, err)
			case !allowed[[2]phase{from, to}] && (err == nil || got != from):
				t.Errorf("%v -> %v allowed", from, to)
			}
		}
	}
}

// TestPodWithoutVM drives a pod that never boots: configuration settles
// once, a stopped pod stays stopped (and stopping again is harmless), and
// nothing boots after a stop.
func TestPodWithoutVM(t *testing.T) {
	cfg := vmconfig.Default()
	cfg.StateDir = t.TempDir()
	sb := New(context.Background(), "p1", "default", cfg, nil)
	other := vmconfig.Default()
	other.StateDir = cfg.StateDir
	other.Hypervisor.VCPUs = 1
	if err := sb.Configure(other, map[string]string{"io.podvm.config.hypervisor.memory_mib": "768"}); err != nil {
		t.Fatal(err)
	}
	if got := sb.config().Hypervisor.MemoryMiB; got != 768 {
		t.Errorf("memory after Configure: %d", got)
	}
	// Settled: a second Configure changes nothing.
	if err := sb.Configure(other, map[string]string{"io.podvm.config.hypervisor.memory_mib": "1024"}); err != nil || sb.config().Hypervisor.MemoryMiB != 768 {
		t.Errorf("second Configure: %v, memory %d", err, sb.config().Hypervisor.MemoryMiB)
	}
	for i := 0; i < 2; i++ {
		if err := sb.Stop(context.Background()); err != nil {
			t.Fatalf("stop %d: %v", i, err)
		}
	}
	if sb.phase != phaseStopped {
		t.Errorf("phase after stop: %v", sb.phase)
	}
	if err := sb.Boot(context.Background(), nil); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("boot after stop: %v, want FailedPrecondition", err)
	}
	if sb.Guest() != nil {
		t.Error("a stopped pod has a guest")
	}
}
