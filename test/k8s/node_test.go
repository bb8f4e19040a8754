//go:build k8s

// Package k8s runs a Kubernetes node against the test's containerd: etcd,
// kube-apiserver and kubelet built from the Go module proxy (`make
// k8s-tools`), all inside a network namespace the test made, and pods of
// RuntimeClass podvm through them: `make k8s-e2e`.
package k8s

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

const (
	nodeName = "podvm-node"
	// nodeIP is the node's address, on the loopback device of the test's
	// namespace (this kernel has no dummy devices): kubelet refuses a
	// 127/8 node IP, and the API server reaches kubelet there for exec,
	// logs and port-forward.
	nodeIP        = "10.68.0.1"
	apiServerPort = "6443"
)

// toolsDir is where `make k8s-tools` puts etcd, kube-apiserver, kubelet and
// kubectl.
func toolsDir() string { return filepath.Join(harness.RepoRoot(), "build", "tools", "k8s") }

// Node is a one-node cluster: etcd, kube-apiserver and kubelet in the test
// containerd's network namespace, with kubectl to drive it.
type Node struct {
	t          testing.TB
	ctd        *harness.Containerd
	dir        string
	kubeconfig string
	rootDir    string // kubelet's --root-dir
	logsDir    string // kubelet's podLogsDir
	cgroupRoot string // kubelet's cgroupRoot, below every v1 hierarchy
	procs      map[string]*process
	sysctls    map[string][]byte // as they were before kubelet started
	// hadLogLinks: /var/log/containers, where kubelet links container
	// logs, was there before.
	hadLogLinks bool
}

// process is one of the node's programs.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// StartNode starts the cluster against ctd, with deploy/'s RuntimeClass,
// and registers its teardown:
// every pod deleted, the programs stopped, kubelet's cgroups, mounts, log
// links and kernel settings as they were before; what could not be undone
// fails the test.
func StartNode(t testing.TB, ctd *harness.Containerd) *Node {
	t.Helper()
	for _, bin := range []string{"etcd", "kube-apiserver", "kubelet", "kubectl"} {
		_, err := os.Stat(filepath.Join(toolsDir(), bin))
		harness.Need(t, err == nil, filepath.Join(toolsDir(), bin)+" is missing (make k8s-tools)")
	}
	dir, err := os.MkdirTemp("", "podvm-k8s-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{t: t, ctd: ctd, dir: dir, procs: map[string]*process{},
		rootDir: filepath.Join(dir, "kubelet"), logsDir: filepath.Join(dir, "pods"),
		cgroupRoot: "/" + filepath.Base(dir)}
	t.Cleanup(n.teardown)
	n.must(n.netns("ip", "addr", "add", nodeIP+"/32", "dev", "lo"))
	n.startEtcd()
	n.startAPIServer()
	n.startKubelet()
	rc, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy", "runtimeclass.yaml"))
	n.must(err)
	n.apply(string(rc))
	return n
}

func (n *Node) must(err error) {
	n.t.Helper()
	if err != nil {
		n.t.Fatal(err)
	}
}

