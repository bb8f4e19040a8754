package vm

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/test/harness"
)

// TestGuestOutputFlow checks the stdio port on a real guest: a reader
// that stops taking stdout holds up that stream only (stderr keeps
// flowing, the host buffers at most the stream's window, the process
// waits), and once it reads again every byte arrives in order.
func TestGuestOutputFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const lines = 1000000 // 6.9 MB, several windows
	g := startBusybox(ctx, t, "output", Streams{Stdout: true, Stderr: true},
		"sh", "-c", "seq 1 "+strconv.Itoa(lines)+" & exec >/dev/null; while :; do echo tick >&2; sleep 0.1; done")

	// stdout: the first write blocks until released.
	release := make(chan struct{})
	var stdout bytes.Buffer
	first := make(chan struct{})
	var once sync.Once
	stdoutDone := make(chan error, 1)
	go func() {
		stdoutDone <- g.CopyOutput(ctx, "c1", "", Stdout, writerFunc(func(b []byte) (int, error) {
			once.Do(func() { close(first) })
			<-release
			return stdout.Write(b)
		}))
	}()
	ticks := make(chan struct{}, 1000)
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	go g.CopyOutput(sctx, "c1", "", Stderr, writerFunc(func(b []byte) (int, error) {
		for i := 0; i < strings.Count(string(b), "tick"); i++ {
			ticks <- struct{}{}
		}
		return len(b), nil
	}))
	select {
	case <-first:
	case <-ctx.Done():
		t.Fatal("no stdout")
	}
	// While stdout is held up, stderr flows.
	for i := 0; i < 10; i++ {
		select {
		case <-ticks:
		case <-time.After(20 * time.Second):
			t.Fatalf("stderr stopped while stdout was held up (%d ticks)", i)
		}
	}
	if held := heldOutput(g); held > outputWindow {
		t.Errorf("the host holds %d bytes of a stream, more than the window (%d)", held, outputWindow)
	} else {
		t.Logf("held up: the host holds %d bytes of stdout (window %d)", held, outputWindow)
	}
	select {
	case err := <-stdoutDone:
		t.Fatalf("stdout ended while held up: %v", err)
	default:
	}
	close(release)
	select {
	case err := <-stdoutDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("stdout did not end")
	}
	var want strings.Builder
	for i := 1; i <= lines; i++ {
		want.WriteString(strconv.Itoa(i))
		want.WriteByte('\n')
	}
	if got := stdout.String(); got != want.String() {
		t.Errorf("stdout: %d bytes, want %d in order (first difference at %d)", len(got), want.Len(), firstDiff(got, want.String()))
	}
	if err := g.Signal(ctx, "c1", "", 9, true); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Wait(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
}

// startBusybox boots a VM (podvm-test-name) and starts container c1 in it,
// a busybox running args with the given streams; the VM goes when the test
// ends, and the test fails if anything is left.
func startBusybox(ctx context.Context, t *testing.T, name string, streams Streams, args ...string) *Guest {
	t.Helper()
	return startSpec(ctx, t, name, streams, func(spec *specs.Spec, _ string) { spec.Process.Args = args })
}

// startSpec is startBusybox with the spec as edit leaves it; edit may also
// add files to the container's rootfs (its path on the host).
func startSpec(ctx context.Context, t *testing.T, name string, streams Streams, edit func(spec *specs.Spec, rootfs string)) *Guest {
	t.Helper()
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	share := t.TempDir()
	if err := harness.BusyboxRootfs(filepath.Join(share, "c1", "rootfs")); err != nil {
		t.Fatal(err)
	}
	g := bootShared(ctx, t, cfg, name, share)
	spec := specconv.Example()
	spec.Root.Path = "/run/podvm/shared/c1/rootfs"
	spec.Root.Readonly = false
	spec.Process.Terminal = false
	edit(spec, filepath.Join(share, "c1", "rootfs"))
	b, _ := json.Marshal(spec)
	if _, err := g.CreateContainer(ctx, Container{ID: "c1", Spec: b, Storages: []Storage{shareStorage}, Streams: streams}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.StartProcess(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	return g
}

// heldOutput is the most any one stream holds on the host, not yet
// written out (the window bounds each stream, not their sum).
func heldOutput(g *Guest) int {
	g.out.mu.Lock()
	defer g.out.mu.Unlock()
	most := 0
	for _, s := range g.out.streams {
		n := 0
		for _, c := range s.chunks {
			n += len(c)
		}
		most = max(most, n)
	}
	return most
}

func firstDiff(a, b string) int {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestGuestInputFlow sends 8 MiB to a process that reads only after a
// while: the copy waits (the agent buffers at most the window), then every
// byte arrives in order, and EOF after them.
func TestGuestInputFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g := startBusybox(ctx, t, "input", Streams{Stdin: true, Stdout: true}, "sh", "-c", "sleep 3; md5sum")
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	copied := make(chan error, 1)
	go func() { copied <- g.CopyInput(ctx, "c1", "", bytes.NewReader(data)) }()
	select {
	case err := <-copied:
		t.Fatalf("8 MiB of stdin taken before the process read any (%v)", err)
	case <-time.After(1500 * time.Millisecond):
	}
	out := readAll(ctx, t, g, "c1", "", Stdout)
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%x  -\n", md5.Sum(data)); out != want {
		t.Errorf("md5sum of stdin: %q, want %q", out, want)
	}
	if exit, err := g.Wait(ctx, "c1", ""); err != nil || exit.Status != 0 {
		t.Errorf("wait: %d, %v", exit.Status, err)
	}
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
}
