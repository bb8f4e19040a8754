// Package hypervisor runs podvm guests in QEMU: the command line, the
// process and its supervision, the QMP client, the choice between KVM and
// TCG, and the guest console.
package hypervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/podvm/podvm/vmconfig"
)

// Accel is the accelerator QEMU runs the guest with.
type Accel string

const (
	KVM Accel = "kvm"
	TCG Accel = "tcg"
)

// CPUPlug is how a running VM gets more vCPUs.
type CPUPlug string

const (
	// PlugQMP adds vCPUs with device_add, as Kata does.
	PlugQMP CPUPlug = "qmp"
	// PlugPresent starts every vCPU the VM may have with QEMU and has the
	// guest kernel bring up only the first ones (maxcpus=); growing onlines
	// the others. Under TCG, QEMU 7.2 aborts on a vCPU hot-plugged once its
	// translation cache regions are all in use (tcg_region_initial_alloc),
	// which any busy guest reaches; idle present vCPUs cost nothing.
	PlugPresent CPUPlug = "present"
)

// cpuPlug is c.CPUPlug, or the accelerator's default.
func (c *Config) cpuPlug() CPUPlug {
	if c.CPUPlug != "" {
		return c.CPUPlug
	}
	if c.Accel == TCG {
		return PlugPresent
	}
	return PlugQMP
}

// Config is what one QEMU process is started with.
type Config struct {
	// ID names the VM in QEMU's -name and in logs; usually the sandbox ID.
	ID string
	// QEMU is the qemu-system-x86_64 binary (a name is looked up in PATH).
	QEMU      string
	Kernel    string // uncompressed vmlinux with a PVH entry
	Initramfs string // uncompressed cpio with the agent as /init
	// Machine is a QEMU machine type: "microvm" (default) or "q35".
	Machine string
	Accel   Accel
	// CPUModel is QEMU's -cpu under TCG (vmconfig.DefaultTCGCPU when empty); KVM always
	// uses "host".
	CPUModel string
	CPUs     int
	// MemoryMiB is the guest's RAM.
	MemoryMiB int
	// MaxCPUs and MaxMemoryMiB are how far the running VM can grow by
	// hot-plug (AddCPUs, AddMemory), on machines that can; values not
	// above CPUs or MemoryMiB leave that resource fixed.
	MaxCPUs      int
	MaxMemoryMiB int
	// CPUPlug is how vCPUs are added (default: by accelerator, see
	// cpuPlug).
	CPUPlug CPUPlug
	// TBSizeMiB caps TCG's translation cache, which otherwise reserves 1 GiB
	// and grows under load. Zero leaves QEMU's default.
	TBSizeMiB int
	// TSCKHz is the host TSC rate given to a TCG guest (tsc_early_khz),
	// which cannot calibrate it without ACPI; zero leaves it out.
	TSCKHz uint64
	// Ports are named virtio-serial ports; the host end of each is a
	// socket the VM hands out once (Port). Names are the guest's to look
	// up in /sys/class/virtio-ports.
	Ports []string
	// listenPorts makes the named ports listening sockets at the given
	// paths instead: any process can connect to them. Only this package's
	// tests set it, to play a second host process against the agent.
	listenPorts map[string]string
	// Vsock gives the guest a vhost-vsock device with a context ID of its
	// own (VsockCID); it needs /dev/vhost-vsock.
	Vsock bool
	// KernelParams are appended to the guest kernel command line. They
	// must be words without spaces or quotes: the kernel splits on both.
	KernelParams []string
	// Debug makes the guest kernel verbose (no "quiet").
	Debug bool
	// Console receives each line the guest writes to its console. It is
	// called from one goroutine; nil discards (the VM still keeps the last
	// lines for error messages).
	Console func(line string)
	// Stderr receives each line QEMU writes to its standard error while
	// it runs, where it reports a device it stopped for the guest's
	// fault. It is called from one goroutine; nil discards (the VM still
	// keeps the last lines for its exit error).
	Stderr func(line string)
	// ProbeMarker is the console line that proves a probe boot (ProbeKVM)
	// reached the guest's user space; the KernelParams must make the guest
	// print it.
	ProbeMarker string
	// NetNS is the network namespace QEMU runs in (a path under
	// /var/run/netns or /proc); empty runs it in the caller's.
	NetNS string
	// NICs are the guest's network cards, each backed by a TAP or macvtap
	// file that QEMU inherits.
	NICs []NIC
	// Shares are host directories the guest mounts (over 9p, or virtio-fs:
	// SharedFS). Shares cannot be added later on microvm, so the sandbox's
	// shared directory is given at start and containers' files are
	// mounted under it.
	Shares []Share
	// SharedFS is how the shares are served: FS9P (the default) or
	// FSVirtio, with a Virtiofsd daemon per share in cache mode
	// VirtioFSCache, whose socket is made in SocketDir (a directory only
	// root can enter).
	SharedFS      string
	Virtiofsd     string
	VirtioFSCache string
	SocketDir     string
	// Memory backs the guest's boot RAM with a file: a VM template's,
	// shared while the template is built, private (copy-on-write) in each
	// VM restored from it. Nil gives anonymous RAM.
	Memory *MemoryFile
	// Incoming starts QEMU waiting for a saved device state (Restore)
	// instead of booting the kernel.
	Incoming bool
}

// MemoryFile is guest RAM in a file.
type MemoryFile struct {
	Path string
	// Shared maps the file shared: the guest's writes reach it. Otherwise
	// the mapping is private and the file stays as it is.
	Shared bool
}

// NIC is a guest network card on a host TAP (or macvtap) device. A
// template's NICs have no File: they are joined to nothing.
type NIC struct {
	MAC  net.HardwareAddr
	File *os.File
	MTU  int
}

