package hypervisor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

func rdtsc() uint64

var (
	tscOnce sync.Once
	tscKHz  uint64
)

// HostTSCKHz returns the host's TSC rate in kHz, or 0 when the host's TSC is
// not a trustworthy clock (no constant_tsc/tsc_known_freq). A TCG guest reads
// the host's TSC, and a microvm without ACPI has nothing to calibrate it
// against: without tsc_early_khz the guest falls back to a 4 ms jiffies
// clock.
func HostTSCKHz() uint64 {
	tscOnce.Do(func() {
		info, err := os.ReadFile("/proc/cpuinfo")
		if err != nil || !bytes.Contains(info, []byte(" constant_tsc")) || !bytes.Contains(info, []byte(" tsc_known_freq")) {
			return
		}
		tscKHz = measureTSC()
	})
	return tscKHz
}

// measureTSC counts TSC ticks across a short sleep. The monotonic clock is
// itself derived from the TSC with the kernel's own rate, so the ratio is
// that rate to a few parts per million.
func measureTSC() uint64 {
	best := uint64(0)
	var bestSpan time.Duration = 1 << 62
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		c0 := rdtsc()
		time.Sleep(10 * time.Millisecond)
		c1 := rdtsc()
		t1 := time.Now()
		span := t1.Sub(t0)
		if c1 <= c0 || span <= 0 {
			continue
		}
		// Keep the measurement least disturbed by scheduling: the one whose
		// clock reads were closest in time to the TSC reads is not known,
		// but the shortest total span has the least slack.
		if span < bestSpan {
			bestSpan = span
			best = (c1 - c0) * uint64(time.Millisecond) / uint64(span)
		}
	}
	return best
}

// CachedHostTSCKHz is HostTSCKHz remembered in dir across processes (every
// pod has its own shim, and measuring costs 30 ms). The cache is keyed by
// the host's boot ID: the TSC rate does not change while the host runs.
func CachedHostTSCKHz(dir string) uint64 {
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	path := filepath.Join(dir, "tsc")
	if b, err := os.ReadFile(path); err == nil {
		id, khz, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
		if v, err := strconv.ParseUint(khz, 10, 64); ok && err == nil && id == strings.TrimSpace(string(boot)) {
			return v
		}
	}
	khz := HostTSCKHz()
	if len(boot) > 0 && os.MkdirAll(dir, 0o755) == nil {
		tmp := path + fmt.Sprintf(".%d", os.Getpid())
		if os.WriteFile(tmp, []byte(fmt.Sprintf("%s %d\n", strings.TrimSpace(string(boot)), khz)), 0o644) == nil {
			if os.Rename(tmp, path) != nil {
				os.Remove(tmp)
			}
		}
	}
	return khz
}
