package hypervisor

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/podvm/podvm/vmconfig"
)

// fds are the file descriptor numbers QEMU finds its pre-connected sockets
// on (through exec's ExtraFiles, which start at 3).
type fds struct {
	qmp, console, vhostVsock int
	vsockCID                 uint32
	// ports holds the fd number of each named serial port's socket, in
	// the order of Config.Ports.
	ports []int
	// nics holds the fd number of each NIC's TAP.
	nics []int
	// virtiofs holds the fd number of each share's connected virtiofsd
	// socket (virtio-fs only).
	virtiofs []int
}

// kernelBase is the guest kernel command line every VM gets. Each option
// saves boot time or keeps a guest that crashed from lingering:
//   - quiet: printing to the console is slow under TCG;
//   - panic=-1, reboot=t: a panicking guest resets, and -no-reboot turns
//     the reset into QEMU exiting;
//   - tsc=reliable no_timer_check: skip clock sanity checks made for real
//     hardware;
//   - noreplace-smp cryptomgr.notests mitigations=off: skip work that buys
//     nothing inside a VM that only runs the agent's containers;
//   - random.trust_cpu=on: the CRNG is seeded at boot from RDRAND (QEMU's
//     is the host's getrandom under TCG; the CPU's under KVM), not by
//     jitter entropy, which under TCG had not finished when a template was
//     saved, so every restored VM paid for the first seeding. Restored VMs
//     still reseed with the host's entropy before serving.
var kernelBase = []string{
	"console=ttyS0", "panic=-1", "reboot=t",
	"tsc=reliable", "no_timer_check", "noreplace-smp",
	"cryptomgr.notests", "mitigations=off", "random.trust_cpu=on",
}

// lapicTimerKHz is the input clock of QEMU's emulated local APIC timer
// (1 GHz). The podvm kernel takes it as lapic_timer_khz= and skips the
// 100-200 ms calibration against the PIT under TCG.
const lapicTimerKHz = 1000000

// kernelCmdline returns the guest kernel command line.
func kernelCmdline(c *Config, m machine) string {
	p := append([]string{}, kernelBase...)
	if !c.Debug {
		p = append(p, "quiet")
	}
	p = append(p, m.kernelParams(c)...)
	if growsCPUs(c, m) && c.cpuPlug() == PlugPresent {
		// The others stay offline until the agent onlines them.
		p = append(p, "maxcpus="+strconv.Itoa(c.CPUs))
	}
	if c.Accel == TCG {
		if c.TSCKHz > 0 {
			p = append(p, "tsc_early_khz="+strconv.FormatUint(c.TSCKHz, 10))
		}
		p = append(p, "lapic_timer_khz="+strconv.Itoa(lapicTimerKHz))
	}
	return strings.Join(append(p, c.KernelParams...), " ")
}

