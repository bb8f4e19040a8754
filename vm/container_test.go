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

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vmconfig"
)

var shareStorage = Storage{
	Source: "podvm", Target: "/run/podvm/shared", Type: "9p",
	Options: []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"},
}

// readAll drains one output stream of a guest process.
func readAll(ctx context.Context, t *testing.T, g *Guest, id, exec string, stream Stream) string {
	var buf bytes.Buffer
	if err := g.CopyOutput(ctx, id, exec, stream, &buf); err != nil {
		t.Errorf("read %v: %v", stream, err)
	}
	return buf.String()
}

// firstOutput returns the first bytes a running process writes on stream.
func firstOutput(ctx context.Context, g *Guest, id, exec string, stream Stream) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan string, 1)
	err := g.CopyOutput(ctx, id, exec, stream, writerFunc(func(b []byte) (int, error) {
		select {
		case got <- string(b):
		default:
		}
		cancel()
		return len(b), nil
	}))
	select {
	case s := <-got:
		return s, nil
	default:
		return "", fmt.Errorf("no output: %w", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// bootShared boots a VM named podvm-test-<name> with share as its 9p share,
// shut down when the test ends.
func bootShared(ctx context.Context, t *testing.T, cfg *vmconfig.Config, name, share string) *Guest {
	t.Helper()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-" + name, Shares: []hypervisor.Share{{Tag: "podvm", Path: share}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Shutdown(context.Background()) })
	return g
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
	pid, err := g.CreateContainer(ctx, Container{
		ID: "c1", Spec: b, Storages: []Storage{shareStorage},
		Streams: Streams{Stdin: true, Stdout: true, Stderr: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if pid == 0 {
		t.Error("no pid")
	}
	t.Logf("created at %v", time.Since(start))
	if _, err := g.StartProcess(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	t.Logf("started at %v", time.Since(start))
	if err := g.CopyInput(ctx, "c1", "", strings.NewReader("line\n")); err != nil {
		t.Fatal(err)
	}
	errc := make(chan string)
	go func() { errc <- readAll(ctx, t, g, "c1", "", Stderr) }()
	stdout := readAll(ctx, t, g, "c1", "", Stdout)
	if want := "hello from " + "6.1"; !strings.HasPrefix(stdout, want) || !strings.Contains(stdout, "-podvm\ngot line\n") {
		t.Errorf("stdout = %q", stdout)
	}
	if stderr := <-errc; stderr != "oops\n" {
		t.Errorf("stderr = %q", stderr)
	}
	exit, err := g.Wait(ctx, "c1", "")
	if err != nil || exit.Status != 3 || exit.OOMKills != 0 {
		t.Fatalf("wait = %+v, %v", exit, err)
	}
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
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
	g := bootShared(ctx, t, cfg, "exec", share)
	spec := specconv.Example()
	spec.Root.Path = "/run/podvm/shared/c1/rootfs"
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sleep", "1000"}
	b, _ := json.Marshal(spec)
	if _, err := g.CreateContainer(ctx, Container{ID: "c1", Spec: b, Storages: []Storage{shareStorage}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.StartProcess(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	exec := func(id string, args ...string) error {
		p := *spec.Process
		p.Args = args
		pb, _ := json.Marshal(p)
		if err := g.ExecProcess(ctx, "c1", id, pb, Streams{Stdout: true}); err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := g.StartProcess(sctx, "c1", id)
		return err
	}
	if err := exec("e1", "echo", "hi"); err != nil {
		t.Fatal(err)
	}
	if out := readAll(ctx, t, g, "c1", "e1", Stdout); out != "hi\n" {
		t.Errorf("exec output %q", out)
	}
	// Where runc exec puts a process: the init's namespaces and cgroup
	// (PID 1 is the init, in the container's own PID namespace), the
	// process's no_new_privs and capabilities, HOME from /etc/passwd.
	check := `for n in ipc mnt net pid uts cgroup; do [ "$(readlink /proc/self/ns/$n)" = "$(readlink /proc/1/ns/$n)" ] || echo "$n namespace differs"; done
[ "$(cat /proc/self/cgroup)" = "$(cat /proc/1/cgroup)" ] || echo "cgroup differs"
grep -E '^(NoNewPrivs|CapEff)' /proc/self/status
echo "home=$HOME cwd=$(pwd) host=$(hostname) pid1=$(cat /proc/1/cmdline | tr '\0' ' ')"`
	if err := exec("e3", "sh", "-c", check); err != nil {
		t.Fatal(err)
	}
	want := "CapEff:\t0000000020000420\nNoNewPrivs:\t1\nhome=/root cwd=/ host=" + spec.Hostname + " pid1=sleep 1000 \n"
	if out := readAll(ctx, t, g, "c1", "e3", Stdout); out != want {
		t.Errorf("exec'd process reports\n%s\nwant\n%s", out, want)
	}
	start := time.Now()
	err := exec("e2", "/no/such/binary")
	if err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("exec of a missing binary: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("exec of a missing binary took %v", time.Since(start))
	}
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
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
	g := bootShared(ctx, t, cfg, "pod", share)
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
		pid, err := g.CreateContainer(ctx, Container{ID: id, Spec: b, Storages: []Storage{shareStorage}, Streams: Streams{Stdout: true}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.StartProcess(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	pid := create("sandbox", []string{"sleep", "1000"}, 0)
	create("app", []string{"sh", "-c", "echo pid $$; sleep 1000"}, pid)
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	data, err := firstOutput(rctx, g, "app", "", Stdout)
	// In the sandbox's PID namespace, the app is not PID 1.
	if err != nil || !strings.HasPrefix(data, "pid ") || data == "pid 1\n" {
		t.Fatalf("output of a running app container: %q, %v", data, err)
	}
	for _, id := range []string{"app", "sandbox"} {
		if err := g.DeleteContainer(ctx, id); err != nil {
			t.Error(err)
		}
	}
}
