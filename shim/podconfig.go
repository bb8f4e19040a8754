package shim

import (
	"fmt"
	"maps"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/podvm/podvm/sandbox"
)

// podSandboxConfigURL is the type CRI sends a pod's configuration as in
// the Sandbox API's CreateSandbox.
const podSandboxConfigURL = "runtime.v1.PodSandboxConfig"

// podConfigOf is the pod CreateSandbox describes: CRI's PodSandboxConfig
// (in options) with the network namespace and annotations containerd adds.
// A sandbox created by another client than CRI may have no options: it is
// a pod with the node's defaults.
func podConfigOf(options *anypb.Any, netns string, annotations map[string]string) (sandbox.PodConfig, error) {
	pc := sandbox.PodConfig{NetNS: netns, Annotations: map[string]string{}}
	if options != nil && len(options.Value) > 0 {
		if !strings.HasSuffix(options.TypeUrl, podSandboxConfigURL) {
			return pc, fmt.Errorf("sandbox options of type %q: podvm takes CRI's %s", options.TypeUrl, podSandboxConfigURL)
		}
		var c runtime.PodSandboxConfig
		if err := proto.Unmarshal(options.Value, &c); err != nil {
			return pc, fmt.Errorf("decode the pod's %s: %w", podSandboxConfigURL, err)
		}
		fromCRI(&pc, &c)
	}
	maps.Copy(pc.Annotations, annotations)
	return pc, nil
}

// fromCRI takes what podvm uses of a PodSandboxConfig.
func fromCRI(pc *sandbox.PodConfig, c *runtime.PodSandboxConfig) {
	pc.Hostname = c.GetHostname()
	maps.Copy(pc.Annotations, c.GetAnnotations())
	if d := c.GetDnsConfig(); d != nil {
		pc.DNS = sandbox.DNS{Servers: d.GetServers(), Searches: d.GetSearches(), Options: d.GetOptions()}
	}
	l := c.GetLinux()
	pc.CgroupParent = l.GetCgroupParent()
	pc.Sysctls = maps.Clone(l.GetSysctls())
	if l.GetSecurityContext().GetNamespaceOptions().GetNetwork() != runtime.NamespaceMode_NODE {
		// What containerd 2.x's CRI gives a pause container's pod by
		// default (enable_unprivileged_ports and _icmp), which CRI
		// leaves to the sandbox in this mode.
		if pc.Sysctls == nil {
			pc.Sysctls = map[string]string{}
		}
		for k, v := range map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"} {
			if _, ok := pc.Sysctls[k]; !ok {
				pc.Sysctls[k] = v
			}
		}
	}
	if r := l.GetResources(); r != nil {
		pc.CPUQuota, pc.CPUPeriod, pc.MemoryLimit = r.GetCpuQuota(), r.GetCpuPeriod(), r.GetMemoryLimitInBytes()
	}
}
