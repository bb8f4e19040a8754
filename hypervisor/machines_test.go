package hypervisor

import (
	"slices"
	"testing"

	"github.com/podvm/podvm/vmconfig"
)

// The machine types a configuration may name are the ones implemented.
func TestMachinesMatchConfig(t *testing.T) {
	if got := Machines(); !slices.Equal(got, vmconfig.Machines) {
		t.Errorf("implemented machines %v, configurable %v", got, vmconfig.Machines)
	}
}