// netns runs a command in the node's network namespace.
func (n *Node) netns(name string, args ...string) error {
	argv := n.inNetNS(name, args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// inNetNS is the command line that runs name in the node's network
// namespace (nsenter, not `ip netns exec`, which hides the cgroups).
func (n *Node) inNetNS(name string, args ...string) []string {
	return append([]string{"nsenter", "--net=/var/run/netns/" + n.ctd.NetNS, name}, args...)
}

// start runs one of the node's programs in the namespace, its output in
// dir/<name>.log.
func (n *Node) start(name string, args ...string) {
	n.t.Helper()
	logPath := filepath.Join(n.dir, name+".log")
	logf, err := os.Create(logPath)
	n.must(err)
	defer logf.Close()
	argv := n.inNetNS(filepath.Join(toolsDir(), name), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n.must(cmd.Start())
	p := &process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	n.procs[name] = p
}

// stop ends a program: SIGTERM, then SIGKILL after grace.
func (n *Node) stop(name string, grace time.Duration) {
	p := n.procs[name]
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	delete(n.procs, name)
}

// waitUntil polls ok until it holds, or fails naming what, with the log
// of the program that should have made it hold (at once if it exited).
func (n *Node) waitUntil(what, program string, timeout time.Duration, ok func() bool) {
	n.t.Helper()
	p := n.procs[program]
	n.waitUntilOr(what, timeout, func() bool {
		select {
		case <-p.done:
			n.t.Fatalf("%s exited while waiting for %s; its log:\n%s", program, what, tailFile(p.log, 60))
		default:
		}
		return ok()
	}, func() string { return program + "'s log:\n" + tailFile(p.log, 60) })
}

// waitUntilOr polls ok, failing after timeout with what describe says.
func (n *Node) waitUntilOr(what string, timeout time.Duration, ok func() bool, describe func() string) {
	n.t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: not after %v\n%s", what, timeout, strings.TrimSpace(describe()))
		}
	}
}

func (n *Node) startEtcd() {
	n.start("etcd", "--name", "podvm", "--data-dir", filepath.Join(n.dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "podvm=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level", "warn")
}

// startAPIServer starts kube-apiserver on the namespace's loopback with a
// token for kubelet and kubectl, and waits until it is ready.
func (n *Node) startAPIServer() {
	token := make([]byte, 16)
	rand.Read(token)
	tok := hex.EncodeToString(token)
	n.must(os.WriteFile(filepath.Join(n.dir, "tokens.csv"), []byte(tok+`,admin,admin,"system:masters"`+"\n"), 0o600))
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	n.must(err)
	saKey := filepath.Join(n.dir, "sa.key")
	n.must(os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))
	n.kubeconfig = filepath.Join(n.dir, "kubeconfig")
	n.must(os.WriteFile(n.kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: node
  cluster: {server: "https://127.0.0.1:%s", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: node
  context: {cluster: node, user: admin}
current-context: node
`, apiServerPort, tok)), 0o600))
	n.start("kube-apiserver", "--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "127.0.0.1", "--secure-port", apiServerPort, "--advertise-address", nodeIP,
		"--cert-dir", filepath.Join(n.dir, "apiserver"), "--token-auth-file", filepath.Join(n.dir, "tokens.csv"),
		"--authorization-mode", "AlwaysAllow", "--allow-privileged",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey, "--service-cluster-ip-range", "10.67.0.0/24",
		// No controller manager makes service accounts: pods go without.
		"--disable-admission-plugins", "ServiceAccount", "--endpoint-reconciler-type", "none",
		"--kubelet-preferred-address-types", "InternalIP", "--enable-priority-and-fairness=false")
	n.waitUntil("the API server ready", "kube-apiserver", 2*time.Minute, func() bool {
		out, err := n.kubectlQuiet("get", "--raw", "/readyz")
		return err == nil && strings.TrimSpace(out) == "ok"
	})
}

// kubeSysctls are the kernel settings kubelet sets at start unless
// protectKernelDefaults (which instead refuses to start on a host that
// differs): the teardown puts back what they were.
var kubeSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// startKubelet starts kubelet with containerd as its runtime and waits for
// the node to be Ready.
func (n *Node) startKubelet() {
	n.sysctls = map[string][]byte{}
	for _, s := range kubeSysctls {
		b, err := os.ReadFile("/proc/sys/" + s)
		n.must(err)
		n.sysctls[s] = b
	}
	_, err := os.Stat("/var/log/containers")
	n.hadLogLinks = err == nil
	n.must(makeCgroupRoot(n.cgroupRoot))
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %q
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: %q
cgroupDriver: cgroupfs
cgroupRoot: %q
failCgroupV1: false
failSwapOn: false
podLogsDir: %q
makeIPTablesUtilChains: false
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 5s
nodeStatusUpdateFrequency: 4s
`, nodeIP, "unix://"+n.ctd.Address, n.cgroupRoot, n.logsDir)
	configPath := filepath.Join(n.dir, "kubelet.yaml")
	n.must(os.WriteFile(configPath, []byte(config), 0o644))
	n.start("kubelet", "--config", configPath, "--kubeconfig", n.kubeconfig, "--root-dir", n.rootDir,
		"--hostname-override", nodeName, "--node-ip", nodeIP, "--v", "2")
	n.waitUntil("node "+nodeName+" Ready", "kubelet", 2*time.Minute, func() bool {
		out, err := n.kubectlQuiet("get", "node", nodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True"
	})
}

// kubectl runs kubectl against the node's API server (in its namespace,
// so that port-forward listens there) and fails the test on error.
func (n *Node) kubectl(args ...string) string {
	n.t.Helper()
	out, err := n.kubectlQuiet(args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

func (n *Node) kubectlQuiet(args ...string) (string, error) {
	return n.kubectlStdin(nil, args...)
}

func (n *Node) kubectlStdin(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := n.kubectlCmd(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

func (n *Node) kubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	argv := n.inNetNS(filepath.Join(toolsDir(), "kubectl"), append([]string{"--kubeconfig", n.kubeconfig}, args...)...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// apply creates or updates objects from YAML.
func (n *Node) apply(yaml string) {
	n.t.Helper()
	if out, err := n.kubectlStdin([]byte(yaml), "apply", "-f", "-"); err != nil {
		n.t.Fatalf("%v\n%s", err, yaml)
	} else {
		n.t.Logf("%s", strings.TrimSpace(out))
	}
}

// teardown deletes every pod through the API (kubelet stops their
// containers and VMs), stops the programs, and removes what kubelet left:
// anything it had to remove by force is a leak and fails the test.
func (n *Node) teardown() {
	t := n.t
	if n.procs["kubelet"] != nil && n.procs["kube-apiserver"] != nil {
		if _, err := n.kubectlQuiet("delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--timeout=2m"); err != nil {
			t.Errorf("deleting the pods: %v", err)
		}
		// kubelet removes a deleted pod's cgroup in its housekeeping,
		// a little after the pod is gone.
		for deadline := time.Now().Add(30 * time.Second); len(podCgroups(n.cgroupRoot)) > 0 && time.Now().Before(deadline); {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if t.Failed() {
		for _, name := range []string{"kubelet", "kube-apiserver", "etcd"} {
			t.Logf("%s log:\n%s", name, tailFile(filepath.Join(n.dir, name+".log"), 40))
		}
	}
	n.stop("kubelet", 30*time.Second)
	n.stop("kube-apiserver", 30*time.Second)
	n.stop("etcd", 10*time.Second)
	for s, b := range n.sysctls {
		if err := os.WriteFile("/proc/sys/"+s, b, 0o644); err != nil {
			t.Errorf("restoring %s: %v", s, err)
		}
	}
	// kubelet makes its root directory a shared mount of its own (for
	// mount propagation into pods) and leaves it: only mounts below it
	// are leaks.
	for _, m := range harness.MountsUnder(n.dir) {
		if m != n.rootDir {
			t.Errorf("leak: kubelet left %s mounted", m)
		}
	}
	harness.UnmountUnder(n.dir)
	// kubelet links each container's log into /var/log/containers (a
	// fixed path) and removes a link when its container-GC (once a
	// minute) removes the container, which a stopped kubelet no longer
	// does: the test removes the links into its own log directory.
	links, _ := filepath.Glob("/var/log/containers/*")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, n.logsDir+"/") {
			os.Remove(l)
		}
	}
	if left := podCgroups(n.cgroupRoot); len(left) > 0 {
		t.Errorf("leak: kubelet left pod cgroups %v", left)
	}
	if err := removeCgroupRoot(n.cgroupRoot); err != nil {
		t.Errorf("leak: %v", err)
	}
	if !n.hadLogLinks {
		os.Remove("/var/log/containers")
	}
	if err := os.RemoveAll(n.dir); err != nil {
		t.Errorf("removing %s: %v", n.dir, err)
	}
}

func tailFile(path string, lines int) string {
	b, _ := os.ReadFile(path)
	return harness.TailLines(strings.TrimRight(string(b), "\n"), lines)
}
