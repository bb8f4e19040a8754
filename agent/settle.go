package agent

import (
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// settleLimit bounds each wait of settle: a template is still made from a
// guest that does not settle, its VMs then only do that work themselves.
const settleLimit = 2 * time.Second

// settle finishes, in a VM about to be saved as a template, the work its
// kernel and runtime would otherwise do just after every restore, on the
// clock of a pod's start (each costs tens of ms under TCG, where a restored
// VM translates every code path afresh):
//   - the CRNG's first seeding: crediting the host's entropy after a
//     restore would otherwise be the kernel's "crng init done" (wake-ups,
//     static keys patched in kernel text);
//   - the switch from the early TSC clocksource to the refined one, ~1 s
//     after boot;
//   - a garbage collection of the agent's start-up garbage.
//
// Every restored VM still reseeds the CRNG with fresh host entropy before
// it serves (takeIdentity); what the template's CRNG held is only mixed in.
func settle() {
	t0 := time.Now()
	crng := make(chan struct{})
	go func() {
		defer close(crng)
		// Blocks until the CRNG is seeded; the kernel's jitter entropy
		// does that by itself when asked.
		var b [1]byte
		for {
			if _, err := unix.Getrandom(b[:], 0); err != unix.EINTR {
				return
			}
		}
	}()
	select {
	case <-crng:
	case <-time.After(settleLimit):
		logf(levelWarn, "template: the CRNG is not seeded after %v; restored VMs seed it", settleLimit)
	}
	t1 := time.Now()
	const current = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
	for deadline := time.Now().Add(settleLimit); ; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(current)
		if err != nil || strings.TrimSpace(string(b)) != "tsc-early" || time.Now().After(deadline) {
			break
		}
	}
	t2 := time.Now()
	runtime.GC()
	logf(levelDebug, "template: settled (CRNG %v, clocksource %v, GC %v)", t1.Sub(t0), t2.Sub(t1), time.Since(t2))
}
