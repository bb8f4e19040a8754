package vmconfig

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Validate checks every value and names the key of each bad one. Paths are
// checked for form only: whether the files exist is for the hypervisor (and
// `containerd-shim-podvm-v2 check`) to say, with the command that makes them.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	h := c.Hypervisor
	if h.Path == "" {
		bad("hypervisor.path", "must name the QEMU binary (qemu-system-x86_64)")
	}
	for key, p := range map[string]string{"hypervisor.kernel": h.Kernel, "hypervisor.initramfs": h.Initramfs} {
		if !filepath.IsAbs(p) {
			bad(key, "must be an absolute path, not %q", p)
		}
	}
	if err := CheckMachine(h.Machine); err != nil {
		bad("hypervisor.machine", "%v", err)
	}
	if h.Accelerator != "auto" && h.Accelerator != "kvm" && h.Accelerator != "tcg" {
		bad("hypervisor.accelerator", "%q is not auto, kvm or tcg", h.Accelerator)
	}
	if h.VCPUs < 1 || h.VCPUs > MaxVCPUs() {
		bad("hypervisor.vcpus", "%d is outside 1..%d (the host's CPUs)", h.VCPUs, MaxVCPUs())
	}
	if h.MaxMemoryMiB < MinMemoryMiB || h.MaxMemoryMiB > MaxMemoryMiB {
		bad("hypervisor.max_memory_mib", "%d is outside %d..%d", h.MaxMemoryMiB, MinMemoryMiB, MaxMemoryMiB)
	}
	if h.MemoryMiB < MinMemoryMiB || h.MemoryMiB > h.MaxMemoryMiB {
		bad("hypervisor.memory_mib", "%d is outside %d..%d (hypervisor.max_memory_mib)", h.MemoryMiB, MinMemoryMiB, h.MaxMemoryMiB)
	}
	for _, w := range KernelParams(h.KernelParams) {
		if err := CheckKernelParam(w); err != nil {
			bad("hypervisor.kernel_params", "%v", err)
		}
	}
	if h.TCGCacheMiB < 0 || h.TCGCacheMiB > MaxTCGCacheMiB {
		bad("hypervisor.tcg_cache_mib", "%d is outside 0..%d (0 means QEMU's default)", h.TCGCacheMiB, MaxTCGCacheMiB)
	}
	switch h.SharedFS {
	case "auto", "9p", "virtio-fs":
	default:
		bad("hypervisor.shared_fs", "%q is not auto, 9p or virtio-fs", h.SharedFS)
	}
	if !filepath.IsAbs(h.VirtioFSDaemon) {
		bad("hypervisor.virtio_fs_daemon", "must be an absolute path, not %q", h.VirtioFSDaemon)
	}
	switch h.VirtioFSCache {
	case "auto", "always", "none":
	default:
		bad("hypervisor.virtio_fs_cache", "%q is not auto, always or none", h.VirtioFSCache)
	}
	switch c.Agent.Transport {
	case "auto", "serial", "vsock":
	default:
		bad("agent.transport", "%q is not auto, serial or vsock", c.Agent.Transport)
	}
	switch c.Network.Model {
	case "tcfilter", "macvtap", "bridge":
	default:
		bad("network.model", "%q is not tcfilter, macvtap or bridge", c.Network.Model)
	}
	for _, k := range c.Annotations.Allowed {
		if _, ok := annotationKeys[k]; !ok {
			bad("annotations.allowed", "%q is not a configuration key (see the example config.toml)", k)
		}
	}
	if a := c.Annotations; a.MaxVCPUs < 1 {
		bad("annotations.max_vcpus", "%d: pods must be allowed at least 1 vCPU", a.MaxVCPUs)
	}
	if a := c.Annotations; a.MaxMemoryMiB < MinMemoryMiB {
		bad("annotations.max_memory_mib", "%d is below %d", a.MaxMemoryMiB, MinMemoryMiB)
	}
	if c.Agent.VsockPort == 0 {
		bad("agent.vsock_port", "must not be 0")
	}
	checkDuration := func(key string, d Duration, min time.Duration) {
		if d.Duration < min {
			bad(key, "%v is shorter than %v", d.Duration, min)
		}
	}
	checkDuration("timeouts.boot", c.Timeouts.Boot, time.Second)
	checkDuration("timeouts.shutdown", c.Timeouts.Shutdown, 0)
	checkDuration("timeouts.request", c.Timeouts.Request, time.Second)
	checkDuration("timeouts.agent", c.Timeouts.Agent, time.Second)
	if c.Template.Max < 1 || c.Template.Max > 64 {
		bad("template.max", "%d is outside 1..64", c.Template.Max)
	}
	if !filepath.IsAbs(c.Template.Dir) {
		bad("template.dir", "must be an absolute path, not %q", c.Template.Dir)
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("state_dir", "must be an absolute path, not %q", c.StateDir)
	}
	return errors.Join(errs...)
}

// MaxVCPUs is the most vCPUs a guest may have: the host's CPUs, and never
// more than the guest kernel supports.
func MaxVCPUs() int {
	return min(runtime.NumCPU(), GuestMaxVCPUs)
}

// KernelParams splits hypervisor.kernel_params into the words the guest
// kernel gets.
func KernelParams(s string) []string { return strings.Fields(s) }
