package vmconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

// The example file documents every key with its default: it must parse and
// say exactly what the built-in defaults are.
func TestExampleMatchesDefaults(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(string(b))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("example config differs from the defaults:\n got %+v\nwant %+v", c, Default())
	}
	// Every key of Config appears in the example, commented or not.
	for _, key := range []string{"debug", "state_dir", "path", "kernel", "initramfs", "machine", "accelerator",
		"vcpus", "memory_mib", "tcg_cache_mib", "cpu_model", "kernel_params", "transport", "vsock_port", "boot", "shutdown", "model", "max_memory_mib", "allowed", "max_vcpus", "request", "agent", "enabled", "max", "dir", "shared_fs", "virtio_fs_daemon", "virtio_fs_cache"} {
		if !strings.Contains(string(b), key+" = ") {
			t.Errorf("example config does not document %s", key)
		}
	}
}

func TestParse(t *testing.T) {
	c, err := Parse(`
debug = true
[hypervisor]
machine = "q35"
vcpus = 1
memory_mib = 1024
kernel = "/opt/podvm/vmlinux"
[agent]
transport = "serial"
[timeouts]
boot = "1m"
`)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Debug = true
	want.Hypervisor.Machine = "q35"
	want.Hypervisor.MemoryMiB = 1024
	want.Hypervisor.Kernel = "/opt/podvm/vmlinux"
	want.Agent.Transport = "serial"
	want.Timeouts.Boot = Duration{time.Minute}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		doc  string
		want []string // substrings of the error: the key and the reason
	}{
		{"[hypervisor]\nvcpu = 2\n", []string{"unknown key hypervisor.vcpu"}},
		{"colour = \"blue\"\n", []string{"unknown key colour"}},
		{"[hypervisor]\nvcpus = \"two\"\n", []string{"hypervisor.vcpus", "incompatible types"}},
		{"[hypervisor]\nvcpus = 0\n", []string{"hypervisor.vcpus", "outside 1.."}},
		{"[hypervisor]\nvcpus = 100000\n", []string{"hypervisor.vcpus", "host's CPUs"}},
		{"[hypervisor]\nmemory_mib = 8\n", []string{"hypervisor.memory_mib", "outside"}},
		{"[hypervisor]\nmachine = \"pc\"\n", []string{"hypervisor.machine", `"pc"`}},
		{"[hypervisor]\naccelerator = \"hvf\"\n", []string{"hypervisor.accelerator", `"hvf"`}},
		{"[hypervisor]\nkernel = \"vmlinux\"\n", []string{"hypervisor.kernel", "absolute path"}},
		{"[hypervisor]\ntcg_cache_mib = -1\n", []string{"hypervisor.tcg_cache_mib"}},
		{"[hypervisor]\nshared_fs = \"nfs\"\n", []string{"hypervisor.shared_fs", `"nfs"`}},
		{"[hypervisor]\nvirtio_fs_cache = \"forever\"\n", []string{"hypervisor.virtio_fs_cache", `"forever"`}},
		{"[hypervisor]\nvirtio_fs_daemon = \"virtiofsd\"\n", []string{"hypervisor.virtio_fs_daemon", "absolute path"}},
		{"[agent]\ntransport = \"pigeon\"\n", []string{"agent.transport", `"pigeon"`}},
		{"[network]\nmodel = \"ipvlan\"\n", []string{"network.model", `"ipvlan"`}},
		{"[timeouts]\nboot = \"soon\"\n", []string{"timeouts.boot", "not a duration"}},
		{"[timeouts]\nboot = \"10ms\"\n", []string{"timeouts.boot", "shorter than"}},
		{"state_dir = \"run\"\n", []string{"state_dir", "absolute path"}},
		{"[hypervisor\n", []string{"line 2", "table name"}},
	}
	for _, tt := range tests {
		_, err := Parse(tt.doc)
		if err == nil {
			t.Errorf("Parse(%q) accepted it", tt.doc)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Parse(%q) = %v, want it to mention %q", tt.doc, err, w)
			}
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte("[hypervisor]\nmemory_mib = 256\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODVM_CONFIG", path)
	c, err := Load()
	if err != nil || c.Hypervisor.MemoryMiB != 256 {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	// A file named by PODVM_CONFIG must exist.
	t.Setenv("PODVM_CONFIG", filepath.Join(dir, "missing.toml"))
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Fatalf("Load of a missing explicit file = %v", err)
	}
	// The error names the file and the key.
	if err := os.WriteFile(path, []byte("[hypervisor]\nmachine = \"pc\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODVM_CONFIG", path)
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "hypervisor.machine") {
		t.Fatalf("Load of a bad file = %v", err)
	}
}

