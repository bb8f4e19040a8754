package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/test/harness"
)

// badCase is one hostile or mistaken input and what its error must say.
type badCase struct {
	name string
	try  func(t *testing.T) error
	want []string
}

// TestBadInput feeds podvm what a user, a client of containerd or a pod
// spec may get wrong or make up: IDs, specs, mounts, annotations,
// configuration, runtime options, log URIs, resources, Update payloads and
// exec requests, through ctr and, for what containerd itself would
// refuse first, straight to a pod's shim. Each must fail with an error
// that names what was wrong, and leave nothing behind. (Hostile answers
// from the guest are vm's TestHostileReplies.)
func TestBadInput(t *testing.T) {
	s := newSuite(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// run is `ctr run` of a podvm container that must fail.
	run := func(flags ...string) func(t *testing.T) error {
		return func(t *testing.T) error {
			id := s.id(podvm)
			a := append([]string{"run", "--runtime", podvm, "--rm"}, flags...)
			r := s.ctr(nil, append(a, harness.BusyboxImage, id, "true")...)
			s.ctr(nil, "container", "delete", id)
			if r.code == 0 {
				return nil
			}
			return errorString(r.stderr)
		}
	}
	ctrCases := []badCase{
		{"group with a comma", run("--annotation", "io.podvm.group=a,b"), []string{"io.podvm.group", `"a,b"`}},
		{"group that climbs out", run("--annotation", "io.podvm.group=../../x"), []string{"io.podvm.group", "../../x"}},
		{"group too long", run("--annotation", "io.podvm.group="+strings.Repeat("g", 100)), []string{"io.podvm.group", "76 characters"}},
		{"annotation for a host binary", run("--annotation", "io.podvm.config.hypervisor.path=/bin/true"), []string{"io.podvm.config.hypervisor.path", "may not be set by pods"}},
		{"annotation for a host file", run("--annotation", "io.podvm.config.hypervisor.kernel=/etc/shadow"), []string{"hypervisor.kernel", "may not be set by pods"}},
		{"annotation asking for too much memory", run("--annotation", "io.podvm.config.hypervisor.memory_mib=16384"), []string{"hypervisor.memory_mib", "annotations.max_memory_mib"}},
		{"annotation asking for every CPU", run("--annotation", "io.podvm.config.hypervisor.vcpus=4096"), []string{"hypervisor.vcpus"}},
		{"annotation with a word for a number", run("--annotation", "io.podvm.config.hypervisor.memory_mib=lots"), []string{"hypervisor.memory_mib"}},
		{"annotation with a near-miss key", run("--annotation", "io.podvm.config.hypervisor_vcpus=2"), []string{"did you mean io.podvm.config.hypervisor.vcpus"}},
		{"annotation for no key", run("--annotation", "io.podvm.config.turbo=1"), []string{`"turbo" is not a configuration key`}},
		{"runtime options: missing file", run("--runtime-config-path", "/nonexistent/podvm.toml"), []string{"ConfigPath", "/nonexistent/podvm.toml"}},
		{"runtime options: unknown key", run("--runtime-config-path", write("unknown.toml", "[hypervisor]\nturbo = true\n")), []string{"unknown key", "hypervisor.turbo"}},
		{"runtime options: bad machine", run("--runtime-config-path", write("machine.toml", "[hypervisor]\nmachine = \"pc\"\n")), []string{"hypervisor.machine", `"pc"`}},
		{"runtime options: no liveness timeout", run("--runtime-config-path", write("timeout.toml", "[timeouts]\nagent = \"1ms\"\n")), []string{"timeouts.agent"}},
		{"runtime options: quoted kernel parameter", run("--runtime-config-path", write("params.toml", "[hypervisor]\nkernel_params = \"init=\\\"/bin/sh\\\"\"\n")), []string{"hypervisor.kernel_params"}},
		{"runtime options: pods allowed nothing", run("--runtime-config-path", write("allow.toml", "[annotations]\nmax_vcpus = 0\n")), []string{"annotations.max_vcpus"}},
		{"runtime options: not TOML", run("--runtime-config-path", write("garbage.toml", "this is [not toml\n")), []string{"garbage.toml"}},
		{"9p mount of the share", run("--mount", "type=9p,src=podvm,dst=/mnt,options=trans=virtio"), []string{`type "9p"`, "/mnt", "bind mount"}},
		{"virtio-fs mount", run("--mount", "type=virtiofs,src=podvm,dst=/mnt"), []string{`type "virtiofs"`}},
		{"ext4 mount of a guest disk", run("--mount", "type=ext4,src=/dev/vda,dst=/mnt"), []string{`type "ext4"`}},
		{"bind of a missing path", run("--mount", "type=bind,src=/nonexistent/volume,dst=/mnt,options=rbind"), []string{"/nonexistent/volume"}},
		{"bind of a relative path", run("--mount", "type=bind,src=relative/volume,dst=/mnt,options=rbind"), []string{"relative/volume", "not an absolute path"}},
		{"log URI of an unknown scheme", run("--log-uri", "gopher://x/y"), []string{"gopher", "binary://"}},
		{"log URI of a missing binary", run("--log-uri", "binary:///nonexistent/logger"), []string{"/nonexistent/logger"}},
	}
	for _, tc := range ctrCases {
		t.Run(tc.name, func(t *testing.T) { checkBad(t, tc) })
	}

	// Straight to a running pod's shim: what containerd would stop
	// first, or what a client with the shim's socket could send.
	pod := s.id(podvm)
	if r := s.ctr(nil, "run", "-d", "--runtime", podvm, harness.BusyboxImage, pod, "sleep", "100000"); r.code != 0 {
		t.Fatalf("run: %+v", r)
	}
	defer func() {
		s.ctr(nil, "task", "kill", "-s", "KILL", pod)
		waitFor(t, func() bool { return strings.Contains(s.ctr(nil, "task", "ls").stdout, "STOPPED") })
		s.ctr(nil, "task", "delete", pod)
		s.ctr(nil, "container", "delete", pod)
	}()
	task := s.shimClient(t, pod)
	ctx := namespaces.WithNamespace(context.Background(), "default")
	bundle := func(name string, spec any) string {
		b := filepath.Join(dir, "bundle-"+name)
		os.MkdirAll(b, 0o755)
		var data []byte
		switch v := spec.(type) {
		case string:
			data = []byte(v)
		default:
			data, _ = json.Marshal(v)
		}
		if spec != nil {
			os.WriteFile(filepath.Join(b, "config.json"), data, 0o644)
		}
		return b
	}
	goodProcess := &specs.Process{Args: []string{"true"}, Cwd: "/"}
	create := func(id, b string) func(t *testing.T) error {
		return func(t *testing.T) error {
			_, err := task.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: b})
			return err
		}
	}
	execReq := func(execID string, process any) func(t *testing.T) error {
		return func(t *testing.T) error {
			r := &taskAPI.ExecProcessRequest{ID: pod, ExecID: execID}
			switch p := process.(type) {
			case nil:
			case string:
				r.Spec = &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(p)}
			default:
				a, _ := typeurl.MarshalAny(p)
				r.Spec = protobuf.FromAny(a)
			}
			_, err := task.Exec(ctx, r)
			return err
		}
	}
	update := func(res any) func(t *testing.T) error {
		return func(t *testing.T) error {
			r := &taskAPI.UpdateTaskRequest{ID: pod}
			if res != nil {
				a, err := typeurl.MarshalAny(res)
				if err != nil {
					return err
				}
				r.Resources = protobuf.FromAny(a)
			}
			_, err := task.Update(ctx, r)
			return err
		}
	}
	huge := int64(1) << 62
	if _, err := task.Exec(ctx, &taskAPI.ExecProcessRequest{ID: pod, ExecID: "taken", Spec: mustAny(goodProcess)}); err != nil {
		t.Fatalf("a good exec: %v", err)
	}
	shimCases := []badCase{
		{"container ID that climbs out", create("../../etc", bundle("a", &specs.Spec{Process: goodProcess})), []string{"invalid container ID", "../../etc"}},
		{"container ID with a comma", create("a,b", bundle("b", &specs.Spec{Process: goodProcess})), []string{"invalid container ID", `"a,b"`}},
		{"container ID of 200 characters", create(strings.Repeat("c", 200), bundle("c", &specs.Spec{Process: goodProcess})), []string{"invalid container ID", "76 characters"}},
		{"empty container ID", create("", bundle("d", &specs.Spec{Process: goodProcess})), []string{"invalid container ID"}},
		{"bundle without config.json", create("nospec", bundle("e", nil)), []string{"config.json"}},
		{"config.json that is not JSON", create("notjson", bundle("f", "{not json")), []string{"config.json"}},
		{"spec without process", create("noproc", bundle("g", &specs.Spec{Root: &specs.Root{Path: "rootfs"}})), []string{"has no process"}},
		{"spec with a process without args", create("noargs", bundle("h", &specs.Spec{Process: &specs.Process{Cwd: "/"}, Root: &specs.Root{Path: "rootfs"}})), []string{"without args"}},
		{"spec without root or rootfs", create("noroot", bundle("i", &specs.Spec{Process: goodProcess})), []string{"has no root"}},
		{"mount to a relative destination", create("reldest", bundle("j", &specs.Spec{Process: goodProcess, Root: &specs.Root{Path: "rootfs"}, Mounts: []specs.Mount{{Destination: "mnt", Type: "tmpfs", Source: "tmpfs"}}})), []string{"mount destination", `"mnt"`}},
		{"exec ID that climbs out", execReq("../x", goodProcess), []string{"invalid exec ID", "../x"}},
		{"exec ID with a space", execReq("a b", goodProcess), []string{"invalid exec ID", `"a b"`}},
		{"exec without a process", execReq("e1", nil), []string{"without a process spec"}},
		{"exec process that is not JSON", execReq("e2", "{nope"), []string{"not an OCI process"}},
		{"exec process without args", execReq("e3", &specs.Process{Cwd: "/"}), []string{"has no args"}},
		{"exec ID already taken", execReq("taken", goodProcess), []string{"taken", "already exists"}},
		{"exec in a container that does not exist", func(t *testing.T) error {
			_, err := task.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "ghost", ExecID: "e4", Spec: mustAny(goodProcess)})
			return err
		}, []string{"ghost", "not found"}},
		{"update without resources", update(nil), []string{"without resources"}},
		{"update with an unknown type", func(t *testing.T) error {
			_, err := task.Update(ctx, &taskAPI.UpdateTaskRequest{ID: pod, Resources: &ptypes.Any{TypeUrl: "example.com/Bogus", Value: []byte("x")}})
			return err
		}, []string{"resources of " + pod}},
		{"update past what the VM can be", update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &huge}}), []string{pod, `machine = "q35"`}},
		{"kill of an exec that does not exist", func(t *testing.T) error {
			_, err := task.Kill(ctx, &taskAPI.KillRequest{ID: pod, ExecID: "nope", Signal: 9})
			return err
		}, []string{"nope", "not found"}},
		{"resize of a process without a terminal", func(t *testing.T) error {
			_, err := task.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: pod, Width: 80, Height: 24})
			return err
		}, []string{"no terminal"}},
		{"start of a container that does not exist", func(t *testing.T) error {
			_, err := task.Start(ctx, &taskAPI.StartRequest{ID: "ghost"})
			return err
		}, []string{"ghost", "not found"}},
		{"delete of a container that does not exist", func(t *testing.T) error {
			_, err := task.Delete(ctx, &taskAPI.DeleteRequest{ID: "ghost"})
			return err
		}, []string{"ghost", "not found"}},
		{"stats of a container that does not exist", func(t *testing.T) error {
			_, err := task.Stats(ctx, &taskAPI.StatsRequest{ID: "ghost"})
			return err
		}, []string{"ghost", "not found"}},
		{"checkpoint", func(t *testing.T) error {
			_, err := task.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: pod, Path: dir})
			return err
		}, []string{"checkpoint is not supported"}},
	}
	for _, tc := range shimCases {
		t.Run(tc.name, func(t *testing.T) { checkBad(t, tc) })
	}
	// The pod took no harm.
	if r := s.ctr(nil, "task", "exec", "--exec-id", "after", pod, "echo", "fine"); r.stdout != "fine\n" {
		t.Errorf("the pod after the bad requests: %+v", r)
	}
	if n := len(ctrCases) + len(shimCases); n < 40 {
		t.Errorf("only %d cases", n)
	}
}

// checkBad runs one case: it must fail, saying what was wrong, and leave
// nothing behind.
func checkBad(t *testing.T, tc badCase) {
	t.Helper()
	harness.WatchLeaks(t)
	err := tc.try(t)
	if err == nil {
		t.Fatalf("accepted")
	}
	for _, w := range tc.want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q:\n%v", w, err)
		}
	}
}

func mustAny(v any) *ptypes.Any {
	a, err := typeurl.MarshalAny(v)
	if err != nil {
		panic(err)
	}
	return protobuf.FromAny(a)
}

type errorString string

func (e errorString) Error() string { return string(e) }

// shimClient connects to a task's shim as containerd does.
func (s *suite) shimClient(t *testing.T, id string) taskAPI.TaskService {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.bundleOf(id), "address"))
	if err != nil {
		t.Fatal(err)
	}
	address := strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://")
	conn, err := net.DialTimeout("unix", address, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() { client.Close() })
	return taskAPI.NewTaskClient(client)
}
