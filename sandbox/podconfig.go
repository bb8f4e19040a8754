package sandbox

import (
	"fmt"
	"net/netip"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/vmconfig"
)

// PodConfig is a pod the Sandbox API starts before any of its containers
// exists: what podvm uses of CRI's PodSandboxConfig, and the network
// namespace CRI made for it. Every value comes from a pod's author and is
// checked (Check) before it becomes a file, a cgroup or a QEMU option.
type PodConfig struct {
	Hostname string
	// NetNS is the pod's network namespace; empty for the node's network,
	// which leaves the VM without interfaces.
	NetNS        string
	CgroupParent string
	Annotations  map[string]string
	Sysctls      map[string]string
	DNS          DNS
	// The pod's limits (the sum of its containers'), which size the VM
	// as CRI's sandbox annotations do for a pause container.
	CPUQuota, CPUPeriod, MemoryLimit int64
}

// DNS is the pod's resolver configuration; none means the node's.
type DNS struct {
	Servers, Searches, Options []string
}

// Bounds of what a pod may ask for, as glibc's resolver and Kubernetes
// take them.
const (
	maxHostname   = 64
	maxDNSEntries = 32
	maxDNSEntry   = 253
)

var (
	hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$`)
	// A search domain or resolver option is one token: no blanks, which
	// would start another, and no line breaks, which would start another
	// directive of resolv.conf.
	dnsTokenRE = regexp.MustCompile(`^[a-zA-Z0-9._:=-]+$`)
)

// Check refuses a pod configuration podvm would not run as asked: each
// error names the field and the value.
func (pc *PodConfig) Check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("pod config: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	if pc.Hostname != "" && (len(pc.Hostname) > maxHostname || !hostnameRE.MatchString(pc.Hostname)) {
		return bad("hostname %q is not a host name of at most %d letters, digits, '-' and '.'", truncate(pc.Hostname, 100), maxHostname)
	}
	if pc.NetNS != "" && (!filepath.IsAbs(pc.NetNS) || filepath.Clean(pc.NetNS) != pc.NetNS) {
		return bad("network namespace %q is not a clean absolute path", truncate(pc.NetNS, 100))
	}
	if pc.CgroupParent != "" {
		if _, err := cgroupfsPath(cgroupsPathOf(pc.CgroupParent, "x")); err != nil {
			return bad("cgroup parent %q: %v", truncate(pc.CgroupParent, 100), err)
		}
	}
	if len(pc.DNS.Servers)+len(pc.DNS.Searches)+len(pc.DNS.Options) > maxDNSEntries {
		return bad("more than %d DNS servers, searches and options", maxDNSEntries)
	}
	for _, s := range pc.DNS.Servers {
		if _, err := netip.ParseAddr(s); err != nil {
			return bad("DNS server %q is not an IP address", truncate(s, 100))
		}
	}
	for _, s := range append(append([]string(nil), pc.DNS.Searches...), pc.DNS.Options...) {
		if len(s) > maxDNSEntry || !dnsTokenRE.MatchString(s) {
			return bad("DNS search or option %q is not a single domain or option", truncate(s, 100))
		}
	}
	if _, _, err := splitSysctls("the pod", pc.Sysctls); err != nil {
		return err
	}
	return nil
}

// cgroupsPathOf is the cgroup of a pod under its parent, as CRI names a
// pause container's: slice:cri-containerd:id for systemd's slices, else a
// directory.
func cgroupsPathOf(parent, id string) string {
	if base := path.Base(parent); strings.HasSuffix(base, ".slice") {
		return base + ":cri-containerd:" + id
	}
	return path.Join(parent, id)
}

// Spec is the sandbox spec a pause container would have had: what Boot
// needs to size the VM, place it in its cgroup and attach its network, and
// what containerd's NRI shows plugins of the pod.
func (pc *PodConfig) Spec(id string) *specs.Spec {
	a := map[string]string{}
	for k, v := range pc.Annotations {
		a[k] = v
	}
	a[AnnotationContainerType] = "sandbox"
	a[AnnotationSandboxID] = id
	if pc.CPUQuota > 0 && pc.CPUPeriod > 0 {
		a[vmconfig.AnnotationCPUQuota] = strconv.FormatInt(pc.CPUQuota, 10)
		a[vmconfig.AnnotationCPUPeriod] = strconv.FormatInt(pc.CPUPeriod, 10)
	}
	if pc.MemoryLimit > 0 {
		a[vmconfig.AnnotationMemory] = strconv.FormatInt(pc.MemoryLimit, 10)
	}
	s := &specs.Spec{Version: specs.Version, Hostname: pc.Hostname, Annotations: a, Linux: &specs.Linux{}}
	if pc.CgroupParent != "" {
		s.Linux.CgroupsPath = cgroupsPathOf(pc.CgroupParent, id)
	}
	if pc.NetNS != "" {
		s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: pc.NetNS}}
	}
	return s
}