func TestForPod(t *testing.T) {
	c := Default()
	tests := []struct {
		ann      map[string]string
		cpus, mb int
	}{
		{nil, 1, 512},
		{map[string]string{AnnotationCPUQuota: "50000", AnnotationCPUPeriod: "100000"}, min(2, MaxVCPUs()), 512},
		{map[string]string{AnnotationCPUQuota: "-1", AnnotationCPUPeriod: "100000"}, 1, 512},
		{map[string]string{AnnotationCPUQuota: "10000000", AnnotationCPUPeriod: "100000"}, MaxVCPUs(), 512},
		{map[string]string{AnnotationMemory: "268435456"}, 1, 768},
		{map[string]string{AnnotationMemory: "1"}, 1, 513},
		{map[string]string{AnnotationMemory: "bogus"}, 1, 512},
	}
	for _, tt := range tests {
		got := c.ForPod(tt.ann)
		if got.Hypervisor.VCPUs != tt.cpus || got.Hypervisor.MemoryMiB != tt.mb {
			t.Errorf("ForPod(%v) = %d vCPU %d MiB, want %d %d", tt.ann, got.Hypervisor.VCPUs, got.Hypervisor.MemoryMiB, tt.cpus, tt.mb)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("ForPod(%v) is invalid: %v", tt.ann, err)
		}
	}
	if c.Hypervisor.VCPUs != 1 {
		t.Error("ForPod changed its receiver")
	}
}

func TestOverlay(t *testing.T) {
	base, err := Parse("[hypervisor]\nmemory_mib = 1024\nvcpus = 1\n")
	if err != nil {
		t.Fatal(err)
	}
	c, err := base.Overlay("[hypervisor]\nmachine = \"q35\"\n")
	if err != nil {
		t.Fatal(err)
	}
	// The overlay's keys win; the others keep the base's values.
	if c.Hypervisor.Machine != "q35" || c.Hypervisor.MemoryMiB != 1024 || base.Hypervisor.Machine != "microvm" {
		t.Errorf("overlay %+v, base %+v", c.Hypervisor, base.Hypervisor)
	}
	if _, err := base.Overlay("[hypervisor]\nmachine = \"pc\"\n"); err == nil || !strings.Contains(err.Error(), "hypervisor.machine") {
		t.Errorf("bad overlay: %v", err)
	}
	if _, err := base.Overlay("frobnicate = 1\n"); err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestWithAnnotations(t *testing.T) {
	c := Default()
	got, err := c.WithAnnotations(map[string]string{
		"io.podvm.config.hypervisor.vcpus":      "2",
		"io.podvm.config.hypervisor.memory_mib": "1024",
		"io.podvm.config.debug":                 "true",
		"other.annotation":                      "ignored",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Hypervisor.VCPUs != min(2, MaxVCPUs()) && got.Hypervisor.VCPUs != 2 || got.Hypervisor.MemoryMiB != 1024 || !got.Debug {
		t.Errorf("got %+v debug %v", got.Hypervisor, got.Debug)
	}
	if c.Debug || c.Hypervisor.MemoryMiB != 512 {
		t.Error("WithAnnotations changed its receiver")
	}
	tests := []struct {
		ann  map[string]string
		want []string
	}{
		{map[string]string{"io.podvm.config.hypervisor.path": "/tmp/evil"}, []string{"io.podvm.config.hypervisor.path", "may not be set by pods", "annotations.allowed"}},
		{map[string]string{"io.podvm.config.hypervisor.kernel": "/tmp/evil"}, []string{"hypervisor.kernel", "may not be set"}},
		{map[string]string{"io.podvm.config.hypervisor_path": "/tmp/evil"}, []string{"io.podvm.config.hypervisor_path", "did you mean io.podvm.config.hypervisor.path", "may not set"}},
		{map[string]string{"io.podvm.config.hypervisor.vcpu": "2"}, []string{"not a configuration key"}},
		{map[string]string{"io.podvm.config.hypervisor.memory_mib": "999999"}, []string{"hypervisor.memory_mib", "max_memory_mib"}},
		{map[string]string{"io.podvm.config.hypervisor.vcpus": "lots"}, []string{"hypervisor.vcpus"}},
		{map[string]string{"io.podvm.config.hypervisor.memory_mib": "16384"}, []string{"hypervisor.memory_mib", "16384 is more than pods may ask for", "annotations.max_memory_mib = 2048"}},
	}
	for _, tt := range tests {
		_, err := c.WithAnnotations(tt.ann)
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("WithAnnotations(%v) = %v, want it to mention %q", tt.ann, err, w)
			}
		}
	}
	if MaxVCPUs() > 2 {
		if _, err := c.WithAnnotations(map[string]string{"io.podvm.config.hypervisor.vcpus": "3"}); err == nil || !strings.Contains(err.Error(), "annotations.max_vcpus = 2") {
			t.Errorf("3 vCPUs by annotation: %v", err)
		}
	}
	// An operator may allow more.
	c.Annotations.Allowed = append(c.Annotations.Allowed, "hypervisor.machine")
	if got, err := c.WithAnnotations(map[string]string{"io.podvm.config.hypervisor.machine": "q35"}); err != nil || got.Hypervisor.Machine != "q35" {
		t.Errorf("allowed machine: %v %v", got, err)
	}
	if _, err := Parse("[annotations]\nallowed = [\"hypervisor.nope\"]\n"); err == nil || !strings.Contains(err.Error(), "annotations.allowed") {
		t.Errorf("bad allowlist: %v", err)
	}
}
