package agent

import (
	"testing"

	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
)

func TestNeedsSet(t *testing.T) {
	limit := int64(1 << 20)
	for _, tt := range []struct {
		name string
		r    *cgroups.Resources
		want bool
	}{
		{"nil", nil, false},
		{"empty", &cgroups.Resources{}, false},
		{"empty slices and maps", &cgroups.Resources{HugetlbLimit: []*cgroups.HugepageLimit{}, Unified: map[string]string{}}, false},
		{"devices left to the parent", &cgroups.Resources{SkipDevices: true, Devices: make([]*devices.Rule, 3)}, false},
		{"devices of its own", &cgroups.Resources{Devices: make([]*devices.Rule, 3)}, true},
		{"memory", &cgroups.Resources{Memory: limit}, true},
		{"pids", &cgroups.Resources{PidsLimit: &limit}, true},
		{"unified", &cgroups.Resources{Unified: map[string]string{"memory.high": "1"}}, true},
	} {
		if got := needsSet(tt.r); got != tt.want {
			t.Errorf("%s: needsSet = %v, want %v", tt.name, got, tt.want)
		}
	}
}
