package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sandboxAPI "github.com/containerd/containerd/api/runtime/sandbox/v1"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/ttrpc"

	"github.com/podvm/podvm/test/harness"
)

// inspectp is what the tests read of `crictl inspectp`.
type inspectp struct {
	Status struct {
		State string `json:"state"`
	} `json:"status"`
	Info struct {
		Pid int `json:"pid"`
	} `json:"info"`
	// Podvm is the shim's own verbose status.
	Podvm struct {
		Phase string `json:"phase"`
	} `json:"podvm"`
}

func (c *cri) inspectp(pod string) inspectp {
	c.t.Helper()
	var st inspectp
	if err := json.Unmarshal([]byte(c.must("inspectp", "-o", "json", pod)), &st); err != nil {
		c.t.Fatal(err)
	}
	return st
}

// TestSandboxAPI runs pods through containerd 2.x's Sandbox API
// (sandboxer = "shim"): the shim, not a pause container, is the pod.
func TestSandboxAPI(t *testing.T) {
	if !harness.Containerd2() {
		t.Skip("the Sandbox API is containerd 2.x's (PODVM_CONTAINERD=2)")
	}
	c := newCRI(t)
	const handler = "podvm-sandbox"

	// podConfig is a pod with one PID namespace for its containers and
	// its own DNS configuration.
	podConfig := func(name string, dns map[string]any) string {
		t.Helper()
		c.n++
		config, err := harness.WriteJSON(c.dir, name+".json", map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "default", "uid": fmt.Sprintf("uid-%d", c.n)},
			"hostname":      name,
			"log_directory": c.dir,
			"dns_config":    dns,
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 0}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return config
	}

	t.Run("pod", func(t *testing.T) {
		c.t = t
		config := podConfig("sbx", map[string]any{"servers": []string{"10.66.0.53"}, "searches": []string{"example.test"}, "options": []string{"ndots:2"}})
		pod := c.must("runp", "--runtime", handler, config)
		// The VM is the pod from RunPodSandbox on, and no pause
		// container exists.
		q := qemuOf(pod)
		if len(q) != 1 {
			t.Fatalf("QEMU of the pod before any container: %v", q)
		}
		var qemuPid int
		fmt.Sscan(q[0], &qemuPid)
		if out, _, err := c.ctd.Ctr(context.Background(), "-n", "k8s.io", "containers", "ls", "-q"); err != nil || strings.Contains(out, pod) {
			t.Errorf("containerd has a container for the sandbox: %q %v", out, err)
		}
		if st := c.inspectp(pod); st.Status.State != "SANDBOX_READY" || st.Podvm.Phase != "running" || st.Info.Pid != qemuPid {
			t.Errorf("inspectp: %+v, want ready, running, QEMU's PID %d", st, qemuPid)
		}

		a := c.container(pod, config, "a", "sleep", "200001")
		b := c.container(pod, config, "b", "sleep", "200002")
		// One PID namespace whose PID 1 is the infra process; one IPC and
		// UTS namespace; one /dev/shm.
		ps := c.must("exec", "-s", a, "ps", "-o", "pid,user,args")
		if !strings.Contains(ps, "sleep 200002") || !strings.Contains(ps, "1 65535    /pause") {
			t.Errorf("ps in a container of a pod sharing its PID namespace:\n%s", ps)
		}
		// The infra process is pause.c, which never starts Go's runtime
		// (and its threads) in the guest.
		if out := c.must("exec", "-s", a, "grep", "Threads", "/proc/1/status"); out != "Threads:\t1" {
			t.Errorf("the infra process's /proc/1/status: %q, want one thread", out)
		}
		for _, ns := range []string{"ipc", "uts"} {
			if na, nb := c.must("exec", "-s", a, "readlink", "/proc/self/ns/"+ns), c.must("exec", "-s", b, "readlink", "/proc/self/ns/"+ns); na != nb {
				t.Errorf("%s namespaces of the pod's containers: %s, %s", ns, na, nb)
			}
		}
		c.must("exec", "-s", a, "sh", "-c", "echo shared > /dev/shm/x")
		if out := c.must("exec", "-s", b, "cat", "/dev/shm/x"); out != "shared" {
			t.Errorf("/dev/shm/x written by one container, read by the other: %q", out)
		}
		if out := c.must("exec", "-s", b, "hostname"); out != "sbx" {
			t.Errorf("hostname = %q", out)
		}
		if out := c.must("exec", "-s", b, "cat", "/etc/hostname", "/etc/resolv.conf", "/etc/hosts"); !strings.Contains(out, "sbx\nsearch example.test\nnameserver 10.66.0.53\noptions ndots:2\n") || !strings.Contains(out, "127.0.0.1\tlocalhost") {
			t.Errorf("the pod's files:\n%s", out)
		}

		// containerd restarts: the pod and its shim go on.
		if err := c.ctd.Restart(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			out, err := c.run("exec", "-s", a, "echo", "after restart")
			return err == nil && out == "after restart"
		})
		if st := c.inspectp(pod); st.Status.State != "SANDBOX_READY" {
			t.Errorf("after containerd restarted: %+v", st)
		}

		c.must("stopp", pod)
		if st := c.inspectp(pod); st.Status.State != "SANDBOX_NOTREADY" {
			t.Errorf("after stopp: %+v", st)
		}
		if q := qemuOf(pod); len(q) != 0 {
			t.Errorf("QEMU left after stopp: %v", q)
		}
		c.must("stopp", pod)
		c.must("rmp", pod)
		checkNoAllocations(t, c.ctd)
	})

	t.Run("QEMU killed", func(t *testing.T) {
		// The pod turns NotReady and its containers exited; stop and
		// remove clean up.
		c.t = t
		config := podConfig("sbx-killed", nil)
		pod := c.must("runp", "--runtime", handler, config)
		id := c.container(pod, config, "sleeper", "sleep", "100000")
		pid := qemuPid(pod)
		if pid <= 1 {
			t.Fatalf("QEMU of %s: %v", pod, qemuOf(pod))
		}
		if err := killPid(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return c.inspectp(pod).Status.State == "SANDBOX_NOTREADY" })
		waitFor(t, func() bool {
			out, _ := c.run("inspect", "-o", "go-template", "--template", "{{.status.state}}", id)
			return out == "CONTAINER_EXITED"
		})
		c.must("stopp", pod)
		c.must("stopp", pod)
		c.must("rmp", pod)
		checkNoAllocations(t, c.ctd)
	})

	t.Run("shutdown twice", func(t *testing.T) {
		// containerd may ask again (a retried RemovePodSandbox): the
		// shim answers both before it goes, and the pod is then
		// removable.
		c.t = t
		pod := c.must("runp", "--runtime", handler, podConfig("sbx-twice", nil))
		c.must("stopp", pod)
		b, err := os.ReadFile(filepath.Join(c.ctd.Dir, "state", "io.containerd.sandbox.controller.v1.shim", "k8s.io", pod, "bootstrap.json"))
		if err != nil {
			t.Fatal(err)
		}
		var boot struct{ Address string }
		if err := json.Unmarshal(b, &boot); err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("unix", strings.TrimPrefix(boot.Address, "unix://"))
		if err != nil {
			t.Fatal(err)
		}
		client := ttrpc.NewClient(conn)
		defer client.Close()
		svc := sandboxAPI.NewTTRPCSandboxClient(client)
		ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
		for i := 0; i < 2; i++ {
			if _, err := svc.ShutdownSandbox(ctx, &sandboxAPI.ShutdownSandboxRequest{SandboxID: pod}); err != nil {
				t.Errorf("ShutdownSandbox %d: %v", i+1, err)
			}
		}
		if _, err := svc.ShutdownSandbox(ctx, &sandboxAPI.ShutdownSandboxRequest{SandboxID: "another"}); err == nil || !strings.Contains(err.Error(), "this shim serves sandbox") {
			t.Errorf("ShutdownSandbox of another sandbox: %v", err)
		}
		waitFor(t, func() bool { return shimPid(pod) == 0 })
		c.must("rmp", pod)
		checkNoAllocations(t, c.ctd)
	})

	t.Run("hostile pod config", func(t *testing.T) {
		// A DNS search domain that would add a nameserver line to
		// resolv.conf: refused with its name, nothing left.
		c.t = t
		config := podConfig("sbx-hostile", map[string]any{"searches": []string{"x\nnameserver 6.6.6.6"}})
		_, err := c.run("runp", "--runtime", handler, config)
		if err == nil || !strings.Contains(err.Error(), "DNS search or option") {
			t.Errorf("runp with a search domain holding a line break: %v", err)
		}
		if out := c.must("pods", "-q"); out != "" {
			t.Errorf("pods left: %q", out)
		}
		time.Sleep(time.Second)
		if q := qemuOf("sbx"); len(q) != 0 {
			t.Errorf("QEMU left: %v", q)
		}
		checkNoAllocations(t, c.ctd)
	})
}
