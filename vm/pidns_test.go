package vm

import (
	"context"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestSharedPIDNamespaceEndsWithInit: a container without a PID namespace
// of its own (CRI's pod-wide one is the same case) loses everything it
// started when its init exits, as under runc's shim; otherwise a
// background process would hold its output open, and containerd 2.x's
// CRI waits for that output before it finishes a stop.
func TestSharedPIDNamespaceEndsWithInit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := startSpec(ctx, t, "shared-pidns", Streams{Stdout: true}, func(spec *specs.Spec, _ string) {
		var nss []specs.LinuxNamespace
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type != specs.PIDNamespace {
				nss = append(nss, ns)
			}
		}
		spec.Linux.Namespaces = nss
		spec.Process.Args = []string{"sh", "-c", "sleep 1000 & echo started; exec sleep 1000"}
	})
	// One attach reads the whole stream: the first line says the
	// background sleep runs, the end says the output closed.
	started := make(chan struct{})
	var once bool
	ended := make(chan error, 1)
	go func() {
		ended <- g.CopyOutput(ctx, "c1", "", Stdout, writerFunc(func(b []byte) (int, error) {
			if !once {
				once = true
				close(started)
			}
			return len(b), nil
		}))
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("no output from the container")
	}
	if err := g.Signal(ctx, "c1", "", uint32(syscall.SIGKILL), false); err != nil {
		t.Fatal(err)
	}
	if exit, err := g.Wait(ctx, "c1", ""); err != nil || exit.Status != 137 {
		t.Fatalf("wait: %+v, %v", exit, err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the output did not end with the init: the background sleep holds it")
	}
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
}
