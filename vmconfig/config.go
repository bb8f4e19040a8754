// Package vmconfig is podvm's configuration: the TOML file with its
// documented defaults and the rules that reject a bad value by its key.
package vmconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the configuration file lives unless PODVM_CONFIG
// names another.
const DefaultPath = "/etc/podvm/config.toml"

// DefaultTCGCPU is the guest CPU under TCG: every feature QEMU emulates but
// the two that only say "rep movsb is fast". Under TCG a rep movsb copies a
// byte per step; without them the guest kernel copies with its unrolled
// loops (measured: ctr run ~10% faster, 100 MiB of stdout ~15%).
const DefaultTCGCPU = "max,-erms,-fsrm"

// Config is the whole configuration. The TOML keys are the `toml` tags.
type Config struct {
	Hypervisor Hypervisor `toml:"hypervisor"`
	Agent      Agent      `toml:"agent"`
	Timeouts   Timeouts   `toml:"timeouts"`
	Network    Network    `toml:"network"`
	Template   Template   `toml:"template"`
	// Annotations says which keys a pod may change with annotations
	// io.podvm.config.<key>.
	Annotations Annotations `toml:"annotations"`
	// Debug makes the shim, the guest kernel and the agent log verbosely.
	Debug bool `toml:"debug"`
	// DebugConsole lets `containerd-shim-podvm-v2 console` open a shell in
	// the guest.
	DebugConsole bool `toml:"debug_console"`
	// StateDir holds runtime state such as the accelerator probe's answer.
	StateDir string `toml:"state_dir"`
}

// Hypervisor is the [hypervisor] table: the QEMU process and the guest.
type Hypervisor struct {
	// Path is the qemu-system-x86_64 binary.
	Path string `toml:"path"`
	// Kernel is the guest vmlinux (uncompressed, PVH entry).
	Kernel string `toml:"kernel"`
	// Initramfs is the guest initramfs with the agent as /init.
	Initramfs string `toml:"initramfs"`
	// Machine is "microvm" (fastest boot) or "q35" (PCI, ACPI).
	Machine string `toml:"machine"`
	// Accelerator is "auto" (KVM if a probe boot works, else TCG), "kvm"
	// or "tcg".
	Accelerator string `toml:"accelerator"`
	// VCPUs and MemoryMiB size the guest.
	VCPUs     int `toml:"vcpus"`
	MemoryMiB int `toml:"memory_mib"`
	// MaxMemoryMiB bounds a guest's memory, whatever a pod's limits or
	// annotations ask for.
	MaxMemoryMiB int `toml:"max_memory_mib"`
	// CPUModel is the guest CPU under TCG (QEMU's -cpu); under KVM the
	// guest gets the host's.
	CPUModel string `toml:"cpu_model"`
	// TCGCacheMiB caps TCG's translation cache (0: QEMU's default, which
	// reserves 1 GiB and grows under load).
	TCGCacheMiB int `toml:"tcg_cache_mib"`
	// KernelParams are appended to the guest kernel command line.
	KernelParams string `toml:"kernel_params"`
	// SharedFS is how containers' files reach the guest: "9p" (QEMU
	// serves them: no process per pod, and VMs restore from templates),
	// "virtio-fs" (a virtiofsd per pod: several times faster on small
	// files and metadata, but the guest's RAM is shared with it, so these
	// VMs always boot) or "auto": 9p where a template serves the pod,
	// virtio-fs where the VM boots anyway and virtiofsd exists.
	SharedFS string `toml:"shared_fs"`
	// VirtioFSDaemon is the virtiofsd binary, VirtioFSCache its cache
	// mode ("auto", "always" or "none").
	VirtioFSDaemon string `toml:"virtio_fs_daemon"`
	VirtioFSCache  string `toml:"virtio_fs_cache"`
}

// Agent is the [agent] table: the channel to the guest agent.
type Agent struct {
	// Transport is "auto" (vsock where /dev/vhost-vsock exists, else
	// serial), "serial" or "vsock".
	Transport string `toml:"transport"`
	// VsockPort is the agent's vsock port.
	VsockPort uint32 `toml:"vsock_port"`
}

// Network is the [network] table: how pod interfaces reach the VM.
type Network struct {
	// Model is "tcfilter" (tc redirects between the pod interface and a
	// TAP; the guest keeps the pod's MAC), "macvtap" or "bridge".
	Model string `toml:"model"`
}

// Template is the [template] table: VMs restored from a saved VM instead
// of booted.
type Template struct {
	// Enabled starts pods' VMs from templates where that works (serial
	// agent transport); otherwise every VM boots.
	Enabled bool `toml:"enabled"`
	// Max is how many templates are kept; the least recently used goes.
	Max int `toml:"max"`
	// Dir holds the templates, their RAM included: best on tmpfs.
	Dir string `toml:"dir"`
}

