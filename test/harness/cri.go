package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CRISubnet is the pod network of the CRI harness: a CNI bridge in the test
// containerd's network namespace.
const CRISubnet = "10.66.0.0/24"

// CRIConfig is the containerd configuration for CRI: handlers runc,
// podvm, podvm-broken and podvm-q35 (VMs that grow), on containerd 2.x
// podvm-sandbox (the Sandbox API, sandboxer = "shim"), the local pause
// image, and a CNI bridge whose configuration and IP allocations live in
// dir, in the layout of this run's containerd (config version 2 for 1.x,
// 3 for 2.x). restrict_oom_score_adj is needed on hosts without
// CAP_SYS_RESOURCE. The podvm runtimes are the README's snippets for that
// containerd, verbatim.
func CRIConfig(dir string) (string, error) {
	plugin := `"io.containerd.grpc.v1.cri"`
	if Containerd2() {
		plugin = `"io.containerd.cri.v1.runtime"`
	}
	podvm, err := READMEBlock("toml", plugin+".containerd.runtimes.podvm]")
	if err != nil {
		return "", err
	}
	runtimes := fmt.Sprintf(`
    [plugins.%s.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`, plugin)
	// podvm-NAME runs podvm with NAME.toml (WriteCNIConfig) over the
	// node's configuration.
	for _, name := range podvmVariants {
		runtimes += fmt.Sprintf(`    [plugins.%[1]s.containerd.runtimes.podvm-%[2]s]
      runtime_type = "io.containerd.podvm.v2"
      [plugins.%[1]s.containerd.runtimes.podvm-%[2]s.options]
        ConfigPath = %[3]q
`, plugin, name, filepath.Join(dir, name+".toml"))
	}
	if Containerd2() {
		sandboxer, err := READMEBlock("toml", plugin+".containerd.runtimes.podvm-sandbox]")
		if err != nil {
			return "", err
		}
		runtimes += sandboxer
		return fmt.Sprintf(`
[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
%s
%s`, PauseImage, filepath.Join(dir, "net.d"), runtimes, podvm), nil
	}
	return fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
%s
%s`, PauseImage, filepath.Join(dir, "net.d"), runtimes, podvm), nil
}

// BrokenKernel is the kernel the podvm-broken handler's configuration
// names: it does not exist, so its pods fail to start.
const BrokenKernel = "/nonexistent/podvm/vmlinux"

// podvmVariants name the CRI handlers podvm-NAME beside podvm, each with
// its configuration file: a guest that cannot boot, the q35 machine, the
// other two network models.
var podvmVariants = []string{"broken", "q35", "macvtap", "bridge"}

// variantConfig is the configuration of handler podvm-name.
func variantConfig(name string) string {
	switch name {
	case "broken":
		return fmt.Sprintf("[hypervisor]\nkernel = %q\n", BrokenKernel)
	case "q35":
		return "[hypervisor]\nmachine = \"q35\"\nvcpus = 1\nmemory_mib = 512\n"
	}
	return fmt.Sprintf("[network]\nmodel = %q\n", name)
}

// WriteCNIConfig writes the bridge network CRIConfig points at, and the
// configurations of the podvm-NAME handlers.
func WriteCNIConfig(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
		return err
	}
	for _, name := range podvmVariants {
		if err := os.WriteFile(filepath.Join(dir, name+".toml"), []byte(variantConfig(name)), 0o644); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`{"cniVersion":"0.4.0","name":"podvm-cri","plugins":[{"type":"bridge","bridge":"podvmcri0","isGateway":true,"ipMasq":false,
"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
		filepath.Join(dir, "ipam"), CRISubnet)
	return os.WriteFile(filepath.Join(dir, "net.d", "10-podvm-cri.conflist"), []byte(conf), 0o644)
}

// StartCRI starts a private containerd with CRI, its CNI network and images;
// extra is appended to its configuration.
func StartCRI(t testing.TB, extra ...string) *Containerd {
	t.Helper()
	_, err := exec.LookPath(Crictl())
	Need(t, err == nil, "crictl is missing (make deps builds it into build/tools)")
	dir := t.TempDir()
	if err := WriteCNIConfig(dir); err != nil {
		t.Fatal(err)
	}
	config, err := CRIConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := StartContainerd(t, config+strings.Join(extra, "\n"))
	c.CNIDir = dir
	if err := c.Import(); err != nil {
		t.Fatal(err)
	}
	return c
}

// NewCRI is StartCRI outside a test: the caller Stops and Removes it.
func NewCRI() (*Containerd, error) {
	dir, err := os.MkdirTemp("", "podvm-cni-")
	if err != nil {
		return nil, err
	}
	if err := WriteCNIConfig(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	config, err := CRIConfig(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c, err := NewContainerd(config)
	if c != nil {
		c.CNIDir = dir
	}
	if err == nil {
		err = c.Import()
	}
	return c, err
}

// Crictl is crictl: build/tools of the tree, else PATH.
func Crictl() string {
	p := filepath.Join(RepoRoot(), "build", "tools", "crictl")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "crictl"
}

// Crictl runs crictl against this containerd.
func (c *Containerd) Crictl(ctx context.Context, args ...string) (string, string, error) {
	return c.crictl(ctx, nil, false, args...)
}

// CrictlStdin runs a streaming crictl (exec -i, attach) with stdin, in
// containerd's network namespace, where its streaming server listens.
func (c *Containerd) CrictlStdin(ctx context.Context, stdin []byte, args ...string) (string, string, error) {
	return c.crictl(ctx, stdin, true, args...)
}

func (c *Containerd) crictl(ctx context.Context, stdin []byte, inNetNS bool, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	endpoint := "unix://" + c.Address
	argv := append([]string{Crictl(), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--timeout", "2m"}, args...)
	if inNetNS {
		argv = append([]string{"nsenter", "--net=/var/run/netns/" + c.NetNS}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = c.Env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// WriteJSON writes v as JSON into dir/name and returns the path.
func WriteJSON(dir, name string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, b, 0o644)
}
