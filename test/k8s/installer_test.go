//go:build k8s

package k8s

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/podvm/podvm/install"
	"github.com/podvm/podvm/test/harness"
)

// testInstaller has kubelet run deploy/podvm-deploy.yaml's installer pod
// (runc) on a node root of the test's, and delete it.
//
// What it cannot show here, and why: the DaemonSet controller making the
// pod (no kube-controller-manager or scheduler run here: the test creates
// the pod the controller would, from the DaemonSet's own template, named
// for the node); `--restart-containerd` (the node's containerd is the
// test's private one, not systemd's unit, and restarting it would take
// kubelet's runtime away mid-test: the argument is dropped, as in
// TestDeploy); the host's real / (a temporary node root stands in for it).
func (n *Node) testInstaller(t *testing.T) {
	n = n.sub(t)
	dir := t.TempDir()
	prefix, sources, err := harness.DeployPrefix(dir, install.Binary)
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "podvm-deploy.tar")
	if err := install.WriteImage(tarball, prefix); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, errOut, err := n.ctd.Ctr(ctx, "-n", "k8s.io", "image", "import", tarball); err != nil {
		t.Fatalf("ctr image import: %v: %s", err, errOut)
	}
	defer n.ctd.Ctr(context.Background(), "-n", "k8s.io", "image", "rm", install.ImageName)

	// The DaemonSet mounts the host's / with HostToContainer propagation,
	// which needs a shared (or slave) mount, as / is under systemd; this
	// host's / is private, so the stand-in is made a shared mount.
	node := filepath.Join(dir, "node")
	if err := os.MkdirAll(node, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(node, node, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(node, unix.MNT_DETACH)
	if err := unix.Mount("", node, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	ctdConfig := "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
	if harness.Containerd2() {
		ctdConfig = "version = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
	}
	if err := os.MkdirAll(filepath.Join(node, "etc", "containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(node, "etc", "containerd", "config.toml"), []byte(ctdConfig), 0o644); err != nil {
		t.Fatal(err)
	}

	pod := installerPod(t, node)
	n.apply(pod)
	n.waitPod("kube-system/podvm-deploy-"+nodeName, "Running", 3*time.Minute, func(p *Pod) bool { return p.Status.Phase == "Running" })
	n.waitUntilOr("the podvm runtime in the node's containerd config", 2*time.Minute, func() bool {
		c, err := install.ReadContainerdConfig(node, "/etc/containerd/config.toml", 0)
		return err == nil && reflect.DeepEqual(c.PodvmRuntimes(), []string{"podvm"})
	}, func() string {
		logs, _ := n.kubectlQuiet("-n", "kube-system", "logs", "podvm-deploy-"+nodeName)
		return logs
	})
	for dst := range sources {
		if _, err := os.Stat(filepath.Join(node, "opt", "podvm", dst)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}

	// Deleting the pod (as deleting the DaemonSet would): SIGTERM, and the
	// installer undoes its work within the grace period.
	n.kubectl("-n", "kube-system", "delete", "pod", "podvm-deploy-"+nodeName, "--wait", "--timeout=2m")
	var left []string
	filepath.Walk(node, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			left = append(left, p[len(node):])
		}
		return nil
	})
	if !slices.Equal(left, []string{"/etc/containerd/config.toml"}) {
		t.Errorf("left on the node after the installer pod went: %v", left)
	}
	if b, _ := os.ReadFile(filepath.Join(node, "etc", "containerd", "config.toml")); string(b) != ctdConfig {
		t.Errorf("containerd config after uninstall:\n%s", b)
	}
}

// installerPod is the pod the DaemonSet controller would make on the node
// from deploy/podvm-deploy.yaml, with the host path / replaced by root and
// without --restart-containerd.
func installerPod(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy", "podvm-deploy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Metadata struct {
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
		Spec struct {
			Template struct {
				Metadata map[string]any `yaml:"metadata"`
				Spec     map[string]any `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatalf("deploy/podvm-deploy.yaml: %v", err)
	}
	spec := ds.Spec.Template.Spec
	// Only the fields changed are typed: the rest goes to the API server
	// as the DaemonSet has it.
	var edit struct {
		Containers []struct {
			Args []string `yaml:"args"`
		} `yaml:"containers"`
		Volumes []struct {
			HostPath struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	}
	raw, _ := yaml.Marshal(spec)
	if err := yaml.Unmarshal(raw, &edit); err != nil || len(edit.Containers) != 1 || len(edit.Volumes) != 1 || edit.Volumes[0].HostPath.Path != "/" {
		t.Fatalf("deploy/podvm-deploy.yaml: want one container and the host's / as its one volume: %v %+v", err, edit)
	}
	containers := spec["containers"].([]any)
	c := containers[0].(map[string]any)
	c["args"] = slices.DeleteFunc(edit.Containers[0].Args, func(a string) bool { return a == "--restart-containerd" })
	v := spec["volumes"].([]any)[0].(map[string]any)
	v["hostPath"].(map[string]any)["path"] = root
	spec["nodeName"] = nodeName
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "podvm-deploy-" + nodeName, "namespace": ds.Metadata.Namespace, "labels": ds.Spec.Template.Metadata["labels"]},
		"spec":     spec,
	}
	out, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
