package sandbox

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Every field of a pod's configuration reaches a file, a cgroup or QEMU:
// each bad value is refused with its name.
func TestPodConfigCheck(t *testing.T) {
	good := PodConfig{Hostname: "web-1", NetNS: "/var/run/netns/cni-1", CgroupParent: "/kubepods/pod1",
		DNS:     DNS{Servers: []string{"10.0.0.10", "fd00::a"}, Searches: []string{"svc.cluster.local"}, Options: []string{"ndots:5", "edns0"}},
		Sysctls: map[string]string{"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}}
	if err := good.Check(); err != nil {
		t.Fatalf("a good pod config: %v", err)
	}
	for _, tt := range []struct {
		name string
		edit func(*PodConfig)
		want string
	}{
		{"hostname", func(p *PodConfig) { p.Hostname = "a b" }, "hostname"},
		{"long hostname", func(p *PodConfig) { p.Hostname = strings.Repeat("a", 65) }, "hostname"},
		{"relative netns", func(p *PodConfig) { p.NetNS = "netns/x" }, "network namespace"},
		{"unclean netns", func(p *PodConfig) { p.NetNS = "/var/run/netns/../x" }, "network namespace"},
		{"cgroup parent", func(p *PodConfig) { p.CgroupParent = "a:b:c:d" }, "cgroup parent"},
		{"DNS server", func(p *PodConfig) { p.DNS.Servers = []string{"10.0.0.1\nnameserver 6.6.6.6"} }, "DNS server"},
		{"search with a line break", func(p *PodConfig) { p.DNS.Searches = []string{"x\noptions debug"} }, "DNS search or option"},
		{"option with a blank", func(p *PodConfig) { p.DNS.Options = []string{"ndots:1 debug"} }, "DNS search or option"},
		{"too many searches", func(p *PodConfig) { p.DNS.Searches = make([]string, 40) }, "more than 32"},
		{"sysctl not namespaced", func(p *PodConfig) { p.Sysctls = map[string]string{"vm.swappiness": "1"} }, "not namespaced"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pc := good
			pc.DNS.Servers = append([]string(nil), good.DNS.Servers...)
			tt.edit(&pc)
			if err := pc.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check() = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestPodConfigSpec(t *testing.T) {
	pc := PodConfig{Hostname: "h", NetNS: "/var/run/netns/n", CgroupParent: "kubepods-besteffort.slice",
		CPUQuota: 150000, CPUPeriod: 100000, MemoryLimit: 256 << 20, Annotations: map[string]string{"a": "b"}}
	s := pc.Spec("sb1")
	if s.Linux.CgroupsPath != "kubepods-besteffort.slice:cri-containerd:sb1" {
		t.Errorf("cgroups path under a slice: %q", s.Linux.CgroupsPath)
	}
	if len(s.Linux.Namespaces) != 1 || s.Linux.Namespaces[0] != (specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/n"}) {
		t.Errorf("namespaces: %v", s.Linux.Namespaces)
	}
	a := s.Annotations
	if a["a"] != "b" || a[AnnotationSandboxID] != "sb1" || a["io.kubernetes.cri.sandbox-cpu-quota"] != "150000" || a["io.kubernetes.cri.sandbox-memory"] != "268435456" {
		t.Errorf("annotations: %v", a)
	}
	pc.CgroupParent = "/kubepods/burstable"
	if got := pc.Spec("sb1").Linux.CgroupsPath; got != "/kubepods/burstable/sb1" {
		t.Errorf("cgroups path under a directory: %q", got)
	}
}

func TestResolvConf(t *testing.T) {
	pc := PodConfig{DNS: DNS{Servers: []string{"10.0.0.10"}, Searches: []string{"a.test", "b.test"}, Options: []string{"ndots:5"}}}
	got, err := pc.resolvConf()
	if want := "search a.test b.test\nnameserver 10.0.0.10\noptions ndots:5\n"; err != nil || got != want {
		t.Errorf("resolv.conf = %q, %v; want %q", got, err, want)
	}
}

// A container of a held pod binds the pod's files unless it has its own,
// and its /dev/shm is the pod's.
func TestWithPodFiles(t *testing.T) {
	s := &specs.Spec{Root: &specs.Root{Readonly: true}, Mounts: []specs.Mount{
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"},
		{Destination: "/etc/hosts", Type: "bind", Source: "/run/podvm/shared/c/mounts/1"},
	}}
	if !withPodFiles(s, []string{"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}) {
		t.Error("the pod's /dev/shm is not used")
	}
	got := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		got[m.Destination] = m
	}
	if len(s.Mounts) != 4 || got["/dev/shm"].Source != guestPodShm || got["/etc/hosts"].Source != "/run/podvm/shared/c/mounts/1" ||
		got["/etc/resolv.conf"].Source != "/run/podvm/shared/.pod/resolv.conf" || got["/etc/hostname"].Options[len(got["/etc/hostname"].Options)-1] != "ro" {
		t.Errorf("mounts: %+v", s.Mounts)
	}
}
