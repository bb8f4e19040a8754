package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The device parents hold the containers whose device rules are one of the
// usual sets: the eBPF program for those rules is attached to the parent
// once, in the template VM before it is saved, so such containers need no
// program of their own. Making, verifying and attaching one costs about
// 60 ms under TCG.
const (
	// runcDevices: deny all but runc's default devices, as CRI asks.
	runcDevices = "/podvm-std"
	// ctrDevices: containerd's default devices (ctr run), which are
	// runc's and /dev/console.
	ctrDevices = "/podvm-ctr"
)

// deviceParent is one device parent, set up.
type deviceParent struct {
	path  string // libcontainer's path
	dir   string // its directory in the cgroupfs
	rules map[string]bool

	mu    sync.Mutex
	spare int
}

// deviceParents are the device parents a container may be put under.
type deviceParents []*deviceParent

// newDeviceParents sets up the device parents; one that fails is left
// out (its containers get programs of their own).
func newDeviceParents() (deviceParents, error) {
	var ps deviceParents
	var errs []string
	for _, p := range []struct {
		path  string
		extra []specs.LinuxDeviceCgroup
	}{
		{runcDevices, nil},
		{ctrDevices, []specs.LinuxDeviceCgroup{{Allow: true, Type: "c", Major: ptr(int64(5)), Minor: ptr(int64(1)), Access: "rwm"}}},
	} {
		d, err := newDeviceParent(p.path, p.extra)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		ps = append(ps, d)
	}
	if len(errs) > 0 {
		return ps, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return ps, nil
}

func ptr[T any](v T) *T { return &v }

// newDeviceParent attaches deny-all, runc's default devices and extra to
// the cgroup at path.
func newDeviceParent(path string, extra []specs.LinuxDeviceCgroup) (*deviceParent, error) {
	cfg, err := libcontainerConfig("std", &specs.Spec{
		Root:    &specs.Root{Path: "/"},
		Process: &specs.Process{Args: []string{"/pause"}, Cwd: "/"},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{
			Devices: append([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, extra...),
		}},
	})
	if err != nil {
		return nil, err
	}
	rules := cfg.Cgroups.Resources.Devices
	set, ok := ruleSet(rules)
	if !ok {
		return nil, fmt.Errorf("device rules of %s are not deny-all and allows", path)
	}
	mgr, err := manager.New(&cgroups.Cgroup{Path: path, Resources: &cgroups.Resources{Devices: rules}})
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if err := mgr.Apply(-1); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", path, err)
	}
	if err := mgr.Set(&cgroups.Resources{Devices: rules}); err != nil {
		return nil, fmt.Errorf("device rules of %s: %w", path, err)
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
			return nil, fmt.Errorf("controllers of %s: %w", path, err)
		}
	}
	return &deviceParent{path: path, dir: dir, rules: set}, nil
}

// ruleSet is what rules allow, if they are a deny-all followed by allows
// only: the order of allows does not matter then, nor do repeats.
func ruleSet(rules []*devices.Rule) (map[string]bool, bool) {
	if len(rules) == 0 || rules[0].Allow || rules[0].Type != devices.WildcardDevice ||
		rules[0].Major != devices.Wildcard || rules[0].Minor != devices.Wildcard || rules[0].Permissions != "rwm" {
		return nil, false
	}
	set := map[string]bool{}
	for _, r := range rules[1:] {
		if !r.Allow {
			return nil, false
		}
		p := []byte(r.Permissions)
		slices.Sort(p)
		set[fmt.Sprintf("%c %d:%d %s", r.Type, r.Major, r.Minor, p)] = true
	}
	return set, true
}

// find returns the parent whose rules cfg's are, if any.
func (ps deviceParents) find(cfg *configs.Config) *deviceParent {
	if cfg.Cgroups == nil || cfg.Cgroups.Resources == nil {
		return nil
	}
	set, ok := ruleSet(cfg.Cgroups.Resources.Devices)
	if !ok {
		return nil
	}
	for _, d := range ps {
		if len(d.rules) == len(set) && allIn(set, d.rules) {
			return d
		}
	}
	return nil
}

func allIn(a, b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// byPath returns the parent at path, if it was set up.
func (ps deviceParents) byPath(path string) *deviceParent {
	for _, d := range ps {
		if d.path == path {
			return d
		}
	}
	return nil
}

// adopt puts a container whose device rules are a parent's under it, where
// it needs no device program of its own and whose controllers are enabled
// for it already, and returns that parent.
func (ps deviceParents) adopt(id string, cfg *configs.Config) *deviceParent {
	d := ps.find(cfg)
	if d == nil {
		return nil
	}
	cfg.Cgroups.Path = d.path + "/" + id
	cfg.Cgroups.Resources.SkipDevices = true
	return d
}

// spareCgroup makes a cgroup under the parent for a spare init to be born
// in: the container that takes the spare keeps it, so that neither the
// cgroup's making nor moving the init into it (~60 ms together under TCG,
// cold in a restored VM) is on the clock of a create. It returns the
// cgroup's path as libcontainer names it and its directory, open.
func (d *deviceParent) spareCgroup() (string, *os.File, error) {
	d.mu.Lock()
	d.spare++
	name := fmt.Sprintf("spare-%d", d.spare)
	d.mu.Unlock()
	dir := filepath.Join(d.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("cgroup for a spare init: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		_ = os.Remove(dir)
		return "", nil, fmt.Errorf("cgroup for a spare init: %w", err)
	}
	return d.path + "/" + name, f, nil
}
