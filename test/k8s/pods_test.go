//go:build k8s

package k8s

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// TestNode runs pods of RuntimeClass podvm through kubelet as a cluster
// would, with runc pods beside them where runc's behaviour is the measure.
func TestNode(t *testing.T) {
	harness.NeedRoot(t)
	harness.WatchLeaks(t)
	ctd := harness.StartCRI(t)
	n := StartNode(t, ctd)

	t.Run("vm_per_pod", n.testVMPerPod)
	t.Run("overhead", n.testOverhead)
	t.Run("probes", n.testProbes)
	t.Run("kubectl", n.testKubectl)
	t.Run("crash_restart", n.testCrashRestart)
	t.Run("graceful_delete", n.testGracefulDelete)
	t.Run("oom", n.testOOM)
	t.Run("two_containers", n.testTwoContainers)
	t.Run("vm_killed", n.testVMKilled)
	t.Run("installer", n.testInstaller)
}

// sub is the node seen from a subtest: failures land there.
func (n *Node) sub(t *testing.T) *Node {
	c := *n
	c.t = t
	return &c
}

var sleeper = []string{"sleep", "3600"}

// testVMPerPod: every podvm pod runs its own guest kernel in its own QEMU,
// which kubelet's pod cgroup holds; a runc pod beside them has none.
func (n *Node) testVMPerPod(t *testing.T) {
	n = n.sub(t)
	n.apply(pod("vm1", "podvm", container("main", sleeper)))
	n.apply(pod("vm2", "podvm", container("main", sleeper)))
	n.apply(pod("plain", "", container("main", sleeper)))
	host, _ := exec.Command("uname", "-r").Output()
	qemus := map[int]string{}
	for _, name := range []string{"vm1", "vm2", "plain"} {
		p := n.waitReady(name)
		kernel := strings.TrimSpace(n.kubectl("exec", name, "--", "uname", "-r"))
		vms := qemuOf(p.Metadata.UID)
		if name == "plain" {
			if kernel != strings.TrimSpace(string(host)) || len(vms) != 0 {
				t.Errorf("runc pod: kernel %q (host %q), QEMUs %v", kernel, host, vms)
			}
			continue
		}
		if !strings.HasSuffix(kernel, "-podvm") || len(vms) != 1 {
			t.Fatalf("%s: kernel %q, QEMUs in its cgroup %v: want the guest kernel in one VM", name, kernel, vms)
		}
		if other, ok := qemus[vms[0]]; ok {
			t.Errorf("%s and %s share QEMU %d", name, other, vms[0])
		}
		qemus[vms[0]] = name
	}
	n.deletePods("vm1", "vm2", "plain")
	if left := harness.TakeCensus().QEMU; len(left) != 0 {
		t.Errorf("QEMU left after the pods were deleted: %v", left)
	}
}

