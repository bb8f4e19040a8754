package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/podvm/podvm/install"
	"github.com/podvm/podvm/test/harness"
)

// TestREADME runs what the README tells a user to type: its ctr line
// against a private containerd, and its RuntimeClass against the runtime
// the containerd snippet defines (that snippet is the CRI tests' podvm
// runtime, verbatim).
func TestREADME(t *testing.T) {
	harness.NeedRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short mode: boots a VM")
	}
	harness.WatchLeaks(t)

	snippet, err := harness.READMEBlock("toml", `"io.containerd.grpc.v1.cri".containerd.runtimes.podvm]`)
	if err != nil {
		t.Fatal(err)
	}
	snippet2, err := harness.READMEBlock("toml", `"io.containerd.cri.v1.runtime".containerd.runtimes.podvm]`)
	if err != nil {
		t.Fatal(err)
	}
	class, err := harness.READMEBlock("yaml", "kind: RuntimeClass")
	if err != nil {
		t.Fatal(err)
	}
	var rc struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Handler    string `yaml:"handler"`
	}
	if err := yaml.Unmarshal([]byte(class), &rc); err != nil {
		t.Fatalf("README's RuntimeClass: %v", err)
	}
	if rc.APIVersion != "node.k8s.io/v1" || rc.Kind != "RuntimeClass" || !strings.Contains(snippet, "runtimes."+rc.Handler+"]") {
		t.Errorf("README's RuntimeClass %+v does not name the runtime of its containerd snippet:\n%s", rc, snippet)
	}
	var readmeClass, deployClass map[string]any
	yaml.Unmarshal([]byte(class), &readmeClass)
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "deploy", "runtimeclass.yaml"))
	if err == nil {
		err = yaml.Unmarshal(b, &deployClass)
	}
	if err != nil || !reflect.DeepEqual(readmeClass, deployClass) {
		t.Errorf("README's RuntimeClass differs from deploy/runtimeclass.yaml (%v):\n%v\n%v", err, readmeClass, deployClass)
	}
	if want := install.Stanza(2, rc.Handler); snippet != want {
		t.Errorf("README's containerd 1.x snippet differs from what install adds:\n%s\nwant\n%s", snippet, want)
	}
	if want := install.Stanza(3, rc.Handler); snippet2 != want {
		t.Errorf("README's containerd 2.x snippet differs from what install adds:\n%s\nwant\n%s", snippet2, want)
	}

	line, err := harness.READMEBlock("sh", "ctr run --runtime io.containerd.podvm.v2")
	if err != nil {
		t.Fatal(err)
	}
	ctd := harness.StartContainerd(t, "")
	ctd.ImportBusybox(t)
	// The README names the image users pull; here it is the local one.
	image := strings.Fields(line)[5]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, errOut, err := ctd.Ctr(ctx, "image", "tag", harness.BusyboxImage, image); err != nil {
		t.Fatalf("ctr image tag %s: %v: %s", image, err, errOut)
	}
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", line)
	cmd.Env = append(ctd.Env, "CONTAINERD_ADDRESS="+ctd.Address)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "-podvm") {
		t.Errorf("README's ctr line %q: %v: %s", strings.TrimSpace(line), err, out)
	}
}
