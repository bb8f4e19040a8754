package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/protobuf"
	_ "github.com/containerd/containerd/runtime" // registers the spec types with typeurl
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/podvm/podvm/test/harness"
)

// recorder collects containerd's task events for one container.
type recorder struct {
	cmd   *exec.Cmd
	lines chan string
}

func (s *suite) record(t *testing.T) *recorder {
	cmd := exec.Command(harness.CtrBin(), "--address", s.ctd.Address, "events")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &recorder{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
	}()
	time.Sleep(300 * time.Millisecond)
	return r
}

// topics stops recording and returns the /tasks/ topics of container id.
// containerd 2.x publishes some events (a task's delete) a moment after
// the call returns: the recording ends once one arrives for /tasks/delete
// or after a while.
func (r *recorder) topics(id string) []string {
	var topics []string
	deadline := time.After(5 * time.Second)
	defer func() {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}()
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				return topics
			}
			f := strings.Fields(line)
			if len(f) < 7 || !strings.HasPrefix(f[5], "/tasks/") {
				continue
			}
			var ev struct {
				ContainerID string `json:"container_id"`
			}
			if json.Unmarshal([]byte(strings.Join(f[6:], " ")), &ev) == nil && ev.ContainerID == id {
				topics = append(topics, f[5])
				if f[5] == "/tasks/delete" {
					return topics
				}
			}
		case <-deadline:
			return topics
		}
	}
}

