package vmconfig

import (
	"math"
	"strconv"
)

// CRI's annotations with the pod's total resources (the sum of its
// containers' limits), on the sandbox's spec.
const (
	AnnotationCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	AnnotationCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
	AnnotationMemory    = "io.kubernetes.cri.sandbox-memory"
)

// ForPod returns a copy of the configuration sized for a pod: the
// configured vCPUs and memory are the base, the pod's limits are added on
// top (the guest kernel and agent need their share besides the workload),
// within the bounds Validate enforces.
func (c *Config) ForPod(annotations map[string]string) *Config {
	quota, _ := strconv.ParseInt(annotations[AnnotationCPUQuota], 10, 64)
	period, _ := strconv.ParseInt(annotations[AnnotationCPUPeriod], 10, 64)
	mem, _ := strconv.ParseInt(annotations[AnnotationMemory], 10, 64)
	return c.Grown(CPUsOf(quota, period), MiBOf(mem))
}

// Grown returns a copy of the configuration with cpus and memoryMiB added
// to the guest's, within the bounds Validate enforces.
func (c *Config) Grown(cpus, memoryMiB int) *Config {
	out := *c
	if cpus > 0 {
		out.Hypervisor.VCPUs = min(SaturatingAdd(c.Hypervisor.VCPUs, cpus), MaxVCPUs())
	}
	if memoryMiB > 0 {
		out.Hypervisor.MemoryMiB = min(SaturatingAdd(c.Hypervisor.MemoryMiB, memoryMiB), c.Hypervisor.MaxMemoryMiB)
	}
	return &out
}

// CPUsOf is the whole CPUs a CFS quota per period allows (0: no limit),
// at most MaxInt32: the values come from specs, and no sum of them may
// overflow.
func CPUsOf(quota, period int64) int {
	if quota <= 0 || period <= 0 {
		return 0
	}
	n := quota / period
	if quota%period != 0 {
		n++
	}
	return int(min(n, math.MaxInt32))
}

// MiBOf is a byte count in MiB, rounded up (0 for none), at most MaxInt32.
func MiBOf(bytes int64) int {
	if bytes <= 0 {
		return 0
	}
	n := bytes >> 20
	if bytes&(1<<20-1) != 0 {
		n++
	}
	return int(min(n, math.MaxInt32))
}

// SaturatingAdd adds two non-negative sizes, stopping at MaxInt instead of
// wrapping around.
func SaturatingAdd(a, b int) int {
	if b > 0 && a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}