// Share is a host directory exported to the guest under a mount tag.
type Share struct {
	Tag  string
	Path string
}

// sharedFS is c.SharedFS, or the default.
func (c *Config) sharedFS() string {
	if c.SharedFS == "" {
		return FS9P
	}
	return c.SharedFS
}

// virtioFS says whether the shares are served by virtiofsd.
func (c *Config) virtioFS() bool { return c.sharedFS() == FSVirtio && len(c.Shares) > 0 }

// Machines lists the supported QEMU machine types.
func Machines() []string {
	var ms []string
	for name := range machines {
		ms = append(ms, name)
	}
	sort.Strings(ms)
	return ms
}

// validate checks what would otherwise fail later with a less helpful
// message from QEMU or, worse, a guest that never answers.
func (c *Config) validate() error {
	var errs []error
	if c.QEMU == "" {
		errs = append(errs, errors.New("no QEMU binary configured (hypervisor.path)"))
	} else if _, err := exec.LookPath(c.QEMU); err != nil {
		errs = append(errs, fmt.Errorf("QEMU binary %s not found: install it with `apt-get install qemu-system-x86` or set hypervisor.path", c.QEMU))
	}
	errs = append(errs, checkKernel(c.Kernel), checkInitramfs(c.Initramfs))
	if _, ok := machines[c.Machine]; !ok {
		errs = append(errs, fmt.Errorf("machine: %w", vmconfig.CheckMachine(c.Machine)))
	}
	if c.Accel != KVM && c.Accel != TCG {
		errs = append(errs, fmt.Errorf("unknown accelerator %q: use kvm or tcg", c.Accel))
	}
	if c.CPUs < 1 || c.CPUs > vmconfig.GuestMaxVCPUs {
		errs = append(errs, fmt.Errorf("vCPUs must be between 1 and %d, not %d", vmconfig.GuestMaxVCPUs, c.CPUs))
	}
	if c.MaxCPUs > vmconfig.GuestMaxVCPUs {
		errs = append(errs, fmt.Errorf("at most %d vCPUs can be hot-plugged, not %d", vmconfig.GuestMaxVCPUs, c.MaxCPUs))
	}
	if c.MemoryMiB < vmconfig.MinMemoryMiB {
		errs = append(errs, fmt.Errorf("guest memory must be at least %d MiB, not %d", vmconfig.MinMemoryMiB, c.MemoryMiB))
	}
	if c.TBSizeMiB < 0 || c.TBSizeMiB > vmconfig.MaxTCGCacheMiB {
		errs = append(errs, fmt.Errorf("TCG translation cache size must be 0..%d MiB, not %d", vmconfig.MaxTCGCacheMiB, c.TBSizeMiB))
	}
	for i, n := range c.NICs {
		if (n.File == nil && !c.template()) || len(n.MAC) != 6 {
			errs = append(errs, fmt.Errorf("NIC %d needs a TAP file and a MAC", i))
		}
	}
	if c.NetNS != "" {
		if _, err := os.Stat(c.NetNS); err != nil {
			errs = append(errs, fmt.Errorf("network namespace %s: %w", c.NetNS, err))
		}
	}
	for _, sh := range c.Shares {
		if st, err := os.Stat(sh.Path); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("shared directory %s for tag %q is not a directory", sh.Path, sh.Tag))
		}
		if sh.Tag == "" || len(sh.Tag) > 31 || strings.ContainsAny(sh.Tag, ", =") {
			errs = append(errs, fmt.Errorf("invalid mount tag %q", sh.Tag))
		}
	}
	switch c.sharedFS() {
	case FS9P:
	case FSVirtio:
		if len(c.Shares) > 0 {
			errs = append(errs, c.checkVirtioFS()...)
		}
	default:
		errs = append(errs, fmt.Errorf("unknown shared filesystem %q: use %s or %s", c.SharedFS, FS9P, FSVirtio))
	}
	if c.Memory != nil && !filepath.IsAbs(c.Memory.Path) {
		errs = append(errs, fmt.Errorf("memory file %q must be an absolute path", c.Memory.Path))
	}
	if c.Incoming && (c.Memory == nil || c.Memory.Shared) {
		errs = append(errs, errors.New("a VM restored from a template needs the template's memory file, mapped private"))
	}
	seen := map[string]bool{}
	for _, p := range c.Ports {
		if !validPortName(p) || seen[p] {
			errs = append(errs, fmt.Errorf("invalid or repeated virtio-serial port name %q", p))
		}
		seen[p] = true
	}
	if !validWord(c.ID) {
		errs = append(errs, fmt.Errorf("invalid VM name %q: letters, digits, '.', '_' and '-' only", c.ID))
	}
	for _, p := range c.KernelParams {
		if err := vmconfig.CheckKernelParam(p); err != nil {
			errs = append(errs, fmt.Errorf("kernel parameter %w", err))
		}
	}
	return errors.Join(errs...)
}

// template says whether c builds a VM template: RAM shared with its file.
func (c *Config) template() bool { return c.Memory != nil && c.Memory.Shared }

// validWord says whether s can stand in QEMU's and the kernel's command
// lines as it is: no separators, no option syntax.
func validWord(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// validPortName is a virtio-serial port name the guest finds in sysfs.
func validPortName(s string) bool { return validWord(s) && len(s) <= 64 }

func checkAsset(what, path string) error {
	if path == "" {
		return fmt.Errorf("no %s configured: run `make guest` and set its path", what)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s %s does not exist: run `make guest install` or fix the path", what, path)
	case err != nil:
		return fmt.Errorf("%s %s: %w", what, path, err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s %s is not a regular file", what, path)
	case st.Size() == 0:
		return fmt.Errorf("%s %s is empty: rebuild it with `make guest`", what, path)
	}
	return nil
}
