package e2e

import (
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

	"github.com/podvm/podvm/test/harness"
)

type cri struct {
	t   *testing.T
	ctd *harness.Containerd
	dir string
	n   int
}

func (c *cri) run(args ...string) (string, error) {
	c.t.Helper()
	out, errOut, err := c.ctd.Crictl(context.Background(), args...)
	if err != nil {
		return out, fmt.Errorf("crictl %v: %v: %s", args, err, errOut)
	}
	return strings.TrimSpace(out), nil
}

func (c *cri) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// runp starts a pod under a handler and returns its ID and config file.
func (c *cri) runp(handler string, annotations map[string]string) (id, config string) {
	c.t.Helper()
	config = c.podConfig(handler, annotations)
	return c.must("runp", "--runtime", handler, config), config
}

// podConfig writes a pod's configuration for crictl runp.
func (c *cri) podConfig(handler string, annotations map[string]string) string {
	c.t.Helper()
	return c.podConfigLinux(handler, annotations, map[string]any{})
}

// podConfigLinux is podConfig with the pod's linux settings.
func (c *cri) podConfigLinux(handler string, annotations map[string]string, linux map[string]any) string {
	c.t.Helper()
	c.n++
	name := fmt.Sprintf("%s-pod-%d", handler, c.n)
	logs := filepath.Join(c.dir, name+"-logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		c.t.Fatal(err)
	}
	config, err := harness.WriteJSON(c.dir, name+".json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": fmt.Sprintf("uid-%d", c.n)},
		"hostname":      name,
		"log_directory": logs,
		"annotations":   annotations,
		"linux":         linux,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return config
}

// container creates and starts a busybox container in a pod.
func (c *cri) container(pod, podConfig, name string, cmd ...string) string {
	c.t.Helper()
	return c.limitedContainer(pod, podConfig, name, nil, cmd...)
}

// limitedContainer is container with CRI's linux.resources.
func (c *cri) limitedContainer(pod, podConfig, name string, resources map[string]any, cmd ...string) string {
	c.t.Helper()
	extra := map[string]any{}
	if resources != nil {
		extra["linux"] = map[string]any{"resources": resources}
	}
	return c.containerWith(pod, podConfig, name, extra, cmd...)
}

// containerWith creates and starts a busybox container whose config has
// the extra fields.
func (c *cri) containerWith(pod, podConfig, name string, extra map[string]any, cmd ...string) string {
	c.t.Helper()
	id, err := c.tryCreate(pod, podConfig, name, extra, cmd...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.must("start", id)
	return id
}

// tryCreate creates a busybox container whose config has the extra fields.
func (c *cri) tryCreate(pod, podConfig, name string, extra map[string]any, cmd ...string) (string, error) {
	c.t.Helper()
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": harness.BusyboxImage},
		"command":  cmd,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	config, err := harness.WriteJSON(c.dir, pod+"-"+name+".json", cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.run("create", pod, config, podConfig)
}

func (c *cri) podIP(pod string) string {
	c.t.Helper()
	var st struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(c.must("inspectp", "-o", "json", pod)), &st); err != nil {
		c.t.Fatal(err)
	}
	return st.Status.Network.IP
}

// qemuOf lists the QEMU processes of a pod (podvm names them after the
// sandbox).
func qemuOf(pod string) []string {
	var out []string
	for _, q := range harness.TakeCensus().QEMU {
		if strings.Contains(q, "-name "+pod+" ") {
			out = append(out, q)
		}
	}
	return out
}

// newCRI starts a private containerd with CRI for a test that boots VMs
// through it, and watches for leaks.
func newCRI(t *testing.T) *cri {
	harness.NeedRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: boots VMs through CRI")
	}
	harness.WatchLeaks(t)
	return &cri{t: t, ctd: harness.StartCRI(t), dir: t.TempDir()}
}

// criHandlers are runc and podvm's CRI handlers on this containerd: on
// 2.x also podvm-sandbox, the Sandbox API.
func criHandlers() []string {
	if harness.Containerd2() {
		return []string{"runc", "podvm", "podvm-sandbox"}
	}
	return []string{"runc", "podvm"}
}

