package vm

import (
	"context"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestGuestOOMKill: a process the guest kernel OOM-kills exits 137 with
// the kill already counted in its exit, and WaitOOM reports the same kill
// with the same count, so the host reports it once, before the exit,
// whichever answer arrives first (an exit that raced ahead used to let a
// deleted container's kill go unreported).
func TestGuestOOMKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	limit := int64(32 << 20)
	g := startSpec(ctx, t, "oom", Streams{}, func(spec *specs.Spec, _ string) {
		spec.Process.Args = []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"}
		spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
	})
	exit, err := g.Wait(ctx, "c1", "")
	if err != nil || exit != (Exit{Status: 137, OOMKills: 1}) {
		t.Fatalf("wait = %+v, %v; want exit 137 with one OOM kill", exit, err)
	}
	kill, err := g.WaitOOM(ctx)
	if err != nil || kill != (OOMKill{ContainerID: "c1", Kills: 1}) {
		t.Errorf("WaitOOM = %+v, %v; want one kill in c1", kill, err)
	}
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
}
