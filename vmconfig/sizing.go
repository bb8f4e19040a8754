package vmconfig

import "strconv"

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
		out.Hypervisor.VCPUs = min(c.Hypervisor.VCPUs+cpus, MaxVCPUs())
	}
	if memoryMiB > 0 {
		out.Hypervisor.MemoryMiB = min(c.Hypervisor.MemoryMiB+memoryMiB, c.Hypervisor.MaxMemoryMiB)
	}
	return &out
}

// CPUsOf is the whole CPUs a CFS quota per period allows (0: no limit).
func CPUsOf(quota, period int64) int {
	if quota <= 0 || period <= 0 {
		return 0
	}
	return int((quota + period - 1) / period)
}

// MiBOf is a byte count in MiB, rounded up (0 for none).
func MiBOf(bytes int64) int {
	if bytes <= 0 {
		return 0
	}
	return int((bytes + 1<<20 - 1) >> 20)
}
