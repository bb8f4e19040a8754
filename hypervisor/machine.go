package hypervisor

// machine is one QEMU machine type: how it is asked for, on which bus its
// virtio devices sit, and what the guest kernel needs to know about it.
type machine interface {
	// machineArg is the value of -machine.
	machineArg(c *Config) string
	// virtio returns the QEMU device name of a virtio device kind
	// ("serial", "rng", "vsock", "net", "9p", "fs") on this machine's bus.
	virtio(kind string) string
	kernelParams(c *Config) []string
	// hotplugSlots is how many NICs can be plugged into the running VM
	// (0: none; microvm has no hot-pluggable bus).
	hotplugSlots() int
	// extraArgs are further QEMU options the machine needs.
	extraArgs() []string
	// resizable says whether CPUs and memory can be hot-plugged (ACPI).
	resizable() bool
	// vhostUserArgs are the options a vhost-user device (virtio-fs)
	// needs on this machine.
	vhostUserArgs() []string
}

var machines = map[string]machine{
	"microvm": microvm{},
	"q35":     q35{},
}

// microvm is QEMU's minimal machine: no PCI, no firmware tables, virtio
// over MMIO. ACPI stays off: with it, early boot hung now and then under
// TCG. QEMU then lists the virtio-mmio devices on the kernel command line
// itself (auto-kernel-cmdline).
type microvm struct{}

func (microvm) machineArg(c *Config) string {
	// The PIT stays on: without it the guest hangs under TCG. So does the
	// RTC: without one the kernel spends a second waiting for it at boot.
	// The ISA serial port is the console; option ROMs only slow the start.
	return "microvm,acpi=off,x-option-roms=off"
}

func (microvm) virtio(kind string) string {
	return virtioDevices[kind] + "-device"
}

func (microvm) kernelParams(*Config) []string {
	return []string{"acpi=off", "pci=off"}
}

func (microvm) hotplugSlots() int { return 0 }

func (microvm) extraArgs() []string { return nil }

func (microvm) resizable() bool { return false }

// virtio-mmio devices are legacy (virtio 0.9) by default on microvm, and
// vhost-user daemons (libvhost-user) refuse legacy devices.
func (microvm) vhostUserArgs() []string {
	return []string{"-global", "virtio-mmio.force-legacy=false"}
}

// q35 is a PC with PCIe: slower to boot than microvm, but with ACPI and
// PCI hot-plug.
type q35 struct{}

func (q35) machineArg(c *Config) string {
	return "q35,vmport=off,smbus=off,sata=off"
}

func (q35) virtio(kind string) string {
	return virtioDevices[kind] + "-pci"
}

func (q35) kernelParams(*Config) []string { return nil }

func (q35) resizable() bool { return true }

// vhost-user-fs-pci is a modern virtio device already.
func (q35) vhostUserArgs() []string { return nil }

// PCIe devices plug into root ports, which must exist when QEMU starts.
func (q35) hotplugSlots() int { return q35HotplugPorts }

const q35HotplugPorts = 4

// QEMU 7.2's q35 hands PCIe root port hot-plug to ACPI by default; native
// PCIe hot-plug (pciehp) is what the guest kernel has, and needs no ACPI
// method evaluation on every plug.
func (q35) extraArgs() []string {
	return []string{"-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"}
}

// virtioDevices maps device kinds to QEMU device names without their bus
// suffix (-device for MMIO, -pci for PCI).
var virtioDevices = map[string]string{
	"serial": "virtio-serial",
	"rng":    "virtio-rng",
	"vsock":  "vhost-vsock",
	"net":    "virtio-net",
	"9p":     "virtio-9p",
	"fs":     "vhost-user-fs",
}
