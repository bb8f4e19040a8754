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
	out := *c
	quota, _ := strconv.ParseInt(annotations[AnnotationCPUQuota], 10, 64)
	period, _ := strconv.ParseInt(annotations[AnnotationCPUPeriod], 10, 64)
	if quota > 0 && period > 0 {
		cpus := int((quota + period - 1) / period)
		out.Hypervisor.VCPUs = min(c.Hypervisor.VCPUs+cpus, MaxVCPUs())
	}
	if mem, _ := strconv.ParseInt(annotations[AnnotationMemory], 10, 64); mem > 0 {
		mib := int((mem + 1<<20 - 1) >> 20)
		out.Hypervisor.MemoryMiB = min(c.Hypervisor.MemoryMiB+mib, c.Hypervisor.MaxMemoryMiB)
	}
	return &out
}
