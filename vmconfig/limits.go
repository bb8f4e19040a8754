package vmconfig

import (
	"fmt"
	"slices"
	"strings"
)

// The limits a VM's settings must keep. vmconfig checks a configuration
// file against them, naming the key of a bad value when the file loads,
// and the hypervisor checks the same rules again before it starts QEMU:
// the rules live here, once.

const (
	// GuestMaxVCPUs matches CONFIG_NR_CPUS of the guest kernel.
	GuestMaxVCPUs = 64
	// MinMemoryMiB leaves room for the kernel, the initramfs (unpacked
	// into RAM) and the agent.
	MinMemoryMiB = 64
	// MaxMemoryMiB bounds a guest's memory.
	MaxMemoryMiB = 256 * 1024
	// MaxTCGCacheMiB bounds TCG's translation cache.
	MaxTCGCacheMiB = 4096
)

// Machines are the QEMU machine types podvm runs (hypervisor implements
// each).
var Machines = []string{"microvm", "q35"}

// CheckMachine accepts a machine type podvm knows.
func CheckMachine(name string) error {
	if !slices.Contains(Machines, name) {
		return fmt.Errorf("%q is not a supported machine type (%s)", name, strings.Join(Machines, " or "))
	}
	return nil
}

// CheckKernelParam accepts a guest kernel parameter: one word that stands
// in the kernel's command line as it is.
func CheckKernelParam(p string) error {
	if p == "" || strings.ContainsAny(p, " \t\n\"'\\") {
		return fmt.Errorf("%q: parameters are words without quotes or backslashes", p)
	}
	return nil
}