// args returns QEMU's command line (without the binary).
func args(c *Config, f fds) ([]string, error) {
	m, ok := machines[c.Machine]
	if !ok {
		return nil, fmt.Errorf("unknown machine type %q: use one of %v", c.Machine, Machines())
	}
	a := []string{
		"-name", c.ID,
		"-machine", machineArg(c, m),
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-parallel", "none", "-net", "none",
		// A guest reset is how a microvm without ACPI powers off.
		"-no-reboot",
		"-smp", smpArg(c, m),
		"-m", memoryArg(c, m),
	}
	switch c.Accel {
	case KVM:
		a = append(a, "-accel", "kvm", "-cpu", "host")
	case TCG:
		accel := "tcg"
		if c.TBSizeMiB > 0 {
			accel += ",tb-size=" + strconv.Itoa(c.TBSizeMiB)
		}
		model := c.CPUModel
		if model == "" {
			model = vmconfig.DefaultTCGCPU
		}
		a = append(a, "-accel", accel, "-cpu", model)
	}
	a = append(a,
		"-kernel", c.Kernel,
		"-initrd", c.Initramfs,
		"-append", kernelCmdline(c, m),
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d", f.qmp),
		"-mon", "chardev=qmp,mode=control",
		// The console is the UART: the virtio console loses early output
		// now and then on microvm under TCG.
		"-chardev", fmt.Sprintf("socket,id=console,fd=%d", f.console),
		"-serial", "chardev:console",
		// No virtio-rng: its hwrng thread competes with the boot for the
		// vCPU (about 50 ms under TCG); the kernel's jitter entropy seeds
		// the CRNG without it.
	)
	a = append(a, m.extraArgs()...)
	switch {
	case c.Memory != nil:
		// The machine's RAM is this backend (machine option
		// memory-backend); a restored VM must have the template's.
		share := "off"
		if c.Memory.Shared {
			share = "on"
		}
		a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=%s,size=%dM,mem-path=%s,share=%s",
			memoryBackendID, c.MemoryMiB, qemuEscape(c.Memory.Path), share))
	case c.virtioFS():
		// virtiofsd reads and writes the guest's buffers in its RAM.
		a = append(a, "-object", fmt.Sprintf("memory-backend-memfd,id=%s,size=%dM,share=on", memoryBackendID, c.MemoryMiB))
		a = append(a, m.vhostUserArgs()...)
	}
	if c.Incoming {
		a = append(a, "-incoming", "defer")
	}
	for i := 0; i < m.hotplugSlots(); i++ {
		a = append(a, "-device", fmt.Sprintf("pcie-root-port,id=%s,chassis=%d,slot=%d,bus=pcie.0", hotplugPort(i), i+1, i+1))
	}
	for i, n := range c.NICs {
		// vhost-net is not used: it is absent on some hosts and its
		// gain matters less than a working default. A template's NIC is
		// a port of a hub of its own: joined to nothing, and no part of
		// the saved state (backends are not migrated).
		backend := fmt.Sprintf("hubport,id=net%d,hubid=%d", i, i)
		if n.File != nil {
			backend = fmt.Sprintf("tap,id=net%d,fd=%d,vhost=off", i, f.nics[i])
		}
		a = append(a,
			"-netdev", backend,
			"-device", fmt.Sprintf("%s,netdev=net%d,mac=%s%s", m.virtio("net"), i, n.MAC, hostMTU(n.MTU)),
		)
	}
	for i, sh := range c.Shares {
		if c.virtioFS() {
			a = append(a,
				"-chardev", fmt.Sprintf("socket,id=vfs%d,fd=%d", i, f.virtiofs[i]),
				"-device", fmt.Sprintf("%s,chardev=vfs%d,tag=%s,queue-size=1024", m.virtio("fs"), i, sh.Tag),
			)
			continue
		}
		// passthrough keeps owners and modes as they are on the host; the
		// shim runs as root, as containerd's shims do. The share holds many
		// filesystems (each container's overlay, bind mounts): remap keeps
		// their inode numbers from colliding in the guest.
		a = append(a,
			"-fsdev", fmt.Sprintf("local,id=fs%d,path=%s,security_model=passthrough,multidevs=remap", i, qemuEscape(sh.Path)),
			"-device", fmt.Sprintf("%s,fsdev=fs%d,mount_tag=%s", m.virtio("9p"), i, sh.Tag),
		)
	}
	if c.Vsock {
		a = append(a, "-device", fmt.Sprintf("%s,id=vsock,guest-cid=%d,vhostfd=%d", m.virtio("vsock"), f.vsockCID, f.vhostVsock))
	}
	if len(c.Ports) > 0 {
		// One device carries every port. Port 0 is reserved for a
		// console, so named ports start at 1.
		a = append(a, "-device", fmt.Sprintf("%s,max_ports=%d", m.virtio("serial"), len(c.Ports)+1))
		for i, name := range c.Ports {
			backend := fmt.Sprintf("fd=%d", f.ports[i])
			if path, ok := c.listenPorts[name]; ok {
				backend = "path=" + qemuEscape(path) + ",server=on,wait=off"
			}
			a = append(a,
				"-chardev", fmt.Sprintf("socket,id=port%d,%s", i, backend),
				"-device", fmt.Sprintf("virtserialport,chardev=port%d,name=%s", i, name),
			)
		}
	}
	return a, nil
}

// memoryBackendID names the memory backend of a file-backed VM.
const memoryBackendID = "ram"

func machineArg(c *Config, m machine) string {
	if c.Memory != nil || c.virtioFS() {
		return m.machineArg(c) + ",memory-backend=" + memoryBackendID
	}
	return m.machineArg(c)
}

// growsCPUs says whether the VM can get more vCPUs than it boots with.
func growsCPUs(c *Config, m machine) bool {
	return m.resizable() && c.MaxCPUs > c.CPUs
}

// smpArg is -smp: the boot CPUs, and room for hot-plugged ones (or all of
// them present from the start, see PlugPresent).
func smpArg(c *Config, m machine) string {
	if !growsCPUs(c, m) {
		return strconv.Itoa(c.CPUs)
	}
	if c.cpuPlug() == PlugPresent {
		return fmt.Sprintf("%d,maxcpus=%d", c.MaxCPUs, c.MaxCPUs)
	}
	return fmt.Sprintf("%d,maxcpus=%d", c.CPUs, c.MaxCPUs)
}

// memorySlots is how many DIMMs a VM can take: one per growth, and an
// Update rarely grows a pod more than a few times.
const memorySlots = 16

// memoryArg is -m: the boot RAM, and room for hot-plugged DIMMs.
func memoryArg(c *Config, m machine) string {
	s := strconv.Itoa(c.MemoryMiB) + "M"
	if m.resizable() && c.MaxMemoryMiB > c.MemoryMiB {
		s += fmt.Sprintf(",slots=%d,maxmem=%dM", memorySlots, c.MaxMemoryMiB)
	}
	return s
}

// qemuEscape doubles commas, QEMU's escape inside option values.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// hostMTU tells the guest driver the MTU of the pod interface (virtio-net's
// host_mtu), so that it never sends larger frames.
func hostMTU(mtu int) string {
	if mtu <= 0 || mtu == 1500 {
		return ""
	}
	return ",host_mtu=" + strconv.Itoa(mtu)
}

// hotplugPort names the i-th root port NICs are hot-plugged into.
func hotplugPort(i int) string { return fmt.Sprintf("hp%d", i) }