func TestCRI(t *testing.T) {
	c := newCRI(t)
	ctd := c.ctd
	peer := func(args ...string) (string, error) {
		out, err := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + ctd.NetNS, harness.Busybox}, args...)...).CombinedOutput()
		return string(out), err
	}

	for _, handler := range criHandlers() {
		t.Run(handler, func(t *testing.T) {
			c.t = t
			pod, podConfig := c.runp(handler, nil)
			ip := c.podIP(pod)
			if !strings.HasPrefix(ip, "10.66.0.") {
				t.Fatalf("pod IP %q is not from the CNI range", ip)
			}
			// A server in one container, reached from the test's
			// namespace and, over localhost, from a second container.
			server := c.container(pod, podConfig, "server", "nc", "-ll", "-p", "8080", "-e", "echo", "hello from "+handler)
			var got string
			waitFor(t, func() bool {
				got, _ = peer("nc", "-w", "3", ip, "8080")
				return strings.Contains(got, "hello from "+handler)
			})
			client := c.container(pod, podConfig, "client", "sh", "-c", "while ! nc -w 2 127.0.0.1 8080; do sleep 0.2; done; sleep 100000")
			waitFor(t, func() bool {
				out, _ := c.run("logs", client)
				return strings.Contains(out, "hello from "+handler)
			})
			checkPortForward(t, c, pod, podConfig, handler)
			// The pod's containers share its /dev/shm, a 64 MiB tmpfs.
			c.must("exec", "-s", server, "sh", "-c", "echo shared-by-"+handler+" > /dev/shm/x")
			if out := c.must("exec", "-s", client, "cat", "/dev/shm/x"); out != "shared-by-"+handler {
				t.Errorf("/dev/shm/x written by one container, read by the other: %q", out)
			}
			if out := c.must("exec", "-s", client, "sh", "-c", "df -k /dev/shm | awk 'NR==2 {print $1, $2}'"); out != "shm 65536" {
				t.Errorf("/dev/shm: %q, want a 64 MiB tmpfs", out)
			}
			if t.Failed() {
				out, err := c.run("logs", client)
				t.Logf("client logs: %q %v", out, err)
				out, err = c.run("exec", "-s", client, "sh", "-c", "ip addr; nc -w 2 127.0.0.1 8080; echo rc=$?; ps; cat /proc/net/tcp")
				t.Logf("client exec: %s %v", out, err)
				out, err = c.run("exec", "-s", server, "sh", "-c", "ip addr; ps; cat /proc/net/tcp")
				t.Logf("server exec: %s %v", out, err)
				out, err = c.run("ps", "-a")
				t.Logf("ps: %s %v", out, err)
			}
			// All of an exec's stdin arrives before its EOF: containerd
			// 2.x's CRI calls CloseIO as soon as it has written the last.
			for i := 0; i < 3; i++ {
				out, errOut, err := ctd.CrictlStdin(context.Background(), []byte("from stdin\n"), "exec", "-i", server, "cat")
				if err != nil || out != "from stdin\n" {
					t.Errorf("crictl exec -i cat = %q, %v: %s", out, err, errOut)
				}
			}
			if handler != "runc" {
				if q := qemuOf(pod); len(q) != 1 {
					t.Errorf("pod %s has %d QEMU processes, want one: %v", pod, len(q), q)
				}
				if out := c.must("exec", "-s", server, "uname", "-r"); !strings.HasSuffix(out, "-podvm") {
					t.Errorf("exec -s uname -r = %q", out)
				}
				// What the RuntimeClass declares as pod overhead must
				// cover what the pod's VM really costs.
				cost, err := podCost(pod)
				overhead := runtimeClassOverhead(t)
				t.Logf("the VM of a two-container pod costs %.0f MiB (QEMU and shim RSS); the RuntimeClass declares %.0f MiB", cost, overhead)
				if err != nil || cost > overhead {
					t.Errorf("pod overhead: %v; cost %.0f MiB > declared %.0f MiB", err, cost, overhead)
				}
				// A CRI ID makes the metrics socket's path longer than
				// a socket address holds under this test's state_dir.
				out, err := exec.Command(harness.ShimBinary(), "metrics", "--state-dir", filepath.Join(ctd.Dir, "podvm")).Output()
				if err != nil || !strings.Contains(string(out), `podvm_vm_boot_seconds{sandbox_id="`+pod+`"}`) {
					t.Errorf("metrics of the pod: %v\n%s", err, out)
				}
			}
			if out := c.must("exec", "-s", server, "hostname"); out != strings.Split(podConfig[strings.LastIndex(podConfig, "/")+1:], ".")[0] {
				t.Errorf("hostname in the pod = %q", out)
			}
			var stats struct {
				Stats []struct {
					Memory struct {
						WorkingSetBytes struct {
							Value string `json:"value"`
						} `json:"workingSetBytes"`
					} `json:"memory"`
				} `json:"stats"`
			}
			if err := json.Unmarshal([]byte(c.must("stats", "-o", "json", "--id", server)), &stats); err != nil || len(stats.Stats) != 1 || stats.Stats[0].Memory.WorkingSetBytes.Value == "" || stats.Stats[0].Memory.WorkingSetBytes.Value == "0" {
				t.Errorf("stats: %+v, %v", stats, err)
			}
			c.must("stopp", pod)
			c.must("stopp", pod)
			c.must("rmp", pod)
			if q := qemuOf(pod); len(q) != 0 {
				t.Errorf("QEMU left after rmp: %v", q)
			}
			checkNoAllocations(t, ctd)
		})
	}

	// A pod's sysctls where runc puts them: network ones in the pod's
	// network (the guest's), IPC ones in its IPC namespace; one that is
	// not namespaced is refused. containerd 2.x adds two network sysctls
	// to every pod.
	t.Run("sysctls", func(t *testing.T) {
		c.t = t
		sysctls := map[string]any{"net.ipv4.ip_forward": "1", "net.ipv4.tcp_keepalive_time": "1234", "kernel.shm_rmid_forced": "1"}
		read := "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/tcp_keepalive_time /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_unprivileged_port_start"
		got := map[string]string{}
		for _, handler := range criHandlers() {
			config := c.podConfigLinux(handler, nil, map[string]any{"sysctls": sysctls})
			pod := c.must("runp", "--runtime", handler, config)
			id := c.container(pod, config, "sleeper", "sleep", "100000")
			got[handler] = strings.Join(strings.Fields(c.must("exec", "-s", id, "sh", "-c", read)), " ")
			c.must("stopp", pod)
			c.must("rmp", pod)
		}
		for _, h := range criHandlers()[1:] {
			if !strings.HasPrefix(got[h], "1 1234 1 ") || got[h] != got["runc"] {
				t.Errorf("sysctls seen in the pod: runc %q, %s %q", got["runc"], h, got[h])
			}
			refused := c.podConfigLinux(h, nil, map[string]any{"sysctls": map[string]any{"vm.swappiness": "10"}})
			if _, err := c.run("runp", "--runtime", h, refused); err == nil || !strings.Contains(err.Error(), "vm.swappiness") || !strings.Contains(err.Error(), "not namespaced") {
				t.Errorf("%s: runp with a sysctl that is not namespaced: %v", h, err)
			}
		}
		if out := c.must("pods", "-q"); out != "" {
			t.Errorf("pods left: %q", out)
		}
	})

	t.Run("failed run", func(t *testing.T) {
		// The handler's ConfigPath (a runtime option) names a kernel that
		// does not exist: runp fails, saying so, and leaves nothing.
		c.t = t
		c.n++
		cfg, _ := harness.WriteJSON(c.dir, "broken.json", map[string]any{
			"metadata": map[string]any{"name": "broken", "namespace": "default", "uid": "broken"}, "linux": map[string]any{}})
		_, err := c.run("runp", "--runtime", "podvm-broken", cfg)
		if err == nil || !strings.Contains(err.Error(), harness.BrokenKernel) {
			t.Errorf("runp with a broken configuration: %v", err)
		}
		if out := c.must("pods", "-q"); out != "" {
			t.Errorf("pods left: %q", out)
		}
		checkNoAllocations(t, ctd)
	})

	// A pod on the node's network cannot be a VM pod: runp says so, names
	// what to use instead, and leaves nothing.
	t.Run("host network refused", func(t *testing.T) {
		c.t = t
		for _, h := range criHandlers()[1:] {
			config := c.podConfigLinux(h, nil, map[string]any{
				"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}})
			_, err := c.run("runp", "--runtime", h, config)
			if err == nil || !strings.Contains(err.Error(), "hostNetwork") || !strings.Contains(err.Error(), "runc RuntimeClass") {
				t.Errorf("%s: runp of a host-network pod: %v", h, err)
			}
		}
		if out := c.must("pods", "-q"); out != "" {
			t.Errorf("pods left: %q", out)
		}
		checkNoAllocations(t, ctd)
	})

	t.Run("binds", func(t *testing.T) {
		c.t = t
		checkBinds(t, c)
		checkNoAllocations(t, ctd)
	})

	t.Run("pod annotations", func(t *testing.T) {
		// Allowed keys size the VM; a key the allowlist does not hold
		// fails runp with its name, leaving nothing.
		c.t = t
		pod, podConfig := c.runp("podvm", map[string]string{
			"io.podvm.config.hypervisor.vcpus":      "2",
			"io.podvm.config.hypervisor.memory_mib": "384",
		})
		sleeper := c.container(pod, podConfig, "sleeper", "sleep", "100000")
		if out := c.must("exec", "-s", sleeper, "nproc"); out != "2" {
			t.Errorf("nproc in a pod annotated with 2 vCPUs = %q", out)
		}
		if q := qemuOf(pod); len(q) != 1 || !strings.Contains(q[0], " -smp 2 ") || !strings.Contains(q[0], " -m 384M ") {
			t.Errorf("QEMU of the annotated pod: %v", q)
		}
		c.must("stopp", pod)
		c.must("rmp", pod)

		refused := c.podConfig("podvm", map[string]string{"io.podvm.config.hypervisor.path": "/bin/true"})
		_, err := c.run("runp", "--runtime", "podvm", refused)
		if err == nil || !strings.Contains(err.Error(), "io.podvm.config.hypervisor.path") || !strings.Contains(err.Error(), "annotations.allowed") {
			t.Errorf("runp with a refused annotation: %v", err)
		}
		if out := c.must("pods", "-q"); out != "" {
			t.Errorf("pods left: %q", out)
		}
		checkNoAllocations(t, ctd)
	})

	// containerd 1.6 sends no pod sizing annotations: a q35 pod's VM
	// grows as containers with limits arrive, and with CRI's updates.
	t.Run("limits grow a q35 pod", func(t *testing.T) {
		c.t = t
		pod, podConfig := c.runp("podvm-q35", nil)
		defer func() {
			c.must("stopp", pod)
			c.must("rmp", pod)
		}()
		sleeper := c.container(pod, podConfig, "sleeper", "sleep", "100000")
		memTotal := func() int {
			kb, err := strconv.Atoi(c.must("exec", "-s", sleeper, "awk", "/^MemTotal:/ {print $2}", "/proc/meminfo"))
			if err != nil {
				t.Fatal(err)
			}
			return kb >> 10
		}
		if n := c.must("exec", "-s", sleeper, "nproc"); n != "1" {
			t.Fatalf("nproc before: %s", n)
		}
		before := memTotal()
		// 768 MiB and one CPU on top of the VM's own 512 MiB and vCPU.
		limited := c.limitedContainer(pod, podConfig, "limited", map[string]any{
			"memory_limit_in_bytes": 768 << 20, "cpu_quota": 100000, "cpu_period": 100000,
		}, "sleep", "100000")
		if n := c.must("exec", "-s", sleeper, "nproc"); n != "2" {
			t.Errorf("nproc after a container with a 1-CPU limit: %s, want 2", n)
		}
		if grown := memTotal() - before; grown != 768 {
			t.Errorf("MemTotal grew by %d MiB for a 768 MiB limit", grown)
		}
		c.must("update", "--memory", strconv.Itoa(1280<<20), limited)
		if grown := memTotal() - before; grown != 1280 {
			t.Errorf("MemTotal grew by %d MiB after crictl update to 1280 MiB", grown)
		}
		if got := c.must("exec", "-s", limited, "sh", "-c", "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max"); got != strconv.Itoa(1280<<20) {
			t.Errorf("memory.max after crictl update: %s", got)
		}
	})

	t.Run("QEMU killed", func(t *testing.T) {
		c.t = t
		pod, podConfig := c.runp("podvm", nil)
		c.container(pod, podConfig, "sleeper", "sleep", "100000")
		q := qemuOf(pod)
		if len(q) != 1 {
			t.Fatalf("QEMU of %s: %v", pod, q)
		}
		var pid int
		fmt.Sscan(q[0], &pid)
		if err := killPid(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		c.must("stopp", pod)
		c.must("rmp", pod)
		checkNoAllocations(t, ctd)
	})
}

// checkNoAllocations fails the test if host-local still holds a pod IP:
// CNI's DEL must have run for every removed pod.
func checkNoAllocations(t *testing.T, ctd *harness.Containerd) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(ctd.CNIDir, "ipam", "podvm-cri"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "10.") {
			t.Errorf("leak: IP allocation %s left", e.Name())
		}
	}
}
