package hypervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// AccelChoice is the accelerator to use and why.
type AccelChoice struct {
	Accel  Accel  `json:"accel"`
	Reason string `json:"reason"`
	// Cached is true when the answer came from an earlier probe.
	Cached bool `json:"-"`
}

// probeTimeout bounds a KVM probe boot. A working KVM reaches the agent in
// well under a second; a broken one either fails fast or stalls, and a stall
// costs this much once per host boot (the answer is cached).
const probeTimeout = 10 * time.Second

// ChooseAccel resolves the configured accelerator ("auto", "kvm" or "tcg").
// For auto, a /dev/kvm that opens is not enough: on some hosts (nested
// virtualisation) it creates VMs that die on ordinary instructions. So auto
// boots the real guest under KVM once and uses KVM only if the agent starts;
// the answer is cached in cacheDir (normally /run/podvm, which a reboot
// clears) keyed by the QEMU binary, the guest assets and the host kernel.
func ChooseAccel(ctx context.Context, want string, base Config, cacheDir string) (AccelChoice, error) {
	switch want {
	case "tcg":
		return AccelChoice{Accel: TCG, Reason: "configured"}, nil
	case "kvm":
		if err := kvmUsable(); err != nil {
			return AccelChoice{}, fmt.Errorf("accelerator kvm configured, but %w: set hypervisor.accelerator = \"auto\" or \"tcg\"", err)
		}
		return AccelChoice{Accel: KVM, Reason: "configured"}, nil
	case "auto", "":
	default:
		return AccelChoice{}, fmt.Errorf("unknown accelerator %q: use auto, kvm or tcg", want)
	}
	if err := kvmUsable(); err != nil {
		return AccelChoice{Accel: TCG, Reason: err.Error()}, nil
	}
	key := probeKey(base)
	cache := filepath.Join(cacheDir, "accel.json")
	if c, ok := readProbeCache(cache, key); ok {
		return c, nil
	}
	c := AccelChoice{Accel: KVM, Reason: "a probe boot under KVM reached the agent"}
	if err := ProbeKVM(ctx, base); err != nil {
		if ctx.Err() != nil {
			return AccelChoice{}, err
		}
		c = AccelChoice{Accel: TCG, Reason: "/dev/kvm is present but a probe boot failed: " + firstLine(err.Error())}
	}
	writeProbeCache(cache, key, c)
	return c, nil
}

func kvmUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("/dev/kvm cannot be opened (%v)", errors.Unwrap(err))
	}
	f.Close()
	return nil
}

// ProbeKVM boots the guest of base under KVM until it prints
// base.ProbeMarker on its console.
func ProbeKVM(ctx context.Context, base Config) error {
	if base.ProbeMarker == "" {
		return errors.New("a probe boot needs a marker line the guest prints")
	}
	cfg := base
	cfg.ID = "podvm-kvm-probe"
	cfg.Accel = KVM
	cfg.CPUs = 1
	cfg.MemoryMiB = 128
	cfg.Vsock = false
	seen := make(chan struct{})
	var once bool
	cfg.Console = func(line string) {
		if !once && strings.Contains(line, base.ProbeMarker) {
			once = true
			close(seen)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	vm, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer vm.Stop(context.Background(), 0)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-seen:
			return nil
		case <-vm.Done():
			select {
			case <-seen:
				return nil
			default:
			}
			if err := vm.Err(); err != nil {
				return err
			}
			return errors.New("the guest stopped before its agent ran" + formatTail("console", vm.ConsoleTail()))
		case <-ctx.Done():
			return fmt.Errorf("the guest did not reach its agent within %v%s", probeTimeout, formatTail("console", vm.ConsoleTail()))
		case <-tick.C:
			// KVM's emulation failures pause the VM instead of ending QEMU.
			if vm.stderr.contains("KVM internal error") || vm.stderr.contains("emulation failure") {
				return errors.New("KVM internal error" + formatTail("qemu", vm.stderr.Lines()))
			}
		}
	}
}

func probeKey(c Config) string {
	h := sha256.New()
	for _, p := range []string{c.QEMU, c.Kernel, c.Initramfs} {
		fmt.Fprintf(h, "%s\x00", p)
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(h, "%d %d\x00", st.Size(), st.ModTime().UnixNano())
		}
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	h.Write(u.Release[:])
	h.Write(u.Version[:])
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	h.Write(boot)
	return hex.EncodeToString(h.Sum(nil))
}

type probeCache struct {
	Key string `json:"key"`
	AccelChoice
	ProbedAt time.Time `json:"probed_at"`
}

func readProbeCache(path, key string) (AccelChoice, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return AccelChoice{}, false
	}
	var c probeCache
	if json.Unmarshal(b, &c) != nil || c.Key != key || (c.Accel != KVM && c.Accel != TCG) {
		return AccelChoice{}, false
	}
	c.AccelChoice.Cached = true
	return c.AccelChoice, true
}

// writeProbeCache is best effort: without a cache, the next start probes
// again, which is slow but correct.
func writeProbeCache(path, key string, c AccelChoice) {
	b, err := json.Marshal(probeCache{Key: key, AccelChoice: c, ProbedAt: time.Now().UTC()})
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".accel-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
