package shim

import (
	"testing"

	sandboxAPI "github.com/containerd/containerd/api/runtime/sandbox/v1"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StartSandboxResponse's spec goes on the wire as containerd 2.x's field 3.
func TestWithSpec(t *testing.T) {
	spec, err := typeurl.MarshalAny(&specs.Spec{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	resp := &sandboxAPI.StartSandboxResponse{Pid: 42}
	if err := withSpec(resp, spec); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := firstField(b, startResponseSpec)
	var a anypb.Any
	if !ok || proto.Unmarshal(v, &a) != nil || a.TypeUrl != spec.GetTypeUrl() || string(a.Value) != string(spec.GetValue()) {
		t.Errorf("field 3 of %x: %v", b, &a)
	}
}

func TestPodConfigOf(t *testing.T) {
	c := &runtime.PodSandboxConfig{
		Hostname:    "web",
		Annotations: map[string]string{"io.podvm.config.debug": "true"},
		DnsConfig:   &runtime.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"a.test"}},
		Linux: &runtime.LinuxPodSandboxConfig{CgroupParent: "/kubepods", Sysctls: map[string]string{"net.ipv4.ip_forward": "1"},
			Resources: &runtime.LinuxContainerResources{CpuQuota: 200000, CpuPeriod: 100000, MemoryLimitInBytes: 1 << 30}},
	}
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := podConfigOf(&anypb.Any{TypeUrl: podSandboxConfigURL, Value: b}, "/var/run/netns/x", map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if pc.Hostname != "web" || pc.NetNS != "/var/run/netns/x" || pc.CgroupParent != "/kubepods" || pc.DNS.Servers[0] != "10.0.0.10" ||
		pc.Sysctls["net.ipv4.ip_forward"] != "1" || pc.CPUQuota != 200000 || pc.MemoryLimit != 1<<30 ||
		pc.Annotations["io.podvm.config.debug"] != "true" || pc.Annotations["k"] != "v" {
		t.Errorf("pod config: %+v", pc)
	}
	if _, err := podConfigOf(&anypb.Any{TypeUrl: "example.Other", Value: []byte{1}}, "", nil); err == nil {
		t.Error("options of another type were taken")
	}
	if pc, err := podConfigOf(nil, "", nil); err != nil || pc.Hostname != "" {
		t.Errorf("no options: %+v, %v", pc, err)
	}
}
