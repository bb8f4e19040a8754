package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/podvm/podvm/install"
	"github.com/podvm/podvm/test/harness"
)

// daemonSet is the part of deploy/podvm-deploy.yaml the test runs.
type daemonSet struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Template struct {
			Spec struct {
				HostPID    bool `yaml:"hostPID"`
				Containers []struct {
					Image        string   `yaml:"image"`
					Args         []string `yaml:"args"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name     string `yaml:"name"`
					HostPath struct {
						Path string `yaml:"path"`
					} `yaml:"hostPath"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// TestDeploy runs deploy/'s DaemonSet container as a kubelet would, with
// runc, on a node whose root is a temporary directory: it installs podvm
// and adds the runtime to containerd's config, and on SIGTERM undoes it,
// leaving the node as it was.
func TestDeploy(t *testing.T) {
	harness.NeedRoot(t)
	harness.WatchLeaks(t)
	var ds daemonSet
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy", "podvm-deploy.yaml"))
	if err == nil {
		err = yaml.Unmarshal(b, &ds)
	}
	pod := ds.Spec.Template.Spec
	if err != nil || ds.Kind != "DaemonSet" || len(pod.Containers) != 1 || len(pod.Volumes) != 1 || len(pod.Containers[0].VolumeMounts) != 1 {
		t.Fatalf("deploy/podvm-deploy.yaml: %v %+v", err, ds)
	}
	ctr := pod.Containers[0]
	if ctr.Image != install.ImageName || pod.Volumes[0].HostPath.Path != "/" || !pod.HostPID {
		t.Errorf("the DaemonSet runs %s with host %s (hostPID %v), want %s with / and hostPID", ctr.Image, pod.Volumes[0].HostPath.Path, pod.HostPID, install.ImageName)
	}
	mountPath := ctr.VolumeMounts[0].MountPath
	// The test's node containerd is not systemd's: everything but the
	// restart runs as the DaemonSet says.
	var args []string
	for _, a := range ctr.Args {
		if a != "--restart-containerd" {
			args = append(args, a)
		}
	}
	if len(args) != len(ctr.Args)-1 {
		t.Errorf("the DaemonSet does not restart containerd: %v", ctr.Args)
	}

	// The image, from the tree's binary and guest assets.
	dir := t.TempDir()
	prefix, sources, err := harness.DeployPrefix(dir, install.Binary)
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "podvm-deploy.tar")
	if err := install.WriteImage(tarball, prefix); err != nil {
		t.Fatal(err)
	}

	node := filepath.Join(dir, "node")
	ctdConfig := "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
	// containerd 2.2+'s generated config imports conf.d: the runtime goes
	// into a file of its own there.
	dropIn := ""
	if harness.Containerd2() {
		ctdConfig = "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
		dropIn = filepath.Join(node, "etc", "containerd", "conf.d", "podvm.toml")
	}
	if err := os.MkdirAll(filepath.Join(node, "etc", "containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(node, "etc", "containerd", "config.toml"), []byte(ctdConfig), 0o644)

	ctd := harness.StartContainerd(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	must := func(args ...string) string {
		t.Helper()
		out, errOut, err := ctd.Ctr(ctx, args...)
		if err != nil {
			t.Fatalf("ctr %v: %v: %s", args, err, errOut)
		}
		return out
	}
	must("image", "import", tarball)
	// A pod's args follow the image's entrypoint; ctr's replace both.
	entrypoint := []string{filepath.Join(install.ImagePrefix, "bin", install.Binary), "install"}
	must(append([]string{"run", "-d", "--runtime", "io.containerd.runc.v2", "--privileged",
		"--mount", "type=bind,src=" + node + ",dst=" + mountPath + ",options=rbind:rw",
		install.ImageName, "podvm-deploy"}, append(entrypoint, args...)...)...)
	defer func() {
		ctd.Ctr(context.Background(), "task", "kill", "-s", "KILL", "podvm-deploy")
		ctd.Ctr(context.Background(), "task", "delete", "-f", "podvm-deploy")
		ctd.Ctr(context.Background(), "container", "delete", "podvm-deploy")
	}()

	installed := filepath.Join(node, "opt", "podvm", "bin", install.Binary)
	waitFor(t, func() bool {
		c, err := install.ReadContainerdConfig(node, "/etc/containerd/config.toml", 0)
		return err == nil && reflect.DeepEqual(c.PodvmRuntimes(), []string{"podvm"})
	})
	for dst, src := range sources {
		want, _ := os.ReadFile(src)
		got, err := os.ReadFile(filepath.Join(node, "opt", "podvm", dst))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("installed %s: %v (%d bytes, want %d)", dst, err, len(got), len(want))
		}
	}
	if target, err := os.Readlink(filepath.Join(node, "usr", "local", "bin", install.Binary)); err != nil || target != "/opt/podvm/bin/"+install.Binary {
		t.Errorf("link in containerd's PATH: %q %v", target, err)
	}
	if _, err := os.Stat(filepath.Join(node, "etc", "podvm", "config.toml")); err != nil {
		t.Errorf("podvm config: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(node, "etc", "containerd", "config.toml")); dropIn != "" && string(b) != ctdConfig {
		t.Errorf("containerd config.toml changed although it imports conf.d: %v\n%s", err, b)
	}
	if _, err := os.Stat(dropIn); dropIn != "" && err != nil {
		t.Errorf("the runtime's drop-in: %v", err)
	}
	if st, err := os.Stat(installed); err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Errorf("installed shim is not executable: %v %v", st, err)
	}

	// Deleting the DaemonSet: SIGTERM, and the container undoes its work.
	must("task", "kill", "-s", "TERM", "podvm-deploy")
	waitFor(t, func() bool {
		out, _, _ := ctd.Ctr(ctx, "task", "ls")
		return strings.Contains(out, "STOPPED")
	})
	var left []string
	filepath.Walk(node, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			left = append(left, strings.TrimPrefix(p, node))
		}
		return nil
	})
	if !reflect.DeepEqual(left, []string{"/etc/containerd/config.toml"}) {
		t.Errorf("left on the node after the DaemonSet went: %v", left)
	}
	if b, _ := os.ReadFile(filepath.Join(node, "etc", "containerd", "config.toml")); string(b) != ctdConfig {
		t.Errorf("containerd config after uninstall:\n%s", b)
	}
}

// runtimeClassOverhead is deploy/runtimeclass.yaml's pod overhead memory in
// MiB.
func runtimeClassOverhead(t *testing.T) float64 {
	t.Helper()
	var rc struct {
		Handler  string `yaml:"handler"`
		Overhead struct {
			PodFixed struct {
				Memory string `yaml:"memory"`
			} `yaml:"podFixed"`
		} `yaml:"overhead"`
	}
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy", "runtimeclass.yaml"))
	if err == nil {
		err = yaml.Unmarshal(b, &rc)
	}
	mem, ok := strings.CutSuffix(rc.Overhead.PodFixed.Memory, "Mi")
	n, perr := strconv.ParseFloat(mem, 64)
	if err != nil || !ok || perr != nil || rc.Handler != "podvm" {
		t.Fatalf("deploy/runtimeclass.yaml: %v, handler %q, overhead memory %q (want NNNMi)", err, rc.Handler, rc.Overhead.PodFixed.Memory)
	}
	return n
}

// podCost is the memory the VM of a pod costs the node: its QEMU's and its
// shim's resident memory, in MiB.
func podCost(pod string) (float64, error) {
	c := harness.TakeCensus()
	var total float64
	var found int
	for _, p := range append(c.QEMU, c.Shims...) {
		if !strings.Contains(p, "-name "+pod+" ") && !strings.Contains(p, "-id "+pod+" ") {
			continue
		}
		var pid int
		fmt.Sscan(p, &pid)
		m, err := harness.ReadMemory(pid)
		if err != nil {
			return 0, err
		}
		total += m.RSS
		found++
	}
	if found != 2 {
		return 0, fmt.Errorf("found %d of the QEMU and shim of pod %s", found, pod)
	}
	return total, nil
}
