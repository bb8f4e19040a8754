package agent

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestDeviceParentFind: a container goes under the parent whose rules it
// has, whatever their order and repeats, and under none if it allows one
// device more or denies one of them.
func TestDeviceParentFind(t *testing.T) {
	rules := func(devs ...specs.LinuxDeviceCgroup) map[string]bool {
		cfg, err := libcontainerConfig("t", &specs.Spec{
			Root: &specs.Root{Path: "/"}, Process: &specs.Process{Args: []string{"true"}, Cwd: "/"},
			Linux: &specs.Linux{Resources: &specs.LinuxResources{Devices: devs}},
		})
		if err != nil {
			t.Fatal(err)
		}
		set, ok := ruleSet(cfg.Cgroups.Resources.Devices)
		if !ok {
			t.Fatalf("rules %v are not deny-all and allows", devs)
		}
		return set
	}
	dev := func(allow bool, typ string, major, minor int64) specs.LinuxDeviceCgroup {
		return specs.LinuxDeviceCgroup{Allow: allow, Type: typ, Major: &major, Minor: &minor, Access: "rwm"}
	}
	denyAll := specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"}
	console := dev(true, "c", 5, 1)
	ps := deviceParents{
		{path: runcDevices, rules: rules(denyAll)},
		{path: ctrDevices, rules: rules(denyAll, console)},
	}
	find := func(devs ...specs.LinuxDeviceCgroup) string {
		cfg, err := libcontainerConfig("t", &specs.Spec{
			Root: &specs.Root{Path: "/"}, Process: &specs.Process{Args: []string{"true"}, Cwd: "/"},
			Linux: &specs.Linux{Resources: &specs.LinuxResources{Devices: devs}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if d := ps.find(cfg); d != nil {
			return d.path
		}
		return ""
	}
	// containerd's defaults for ctr run: its own allows, in its order,
	// which runc's repeat.
	ctr := []specs.LinuxDeviceCgroup{denyAll,
		{Allow: true, Type: "c", Access: "m"}, {Allow: true, Type: "b", Access: "m"},
		dev(true, "c", 1, 3), dev(true, "c", 1, 8), dev(true, "c", 1, 7), dev(true, "c", 5, 0),
		dev(true, "c", 1, 5), dev(true, "c", 1, 9), console, dev(true, "c", 5, 2), dev(true, "c", 10, 200)}
	pts := int64(136)
	ctr = append(ctr, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &pts, Access: "rwm"})
	for _, tt := range []struct {
		name string
		devs []specs.LinuxDeviceCgroup
		want string
	}{
		{"CRI: deny all", []specs.LinuxDeviceCgroup{denyAll}, runcDevices},
		{"ctr run", ctr, ctrDevices},
		{"console only", []specs.LinuxDeviceCgroup{denyAll, console}, ctrDevices},
		{"one device more", []specs.LinuxDeviceCgroup{denyAll, dev(true, "b", 8, 0)}, ""},
		{"a deny after the allows", append(append([]specs.LinuxDeviceCgroup{}, ctr...), dev(false, "c", 1, 3)), ""},
		{"no deny-all first", []specs.LinuxDeviceCgroup{console}, ""},
	} {
		if got := find(tt.devs...); got != tt.want {
			t.Errorf("%s: parent %q, want %q", tt.name, got, tt.want)
		}
	}
}
