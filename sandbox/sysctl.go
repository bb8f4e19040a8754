package sandbox

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/containerd/errdefs"
)

// A pod's sysctls are applied where runc would apply them, with the VM in
// place of the pod's network namespace: network sysctls (net.*) to the
// guest's network namespace, which every container of the pod shares and
// which holds the pod's interfaces (containerd 2.x sets
// net.ipv4.ip_unprivileged_port_start and net.ipv4.ping_group_range on
// every pod); IPC and UTS ones stay in the spec for the container's own
// namespaces; anything else is not namespaced and is refused, as runc
// refuses it.

// ipcSysctls are the sysctls an IPC namespace holds (runc's list).
var ipcSysctls = []string{"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}

// splitSysctls takes the network sysctls out of a spec's and checks the
// rest are namespaced.
func splitSysctls(id string, all map[string]string) (network, container map[string]string, err error) {
	for k, v := range all {
		switch {
		case strings.HasPrefix(k, "net."):
			if network == nil {
				network = map[string]string{}
			}
			network[k] = v
			continue
		case strings.HasPrefix(k, "fs.mqueue."), k == "kernel.hostname", k == "kernel.domainname":
		case slices.Contains(ipcSysctls, k):
		default:
			return nil, nil, fmt.Errorf("sysctl %q of %s is not namespaced: no container may set it (runc refuses it too): %w", k, id, errdefs.ErrInvalidArgument)
		}
		if container == nil {
			container = map[string]string{}
		}
		container[k] = v
	}
	return network, container, nil
}