func TestTask(t *testing.T) {
	s := newSuite(t)
	ctd := s.ctd

	t.Run("events in containerd's order", func(t *testing.T) {
		var got [][]string
		for _, rt := range runtimes {
			rec := s.record(t)
			id := s.id(rt)
			s.ctr(nil, "run", "--runtime", rt, "-d", harness.BusyboxImage, id, "sleep", "1000")
			s.ctr(nil, "task", "exec", "--exec-id", "e1", id, "true")
			s.ctr(nil, "task", "pause", id)
			s.ctr(nil, "task", "resume", id)
			s.ctr(nil, "task", "kill", "-s", "KILL", id)
			waitFor(t, func() bool { return strings.Contains(s.ctr(nil, "task", "ls").stdout, "STOPPED") })
			s.ctr(nil, "task", "delete", id)
			s.ctr(nil, "container", "delete", id)
			got = append(got, rec.topics(id))
		}
		want := "/tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/exit /tasks/paused /tasks/resumed /tasks/exit /tasks/delete"
		for i, rt := range runtimes {
			if rt != podvm && strings.Join(got[i], " ")+" /tasks/delete" == want {
				// containerd 2.x's runc shim queues its delete event and
				// may exit (on containerd's Shutdown) before its forwarder
				// has sent what it drained: seen lost, not late, on a
				// loaded machine. The reference for the order is the rest.
				t.Logf("%s: no /tasks/delete (its shim exited before forwarding it)", short(rt))
				continue
			}
			if strings.Join(got[i], " ") != want {
				t.Errorf("%s events: %v\nwant %s", short(rt), got[i], want)
			}
		}
	})

	t.Run("OOM kill", func(t *testing.T) {
		for _, rt := range runtimes {
			rec := s.record(t)
			id := s.id(rt)
			r := s.ctr(nil, "run", "--runtime", rt, "--rm", "--memory-limit", "33554432", harness.BusyboxImage, id,
				"dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
			topics := strings.Join(rec.topics(id), " ")
			if r.code != 137 || !strings.Contains(topics, "/tasks/oom") {
				t.Errorf("%s: %+v, events %s", short(rt), r, topics)
			}
		}
	})

	// A container that grows slowly to its limit while other processes
	// keep running its binaries: in a guest whose file pages are charged
	// to the container, reclaim would evict and refault them for minutes
	// instead of OOM-killing (the memory guard squeezes the limit).
	t.Run("OOM kill while thrashing", func(t *testing.T) {
		for _, rt := range runtimes {
			rec := s.record(t)
			id := s.id(rt)
			start := time.Now()
			r := s.ctr(nil, "run", "--runtime", rt, "--rm", "--memory-limit", "67108864", harness.BusyboxImage, id, "sh", "-c",
				`(while :; do /bin/true; done) & (while :; do /bin/true; done) & x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived`)
			took := time.Since(start)
			topics := strings.Join(rec.topics(id), " ")
			t.Logf("%s: OOM-killed after %v", short(rt), took.Round(time.Millisecond))
			if r.code != 137 || !strings.Contains(topics, "/tasks/oom") || strings.Contains(r.stdout, "survived") {
				t.Errorf("%s: %+v, events %s", short(rt), r, topics)
			}
			// Under TCG the container needs 10-35 s to grow to 64 MiB,
			// and the kill came 28-105 s after the start on this kind of
			// host (2 cores, busy); the livelock it guards against never
			// ended on its own (no kill after 3 minutes).
			if took > 150*time.Second {
				t.Errorf("%s: the OOM kill took %v", short(rt), took)
			}
		}
	})

	t.Run("metrics and update", func(t *testing.T) {
		id := s.id(podvm)
		if r := s.ctr(nil, "run", "--runtime", podvm, "-d", "--memory-limit", "67108864",
			"--mount", "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro",
			harness.BusyboxImage, id, "sleep", "1000"); r.code != 0 {
			t.Fatalf("run: %+v", r)
		}
		defer s.ctr(nil, "container", "delete", id)
		defer s.ctr(nil, "task", "delete", "-f", id)
		r := s.ctr(nil, "task", "metrics", id)
		if r.code != 0 || !strings.Contains(r.stdout, "memory.usage") || !strings.Contains(r.stdout, "pids.current") {
			t.Errorf("metrics: %+v", r)
		}
		for _, line := range strings.Split(r.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == "memory.usage" {
				if v, _ := strconv.ParseUint(f[1], 10, 64); v == 0 {
					t.Errorf("memory usage reads zero: %q", line)
				}
			}
		}
		// ctr 1.6 has no `task update`: containerd's client does it.
		if err := updateMemory(ctd, id, 134217728); err != nil {
			t.Errorf("update: %v", err)
		}
		r = s.ctr(nil, "task", "exec", "--exec-id", "m", id, "sh", "-c", "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max")
		if strings.TrimSpace(r.stdout) != "134217728" {
			t.Errorf("memory.max after update: %+v", r)
		}
	})

	t.Run("log URIs", func(t *testing.T) {
		dir := t.TempDir()
		logger := filepath.Join(dir, "logger")
		// A binary:// logger: stdout and stderr arrive on fds 3 and 4;
		// closing fd 5 says it is ready.
		script := "#!/bin/sh\nexec 5>&-\ncat <&3 >> \"$2\" &\ncat <&4 >> \"$2.err\"\nwait\n"
		if err := os.WriteFile(logger, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, rt := range runtimes {
			file := filepath.Join(dir, short(rt)+".log")
			r := s.ctr(nil, "run", "--runtime", rt, "--rm", "--log-uri", "file://"+file, harness.BusyboxImage, s.id(rt), "sh", "-c", "echo to-file; echo err-to-file >&2")
			// The shim copies to the file on its own: `ctr run --rm`
			// may return before the last bytes are in (runc's shim too).
			var b []byte
			eventually(func() bool {
				b, _ = os.ReadFile(file)
				return strings.Contains(string(b), "to-file\n") && strings.Contains(string(b), "err-to-file\n")
			})
			if r.code != 0 || !strings.Contains(string(b), "err-to-file\n") || !strings.Contains(string(b), "to-file\n") {
				// runc is the reference here, not the subject: containerd
				// 2.x's runc shim now and then exits after `ctr run --rm`
				// before it has copied the last bytes into the file.
				report := t.Errorf
				if rt == runtimes[0] {
					report = t.Logf
				}
				report("%s file://: %+v, file %q", short(rt), r, b)
			}
			out := filepath.Join(dir, short(rt)+".bin")
			r = s.ctr(nil, "run", "--runtime", rt, "--rm", "--log-uri", "binary://"+logger+"?out="+out, harness.BusyboxImage, s.id(rt), "sh", "-c", "echo to-binary; echo err-to-binary >&2")
			var o, e []byte
			waitFor(t, func() bool {
				o, _ = os.ReadFile(out)
				e, _ = os.ReadFile(out + ".err")
				return string(o) == "to-binary\n" && string(e) == "err-to-binary\n"
			})
			if r.code != 0 || string(o) != "to-binary\n" || string(e) != "err-to-binary\n" {
				t.Errorf("%s binary://: %+v, stdout %q, stderr %q", short(rt), r, o, e)
			}
		}
	})

	t.Run("seccomp", func(t *testing.T) {
		// The default profile denies unshare(2) without CAP_SYS_ADMIN.
		r := s.same(t, []string{"--seccomp"}, "sh", "-c", "unshare -U true 2>/dev/null; echo $?")
		if strings.TrimSpace(r.stdout) == "0" {
			t.Errorf("seccomp did not deny unshare: %+v", r)
		}
	})

	t.Run("shim killed", func(t *testing.T) {
		id := s.id(podvm)
		if r := s.ctr(nil, "run", "--runtime", podvm, "-d", harness.BusyboxImage, id, "sleep", "1000"); r.code != 0 {
			t.Fatalf("run: %+v", r)
		}
		b, err := os.ReadFile(filepath.Join(ctd.Dir, "state", "io.containerd.runtime.v2.task", "default", id, "shim.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		// QEMU inherits nothing of the shim's: holding the shim's socket,
		// it would keep a dead shim looking alive.
		if shared := sharedSockets(pid, qemuPid(id)); len(shared) > 0 {
			t.Errorf("QEMU holds the shim's sockets %v", shared)
		}
		if err := killPid(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// containerd notices, runs `containerd-shim-podvm-v2 delete` and
		// reports the task stopped; the VM died with its shim.
		waitFor(t, func() bool {
			r := s.ctr(nil, "task", "ls")
			return !strings.Contains(r.stdout, id) || strings.Contains(r.stdout, "STOPPED")
		})
		s.ctr(nil, "task", "delete", id)
		if r := s.ctr(nil, "container", "delete", id); r.code != 0 {
			t.Errorf("container delete: %+v", r)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for ctx.Err() == nil && len(harness.TakeCensus().QEMU) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if q := harness.TakeCensus().QEMU; len(q) > 0 {
			t.Errorf("QEMU outlived its shim: %v", q)
		}
		// containerd 1.6 runs `delete` on its own time after the task
		// reads as stopped: wait for it to finish.
		waitFor(t, func() bool {
			_, err := os.Stat(filepath.Join(ctd.Dir, "podvm", "sandboxes", id))
			return os.IsNotExist(err)
		})
	})
}

// updateMemory calls containerd's Update of a task over gRPC: ctr 1.6 has
// no `task update`, and containerd 1.7's client package does not build
// against runtime-spec 1.3.
func updateMemory(ctd *harness.Containerd, id string, limit int64) error {
	return updateResources(ctd, id, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
}

func updateResources(ctd *harness.Containerd, id string, r *specs.LinuxResources) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", "default")
	conn, err := grpc.NewClient("unix://"+ctd.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	res, err := typeurl.MarshalAny(r)
	if err != nil {
		return err
	}
	_, err = tasks.NewTasksClient(conn).Update(ctx, &tasks.UpdateTaskRequest{ContainerID: id, Resources: protobuf.FromAny(res)})
	return err
}

// sharedSockets lists the sockets open in both processes.
func sharedSockets(a, b int) []string {
	socks := func(pid int) map[string]bool {
		m := map[string]bool{}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				m[l] = true
			}
		}
		return m
	}
	sa := socks(a)
	var shared []string
	for s := range socks(b) {
		if sa[s] {
			shared = append(shared, s)
		}
	}
	return shared
}
