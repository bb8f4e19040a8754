package agent

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// stdDeviceCgroup holds the containers whose device rules are the usual
// ones (deny all but runc's default devices, as CRI and ctr ask): the eBPF
// program for those rules is attached to it once, in the template VM before
// it is saved, so such containers need no program of their own. Making,
// verifying and attaching one costs about 60 ms under TCG.
const stdDeviceCgroup = "/podvm-std"

// deviceParent is stdDeviceCgroup, set up.
type deviceParent struct{ rules []*devices.Rule }

// newDeviceParent attaches the usual rules to stdDeviceCgroup.
func newDeviceParent() (*deviceParent, error) {
	cfg, err := libcontainerConfig("std", &specs.Spec{
		Root:    &specs.Root{Path: "/"},
		Process: &specs.Process{Args: []string{"/pause"}, Cwd: "/"},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{
			Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		}},
	})
	if err != nil {
		return nil, err
	}
	rules := cfg.Cgroups.Resources.Devices
	mgr, err := manager.New(&cgroups.Cgroup{Path: stdDeviceCgroup, Resources: &cgroups.Resources{Devices: rules}})
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", stdDeviceCgroup, err)
	}
	if err := mgr.Apply(-1); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", stdDeviceCgroup, err)
	}
	if err := mgr.Set(&cgroups.Resources{Devices: rules}); err != nil {
		return nil, fmt.Errorf("device rules of %s: %w", stdDeviceCgroup, err)
	}
	// Its children get every controller it has, once: a container's
	// cgroup is then one mkdir.
	dir := mgr.Path("")
	ctrs, err := cgroups.ReadFile(dir, "cgroup.controllers")
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(ctrs); len(f) > 0 {
		if err := cgroups.WriteFile(dir, "cgroup.subtree_control", "+"+strings.Join(f, " +")); err != nil {
			return nil, fmt.Errorf("controllers of %s: %w", stdDeviceCgroup, err)
		}
	}
	return &deviceParent{rules: rules}, nil
}

// adopt puts a container with the usual device rules under the parent,
// where it needs no device program of its own, and whose controllers are
// enabled for it already.
func (d *deviceParent) adopt(id string, cfg *configs.Config) bool {
	if d == nil || cfg.Cgroups == nil || cfg.Cgroups.Resources == nil ||
		!reflect.DeepEqual(cfg.Cgroups.Resources.Devices, d.rules) {
		return false
	}
	cfg.Cgroups.Path = stdDeviceCgroup + "/" + id
	cfg.Cgroups.Resources.SkipDevices = true
	return true
}