// testOverhead: the RuntimeClass's overhead is added to the pod's cgroup
// limits by kubelet, and the VM (QEMU and the shim) is accounted in it and
// fits.
func (n *Node) testOverhead(t *testing.T) {
	n = n.sub(t)
	c := container("main", sleeper)
	c.Resources = map[string]any{"limits": map[string]string{"memory": "64Mi", "cpu": "500m"}}
	n.apply(pod("sized", "podvm", c))
	p := n.waitReady("sized")
	overhead := map[string]string{}
	if o, ok := p.Spec.Overhead["memory"].(string); ok {
		overhead["memory"] = o
	}
	if o, ok := p.Spec.Overhead["cpu"].(string); ok {
		overhead["cpu"] = o
	}
	if overhead["memory"] != "224Mi" || overhead["cpu"] != "250m" {
		t.Errorf("pod overhead %v: want the RuntimeClass's (224Mi, 250m)", p.Spec.Overhead)
	}
	// Guaranteed: the pod's cgroup is kubepods/pod<uid>.
	memDir := n.podCgroup("memory", p.Metadata.UID)
	limit := readInt(t, filepath.Join(memDir, "memory.limit_in_bytes"))
	if want := int64(64+224) << 20; limit != want {
		t.Errorf("pod memory limit %d, want %d (64Mi + 224Mi overhead)", limit, want)
	}
	quota := readInt(t, filepath.Join(n.podCgroup("cpu", p.Metadata.UID), "cpu.cfs_quota_us"))
	if quota != 75000 {
		t.Errorf("pod CPU quota %dus per 100ms, want 75000 (500m + 250m overhead)", quota)
	}
	vms := qemuOf(p.Metadata.UID)
	if len(vms) != 1 {
		t.Fatalf("QEMUs in the pod's cgroup: %v", vms)
	}
	usage := readInt(t, filepath.Join(memDir, "memory.usage_in_bytes"))
	m, err := harness.ReadMemory(vms[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod cgroup: limit %d MiB, usage %d MiB; its QEMU: RSS %.1f MiB, PSS %.1f MiB", limit>>20, usage>>20, m.RSS, m.PSS)
	if usage >= limit || m.RSS >= 224 {
		t.Errorf("the VM does not fit: cgroup usage %d of %d bytes, QEMU RSS %.1f MiB of a 224 MiB overhead", usage, limit, m.RSS)
	}
	n.deletePods("sized")
}

// testProbes: kubelet's HTTP readiness probe reaches the VM's server,
// its exec liveness probe runs in the guest, and a failed liveness
// restarts the container in the same VM.
func (n *Node) testProbes(t *testing.T) {
	n = n.sub(t)
	n.apply(webPod("web", "podvm"))
	p := n.waitReady("web")
	vms := qemuOf(p.Metadata.UID)
	n.kubectl("exec", "web", "--", "rm", "/www/index.html")
	n.waitPod("web", "not Ready once its page is gone", time.Minute, func(p *Pod) bool { return !p.ready() })
	n.kubectl("exec", "web", "--", "sh", "-c", "echo ok > /www/index.html")
	n.waitReady("web")
	n.kubectl("exec", "web", "--", "rm", "/tmp/healthy")
	p = n.waitPod("web", "restarted by its liveness probe", 2*time.Minute, func(p *Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1 && p.ready()
	})
	if after := qemuOf(p.Metadata.UID); !slices.Equal(vms, after) || len(vms) != 1 {
		t.Errorf("QEMU before the restart %v, after %v: want the same VM", vms, after)
	}
	n.deletePods("web")
}

// webPod serves /www on port 8080, Ready while /www/index.html exists,
// alive while /tmp/healthy does (both made at each start).
func webPod(name, runtimeClass string) string {
	c := container("web", []string{"sh", "-c", "mkdir -p /www && echo ok > /www/index.html && touch /tmp/healthy && exec httpd -f -p 8080 -h /www"})
	c.ReadinessProbe = map[string]any{"httpGet": map[string]any{"path": "/index.html", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}
	c.LivenessProbe = map[string]any{"exec": map[string]any{"command": []string{"cat", "/tmp/healthy"}}, "periodSeconds": 1, "failureThreshold": 2}
	return pod(name, runtimeClass, c)
}

// testKubectl: exec with stdin, logs, and port-forward through the API
// server and kubelet into the VM.
func (n *Node) testKubectl(t *testing.T) {
	n = n.sub(t)
	n.apply(pod("talk", "podvm", container("main", []string{"sh", "-c", "echo one; echo two >&2; echo three; exec sleep 3600"})))
	n.apply(pod("talk-runc", "", container("main", sleeper)))
	n.apply(webPod("web2", "podvm"))
	n.waitReady("talk")
	n.waitReady("talk-runc")
	for _, p := range []string{"talk-runc", "talk"} {
		for i := 0; i < 3; i++ {
			if out, err := n.kubectlStdin([]byte("from stdin\n"), "exec", "-i", p, "--", "cat"); err != nil || out != "from stdin\n" {
				t.Errorf("%s: kubectl exec -i cat = %q, %v", p, out, err)
			}
		}
	}
	if _, err := n.kubectlQuiet("exec", "talk", "--", "sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("kubectl exec of exit 7: %v, want exit status 7", err)
	}
	if out := n.kubectl("logs", "talk"); out != "one\ntwo\nthree\n" && out != "one\nthree\ntwo\n" && out != "two\none\nthree\n" {
		t.Errorf("kubectl logs = %q", out)
	}
	n.waitReady("web2")
	page, err := n.portForward("web2", 8080, "/index.html")
	if err != nil || !strings.HasSuffix(page, "\r\n\r\nok\n") {
		t.Errorf("kubectl port-forward: %q, %v", page, err)
	}
	n.deletePods("talk", "talk-runc", "web2")
}

// testCrashRestart: a crashing container is restarted by kubelet, with
// back-off, in the same VM; its previous run's log is kept.
func (n *Node) testCrashRestart(t *testing.T) {
	n = n.sub(t)
	n.apply(pod("crash", "podvm", container("main", []string{"sh", "-c", "echo started; sleep 1; exit 3"})))
	var vms []int
	sawBackOff := false
	p := n.waitPod("crash", "restarted twice", 3*time.Minute, func(p *Pod) bool {
		if vms == nil {
			vms = qemuOf(p.Metadata.UID)
		}
		cs := p.Status.ContainerStatuses
		if len(cs) == 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == "CrashLoopBackOff" {
			sawBackOff = true
		}
		return len(cs) == 1 && cs[0].RestartCount >= 2
	})
	cs := p.Status.ContainerStatuses[0]
	if cs.LastState.Terminated == nil || cs.LastState.Terminated.ExitCode != 3 {
		t.Errorf("last state %+v: want terminated with exit code 3", cs.LastState)
	}
	if !sawBackOff {
		t.Errorf("never saw CrashLoopBackOff between the restarts")
	}
	if after := qemuOf(p.Metadata.UID); len(vms) != 1 || !slices.Equal(vms, after) {
		t.Errorf("QEMU at the first run %v, after two restarts %v: want one VM throughout", vms, after)
	}
	if out, err := n.kubectlQuiet("logs", "--previous", "crash"); err != nil || out != "started\n" {
		t.Errorf("kubectl logs --previous = %q, %v", out, err)
	}
	n.deletePods("crash")
}

// testGracefulDelete: deleting a pod sends SIGTERM, which a container can
// handle; one that ignores it is killed at its grace period.
func (n *Node) testGracefulDelete(t *testing.T) {
	n = n.sub(t)
	// The handler's word goes to the host through a hostPath volume: the
	// pod object is gone by the time the test could read its logs.
	mark := t.TempDir()
	handles := container("main", []string{"sh", "-c", `trap 'echo TERM > /mark/got; exit 0' TERM; while true; do sleep 0.1; done`})
	handles.VolumeMounts = []any{map[string]string{"name": "mark", "mountPath": "/mark"}}
	p := newPod("handles", "podvm", handles)
	p.Spec.Volumes = []any{map[string]any{"name": "mark", "hostPath": map[string]string{"path": mark}}}
	grace := 30
	p.Spec.TerminationGracePeriodSeconds = &grace
	n.apply(p.manifest())
	ignores := newPod("ignores", "podvm", container("main", []string{"sh", "-c", `trap '' TERM; while true; do sleep 0.1; done`}))
	short := 4
	ignores.Spec.TerminationGracePeriodSeconds = &short
	n.apply(ignores.manifest())
	n.waitReady("handles")
	n.waitReady("ignores")

	tookHandled := n.timeDelete("handles")
	if b, err := os.ReadFile(filepath.Join(mark, "got")); err != nil || string(b) != "TERM\n" {
		t.Errorf("the container's TERM handler did not run: %q %v", b, err)
	}
	if tookHandled > 15*time.Second {
		t.Errorf("a pod that exits on SIGTERM took %v to delete (grace 30 s)", tookHandled)
	}
	took := n.timeDelete("ignores")
	if took < time.Duration(short)*time.Second || took > time.Duration(short)*time.Second+20*time.Second {
		t.Errorf("a pod that ignores SIGTERM took %v to delete, want its grace period (%d s) and then SIGKILL", took, short)
	}
	t.Logf("delete: handles TERM %v; ignores TERM (grace %d s) %v", tookHandled, short, took)
}

// testOOM: a container over its memory limit is OOM-killed in the guest
// and kubelet reports OOMKilled.
func (n *Node) testOOM(t *testing.T) {
	n = n.sub(t)
	c := container("main", []string{"sh", "-c", "echo allocating; exec dd if=/dev/zero of=/dev/null bs=96M count=1"})
	c.Resources = map[string]any{"limits": map[string]string{"memory": "32Mi"}}
	p := newPod("oom", "podvm", c)
	p.Spec.RestartPolicy = "Never"
	n.apply(p.manifest())
	p = n.waitPod("oom", "terminated", 2*time.Minute, func(p *Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].State.Terminated != nil
	})
	if term := p.Status.ContainerStatuses[0].State.Terminated; term.Reason != "OOMKilled" || term.ExitCode != 137 {
		logs, _ := n.kubectlQuiet("logs", "oom")
		t.Errorf("container terminated %+v, want OOMKilled with 137; its log: %q", *term, logs)
	}
	n.deletePods("oom")
}

// testTwoContainers: two containers of a pod share its loopback and an
// emptyDir, in one VM.
func (n *Node) testTwoContainers(t *testing.T) {
	n = n.sub(t)
	server := container("server", []string{"httpd", "-f", "-p", "127.0.0.1:8081", "-h", "/shared"})
	writer := container("writer", []string{"sh", "-c", "echo from-writer > /shared/msg; exec sleep 3600"})
	for _, c := range []*Container{&server, &writer} {
		c.VolumeMounts = []any{map[string]string{"name": "shared", "mountPath": "/shared"}}
	}
	p := newPod("duo", "podvm", server, writer)
	p.Spec.Volumes = []any{map[string]any{"name": "shared", "emptyDir": map[string]any{}}}
	n.apply(p.manifest())
	p = n.waitReady("duo")
	if out := n.kubectl("exec", "duo", "-c", "server", "--", "cat", "/shared/msg"); out != "from-writer\n" {
		t.Errorf("the server container reads %q from the emptyDir, want the writer's word", out)
	}
	out := n.kubectl("exec", "duo", "-c", "writer", "--", "sh", "-c", `printf 'GET /msg HTTP/1.0\r\n\r\n' | nc 127.0.0.1 8081`)
	if !strings.HasSuffix(out, "\r\n\r\nfrom-writer\n") {
		t.Errorf("the writer reaching the server on localhost got %q", out)
	}
	if vms := qemuOf(p.Metadata.UID); len(vms) != 1 {
		t.Errorf("QEMUs of the two-container pod: %v, want one", vms)
	}
	n.deletePods("duo")
}

// testVMKilled: when a pod's VM dies (QEMU killed, as the OOM killer or
// an operator might), kubelet sees its containers and sandbox exit and
// starts the pod again in a new VM; the old VM leaves nothing behind.
func (n *Node) testVMKilled(t *testing.T) {
	n = n.sub(t)
	n.apply(pod("phoenix", "podvm", container("main", sleeper)))
	p := n.waitReady("phoenix")
	vms := qemuOf(p.Metadata.UID)
	if len(vms) != 1 {
		t.Fatalf("QEMUs of the pod: %v", vms)
	}
	if err := syscall.Kill(vms[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p = n.waitPod("phoenix", "Ready again in a new VM", 3*time.Minute, func(p *Pod) bool {
		after := qemuOf(p.Metadata.UID)
		return p.ready() && len(after) == 1 && after[0] != vms[0] &&
			len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	if out := n.kubectl("exec", "phoenix", "--", "uname", "-r"); !strings.HasSuffix(strings.TrimSpace(out), "-podvm") {
		t.Errorf("after the restart, uname -r = %q", out)
	}
	n.deletePods("phoenix")
	var left harness.Census
	n.waitUntilOr("no QEMU or shim once the pod is deleted", time.Minute, func() bool {
		left = harness.TakeCensus()
		return len(left.QEMU)+len(left.Shims) == 0
	}, func() string { return fmt.Sprintf("QEMU %v, shims %v", left.QEMU, left.Shims) })
}

// qemuOf finds the QEMU processes in the cgroup of the pod with uid.
func qemuOf(uid string) []int {
	var pids []int
	for _, q := range harness.TakeCensus().QEMU {
		var pid int
		fmt.Sscan(q, &pid)
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if strings.Contains(string(b), "/pod"+uid+"/") {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// podCgroup is the pod's cgroup directory in one v1 hierarchy.
func (n *Node) podCgroup(controller, uid string) string {
	n.t.Helper()
	var found string
	filepath.WalkDir(filepath.Join("/sys/fs/cgroup", controller, n.cgroupRoot), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "pod"+uid {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	if found == "" {
		n.t.Fatalf("no %s cgroup for pod %s below %s", controller, uid, n.cgroupRoot)
	}
	return found
}

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// deletePods deletes pods and waits until they are gone.
func (n *Node) deletePods(names ...string) {
	n.t.Helper()
	n.kubectl(append([]string{"delete", "pod", "--wait", "--timeout=2m"}, names...)...)
}

// timeDelete deletes a pod and returns how long until it was gone.
func (n *Node) timeDelete(name string) time.Duration {
	n.t.Helper()
	start := time.Now()
	n.deletePods(name)
	return time.Since(start)
}
