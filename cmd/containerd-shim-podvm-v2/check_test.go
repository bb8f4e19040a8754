package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	apitypes "github.com/containerd/containerd/api/types"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"

	"github.com/podvm/podvm/install"
	"github.com/podvm/podvm/vmconfig"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, doc string
		code      int
		want      string
	}{
		{"misspelt key", "[hypervisor]\nvcpu = 2\n", 1, "unknown key hypervisor.vcpu"},
		{"bad value", "[hypervisor]\nmachine = \"pc\"\n", 1, "hypervisor.machine"},
		{"not TOML", "[hypervisor\n", 1, "line 2"},
		{"good", "[hypervisor]\nvcpus = 2\nmemory_mib = 768\n", 0, "memory_mib = 768"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			os.WriteFile(path, []byte(tc.doc), 0o644)
			var out, errOut bytes.Buffer
			code := printConfig(&out, &errOut, path)
			all := out.String() + errOut.String()
			if code != tc.code || !strings.Contains(all, tc.want) {
				t.Fatalf("check --config %s: exit %d, want %d, saying %q:\n%s", tc.name, code, tc.code, tc.want, all)
			}
			if code != 0 {
				if !strings.Contains(errOut.String(), "fix: correct "+path) {
					t.Errorf("no fix named: %s", errOut.String())
				}
				return
			}
			// What it prints is a configuration podvm reads back as is.
			c, err := vmconfig.Parse(out.String())
			if err != nil || c.Hypervisor.VCPUs != 2 || c.Hypervisor.MemoryMiB != 768 || c.Hypervisor.Machine != "microvm" {
				t.Errorf("printed configuration reads back as %+v, %v", c, err)
			}
		})
	}
}

func TestContainerdFindings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte("version = 2\n"), 0o644)
	fds := containerdFindings(path)
	if len(fds) != 1 || fds[0].status != "warn" || !strings.Contains(fds[0].fix, install.Stanza(2, "podvm")) {
		t.Errorf("no podvm runtime: %+v", fds)
	}
	os.WriteFile(path, []byte("version = 3\n"), 0o644)
	if fds := containerdFindings(path); len(fds) != 1 || !strings.Contains(fds[0].fix, `plugins."io.containerd.cri.v1.runtime"`) {
		t.Errorf("version 3: %+v", fds)
	}
	os.WriteFile(path, []byte("version = 2\n"+install.Stanza(2, "vm")), 0o644)
	if fds := containerdFindings(path); len(fds) != 1 || fds[0].status != "ok" || !strings.Contains(fds[0].detail, `"vm"`) {
		t.Errorf("with the runtime: %+v", fds)
	}
	os.WriteFile(path, []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vm]\nruntime_type = \"io.containerd.podvm.v2\"\n"), 0o644)
	if fds := containerdFindings(path); len(fds) != 1 || fds[0].status != "info" || !strings.Contains(fds[0].detail, "pod_annotations") {
		t.Errorf("without pod_annotations: %+v", fds)
	}
	var out bytes.Buffer
	report(&out, fds)
	if !strings.Contains(out.String(), "this host can run podvm") {
		t.Errorf("an info finding failed the report:\n%s", out.String())
	}
}

// As containerd registers it.
func init() {
	typeurl.Register(&features.Features{}, "types.containerd.io", "opencontainers/runtime-spec", "1", "features", "Features")
}

func TestInfo(t *testing.T) {
	var out bytes.Buffer
	if err := runInfo(strings.NewReader("options"), &out); err != nil {
		t.Fatal(err)
	}
	var info apitypes.RuntimeInfo
	if err := proto.Unmarshal(out.Bytes(), &info); err != nil || info.Name != RuntimeName || info.Version.GetVersion() == "" {
		t.Errorf("-info printed %v, %v", &info, err)
	}
	// containerd 2.x's CRI reads the features as typeurl gives them.
	v, err := typeurl.UnmarshalAny(info.Features)
	f, ok := v.(*features.Features)
	if err != nil || !ok || !slices.Contains(f.MountOptions, "rro") || slices.Contains(f.MountOptions, "rshared") {
		t.Errorf("features: %#v, %v", v, err)
	}
}