// Timeouts is the [timeouts] table.
type Timeouts struct {
	// Boot bounds QEMU's start to the agent's first answer.
	Boot Duration `toml:"boot"`
	// Shutdown is how long the guest gets to power off before QEMU is
	// told to quit, then killed.
	Shutdown Duration `toml:"shutdown"`
	// Request bounds any one call to the guest agent (creating a
	// container included); a call that takes longer fails.
	Request Duration `toml:"request"`
	// Agent is how long the agent has to answer a liveness check once a
	// call to it is slow. A guest that does not answer is killed from the
	// host and its processes are reported exited (137): a stuck guest
	// must not hold a pod hostage.
	Agent Duration `toml:"agent"`
}

// Duration is a time.Duration written as a string ("30s", "1m").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"30s\"", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as Go does ("30s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the built-in configuration.
func Default() *Config {
	share := assetDir()
	return &Config{
		Hypervisor: Hypervisor{
			Path:           "qemu-system-x86_64",
			Kernel:         filepath.Join(share, "vmlinux"),
			Initramfs:      filepath.Join(share, "initramfs.cpio"),
			Machine:        "microvm",
			Accelerator:    "auto",
			VCPUs:          1,
			MemoryMiB:      512,
			MaxMemoryMiB:   16384,
			TCGCacheMiB:    32,
			CPUModel:       DefaultTCGCPU,
			SharedFS:       "auto",
			VirtioFSDaemon: "/usr/lib/qemu/virtiofsd",
			VirtioFSCache:  "auto",
		},
		Agent:       Agent{Transport: "auto", VsockPort: 1024},
		Network:     Network{Model: "tcfilter"},
		Template:    Template{Enabled: true, Max: 4, Dir: "/dev/shm/podvm-templates"},
		Annotations: Annotations{Allowed: []string{"hypervisor.vcpus", "hypervisor.memory_mib", "debug"}, MaxVCPUs: 2, MaxMemoryMiB: 2048},
		Timeouts: Timeouts{
			Boot:     Duration{30 * time.Second},
			Shutdown: Duration{5 * time.Second},
			Request:  Duration{60 * time.Second},
			Agent:    Duration{10 * time.Second},
		},
		StateDir: "/run/podvm",
	}
}

// assetDir finds the guest assets: beside an installed binary
// ($PREFIX/bin/../share/podvm), else the usual prefixes.
func assetDir() string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), "..", "share", "podvm"))
	}
	dirs = append(dirs, "/usr/local/share/podvm", "/usr/share/podvm")
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "vmlinux")); err == nil {
			return filepath.Clean(d)
		}
	}
	return "/usr/local/share/podvm"
}

// Path returns the configuration file to read: $PODVM_CONFIG if set, else
// DefaultPath. explicit reports whether it was named by the environment, in
// which case it must exist.
func Path() (path string, explicit bool) {
	if p := os.Getenv("PODVM_CONFIG"); p != "" {
		return p, true
	}
	return DefaultPath, false
}

// Load reads the configuration: the defaults overlaid with the file at
// Path(). A missing default file means the defaults; a missing file named by
// PODVM_CONFIG is an error.
func Load() (*Config, error) {
	path, explicit := Path()
	c, err := LoadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		c = Default()
		return c, c.Validate()
	}
	return c, err
}

// LoadFile reads the defaults overlaid with the file at path.
func LoadFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read podvm config: %w", err)
	}
	c, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("podvm config %s: %w", path, err)
	}
	return c, nil
}

// Parse overlays the defaults with a TOML document and validates the
// result. Unknown keys are errors: a misspelt key silently ignored is a
// setting that silently does not apply.
func Parse(doc string) (*Config, error) {
	return Default().Overlay(doc)
}

func describeDecodeError(err error) error {
	var perr toml.ParseError
	if errors.As(err, &perr) {
		if perr.LastKey != "" {
			return fmt.Errorf("%s: %s (line %d)", perr.LastKey, perr.Message, perr.Position.Line)
		}
		return fmt.Errorf("%s (line %d)", perr.Message, perr.Position.Line)
	}
	return err
}

// Overlay returns a copy of c with a TOML document's keys on top: how
// containerd's runtime options (a ConfigPath or ConfigBody) refine the
// node's configuration for one runtime handler. Unknown keys and bad values
// are errors, as in Parse.
func (c *Config) Overlay(doc string) (*Config, error) {
	out := *c
	md, err := toml.Decode(doc, &out)
	if err != nil {
		return nil, describeDecodeError(err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s: see the example config.toml for the keys podvm knows", strings.Join(keys, ", "))
	}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return &out, nil
}
