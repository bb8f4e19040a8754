package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/test/harness"
)

var shareStorage = &agentapi.Storage{
	Source: "podvm", Target: "/run/podvm/shared", Fstype: "9p",
	Options: []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"},
}

// readAll drains one output stream of a guest process.
func readAll(ctx context.Context, t *testing.T, g *Guest, id, exec string, stream agentapi.ReadOutputRequest_Stream) string {
	var buf bytes.Buffer
	for {
		r, err := g.Stdio.ReadOutput(ctx, &agentapi.ReadOutputRequest{ContainerId: id, ExecId: exec, Stream: stream})
		if err != nil {
			t.Errorf("read %v: %v", stream, err)
			return buf.String()
		}
		buf.Write(r.Data)
		if r.Eof {
			return buf.String()
		}
	}
}

// TestGuestContainer drives the agent's container API directly: a busybox
// container over 9p, its output and exit code, an exec, a missing binary.
func TestGuestContainer(t *testing.T) {
	cfg := harness.VMConfig(t)
	cfg.Debug = os.Getenv("PODVM_TEST_DEBUG") != ""
	harness.WatchLeaks(t)
	share := t.TempDir()
	rootfs := filepath.Join(share, "c1", "rootfs")
	if err := harness.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-container", Shares: []hypervisor.Share{{Tag: "podvm", Path: share}},
		Console: func(l string) {
			if cfg.Debug {
				t.Log(l)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())

	spec := specconv.Example()
	spec.Root.Path = "/run/podvm/shared/c1/rootfs"
	spec.Root.Readonly = false
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sh", "-c", "echo hello from $(uname -r); echo oops >&2; read line; echo got $line; exit 3"}
	b, _ := json.Marshal(spec)
	start := time.Now()
	created, err := g.Containers.CreateContainer(ctx, &agentapi.CreateContainerRequest{
		ContainerId: "c1", Spec: b, Storages: []*agentapi.Storage{shareStorage},
		Stdio: &agentapi.StdioConfig{Stdin: true, Stdout: true, Stderr: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.Pid == 0 {
		t.Error("no pid")
	}
	t.Logf("created at %v", time.Since(start))
	if _, err := g.Containers.StartProcess(ctx, &agentapi.ProcessRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("started at %v", time.Since(start))
	if _, err := g.Stdio.WriteStdin(ctx, &agentapi.WriteStdinRequest{ContainerId: "c1", Data: []byte("line\n")}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan string)
	go func() { errc <- readAll(ctx, t, g, "c1", "", agentapi.ReadOutputRequest_STDERR) }()
	stdout := readAll(ctx, t, g, "c1", "", agentapi.ReadOutputRequest_STDOUT)
	if want := "hello from " + "6.1"; !strings.HasPrefix(stdout, want) || !strings.Contains(stdout, "-podvm\ngot line\n") {
		t.Errorf("stdout = %q", stdout)
	}
	if stderr := <-errc; stderr != "oops\n" {
		t.Errorf("stderr = %q", stderr)
	}
	w, err := g.Containers.WaitProcess(ctx, &agentapi.ProcessRequest{ContainerId: "c1"})
	if err != nil || w.ExitStatus != 3 {
		t.Fatalf("wait = %+v, %v", w, err)
	}
	if _, err := g.Containers.DeleteContainer(ctx, &agentapi.ContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rootfs); err != nil {
		t.Fatal(err)
	}
}

// TestGuestExec: exec processes, including one whose binary is missing,
// which must fail at once with runc's words.
func TestGuestExec(t *testing.T) {
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	share := t.TempDir()
	if err := harness.BusyboxRootfs(filepath.Join(share, "c1", "rootfs")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-exec", Shares: []hypervisor.Share{{Tag: "podvm", Path: share}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	spec := specconv.Example()
	spec.Root.Path = "/run/podvm/shared/c1/rootfs"
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sleep", "1000"}
	b, _ := json.Marshal(spec)
	if _, err := g.Containers.CreateContainer(ctx, &agentapi.CreateContainerRequest{ContainerId: "c1", Spec: b, Storages: []*agentapi.Storage{shareStorage}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Containers.StartProcess(ctx, &agentapi.ProcessRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	exec := func(id string, args ...string) error {
		p := *spec.Process
		p.Args = args
		pb, _ := json.Marshal(p)
		if _, err := g.Containers.ExecProcess(ctx, &agentapi.ExecProcessRequest{ContainerId: "c1", ExecId: id, Process: pb, Stdio: &agentapi.StdioConfig{Stdout: true}}); err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := g.Containers.StartProcess(sctx, &agentapi.ProcessRequest{ContainerId: "c1", ExecId: id})
		return err
	}
	if err := exec("e1", "echo", "hi"); err != nil {
		t.Fatal(err)
	}
	if out := readAll(ctx, t, g, "c1", "e1", agentapi.ReadOutputRequest_STDOUT); out != "hi\n" {
		t.Errorf("exec output %q", out)
	}
	start := time.Now()
	err = exec("e2", "/no/such/binary")
	if err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("exec of a missing binary: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("exec of a missing binary took %v", time.Since(start))
	}
	if _, err := g.Containers.DeleteContainer(ctx, &agentapi.ContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
}

// TestGuestPodContainers: a second container joins the first one's
// namespaces (as a pod's containers join its sandbox's), and its output
// arrives while it still runs (no EOF to end a read).
func TestGuestPodContainers(t *testing.T) {
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	share := t.TempDir()
	for _, id := range []string{"sandbox", "app"} {
		if err := harness.BusyboxRootfs(filepath.Join(share, id, "rootfs")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-pod", Shares: []hypervisor.Share{{Tag: "podvm", Path: share}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	create := func(id string, args []string, join uint32) uint32 {
		spec := specconv.Example()
		spec.Root.Path = "/run/podvm/shared/" + id + "/rootfs"
		spec.Process.Terminal = false
		spec.Process.Args = args
		if join != 0 {
			for i, ns := range spec.Linux.Namespaces {
				switch ns.Type {
				case specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace:
					spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/%s", join, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "pid", specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts"}[ns.Type])
				}
			}
		}
		b, _ := json.Marshal(spec)
		r, err := g.Containers.CreateContainer(ctx, &agentapi.CreateContainerRequest{ContainerId: id, Spec: b, Storages: []*agentapi.Storage{shareStorage}, Stdio: &agentapi.StdioConfig{Stdout: true}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Containers.StartProcess(ctx, &agentapi.ProcessRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		return r.Pid
	}
	pid := create("sandbox", []string{"sleep", "1000"}, 0)
	create("app", []string{"sh", "-c", "echo pid $$; sleep 1000"}, pid)
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	r, err := g.Stdio.ReadOutput(rctx, &agentapi.ReadOutputRequest{ContainerId: "app"})
	// In the sandbox's PID namespace, the app is not PID 1.
	if err != nil || r.Eof || !strings.HasPrefix(string(r.Data), "pid ") || string(r.Data) == "pid 1\n" {
		t.Fatalf("output of a running app container: %+v, %v", r, err)
	}
	for _, id := range []string{"app", "sandbox"} {
		if _, err := g.Containers.DeleteContainer(ctx, &agentapi.ContainerRequest{ContainerId: id}); err != nil {
			t.Error(err)
		}
	}
}
