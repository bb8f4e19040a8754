package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vmconfig"
)

// BenchmarkDensity starts idle pods through CRI one after the other (each
// a sandbox and one sleeping container; $PODVM_DENSITY_N of them, 10 by
// default, `make density` 100), then reports how long that took, what each
// pod costs the host (PSS of its QEMU and its shim, from smaps_rollup, and
// MemAvailable's fall; 5 s after the last start and again once settled,
// $PODVM_DENSITY_SETTLE seconds after it) and the host CPU they take while
// idle; and removes them all (StartCRI's cleanup checks that nothing is
// left).
func BenchmarkDensity(b *testing.B) {
	harness.VMConfig(b)
	n := 10
	if s := os.Getenv("PODVM_DENSITY_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("PODVM_DENSITY_N=%q: want a positive number of pods", s)
		}
		n = v
	}
	ctd := harness.StartCRI(b)
	dir := b.TempDir()
	ctx := context.Background()
	crictl := mustCrictl(b, ctd)
	availBefore := memAvailableMiB(b)
	var starts []time.Duration
	var pods []string
	t0 := time.Now()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("density-%d", i)
		podCfg, _ := harness.WriteJSON(dir, name+"-pod.json", map[string]any{
			"metadata": map[string]any{"name": name, "namespace": "default", "uid": name}, "linux": map[string]any{}})
		ctrCfg, _ := harness.WriteJSON(dir, name+"-ctr.json", map[string]any{
			"metadata": map[string]any{"name": "idle"}, "image": map[string]any{"image": harness.BusyboxImage},
			"command": []string{"sleep", "1000000"}, "linux": map[string]any{}})
		start := time.Now()
		pod := crictl("runp", "--runtime", "podvm", podCfg)
		crictl("start", crictl("create", pod, ctrCfg, podCfg))
		starts = append(starts, time.Since(start))
		pods = append(pods, pod)
	}
	all := time.Since(t0)
	lastStart := time.Now()
	defer func() {
		// Also when a measurement below fails: the pods must go.
		for _, pod := range pods {
			ctd.Crictl(ctx, "stopp", pod)
			ctd.Crictl(ctx, "rmp", pod)
		}
	}()

	// 5 s for the spares to be refilled and the Go runtime's first GCs.
	time.Sleep(5 * time.Second)
	early := measurePods(b, pods)
	pids := early.pids
	availAfter := memAvailableMiB(b)

	const window = 10 * time.Second
	busy0, total0 := hostCPU(b)
	ticks0 := processTicks(pids)
	time.Sleep(window)
	busy1, total1 := hostCPU(b)
	ticks1 := processTicks(pids)
	hostBusy := float64(busy1-busy0) / float64(total1-total0) * 100
	// USER_HZ is 100 on Linux: a tick is 10 ms.
	podsCPU := float64(ticks1-ticks0) * 10 * float64(time.Millisecond) / float64(window) * 100

	// An idle pod's translation cache goes on growing for a minute or
	// two (code the guest had not run yet), then stays: what a node
	// running idle pods holds is read once that is over.
	settle := densitySettle(b)
	var settled podsMemory
	if settle > 0 {
		time.Sleep(time.Until(lastStart.Add(settle)))
		settled = measurePods(b, pods)
	}

	start := time.Now()
	for _, pod := range pods {
		crictl("stopp", pod)
		crictl("rmp", pod)
	}
	removal := time.Since(start)
	pods = nil

	f := float64(n)
	fmt.Printf("density: %d idle podvm pods through CRI, one after the other (TCG, %d host CPUs):\n", n, runtime.NumCPU())
	fmt.Printf("  started in %v; per pod (runp+create+start): %s\n", all.Round(time.Millisecond), harness.Summary(starts))
	early.print(n, "5 s after the last start")
	if settle > 0 {
		settled.print(n, fmt.Sprintf("%v after the last start (settled)", settle))
	}
	fmt.Printf("  host MemAvailable fell by %.1f MiB per pod (page cache and the kernel's own included)\n", (availBefore-availAfter)/f)
	fmt.Printf("  while idle (%v): host CPU busy %.1f%%, the pods' QEMUs and shims %.2f%% of one CPU each\n", window, hostBusy, podsCPU/f)
	fmt.Printf("  removed in %v (%v per pod)\n", removal.Round(time.Millisecond), (removal / time.Duration(n)).Round(time.Millisecond))
}

// podsMemory is what a set of pods' QEMUs and shims hold.
type podsMemory struct {
	qemu, shim harness.Memory
	kinds      map[string]float64 // QEMU's PSS by what it holds
	pids       []int              // the QEMUs' and the shims'
}

// measurePods reads the memory of each pod's QEMU and shim.
func measurePods(b *testing.B, pods []string) podsMemory {
	c := harness.TakeCensus()
	m := podsMemory{kinds: map[string]float64{}}
	templates := harness.TemplateDir() + "/"
	for _, pod := range pods {
		qp, sp := c.QEMUPid(pod), c.ShimPid(pod)
		if qp == 0 || sp == 0 {
			b.Fatalf("pod %s: no QEMU (%d) or shim (%d) in the census", pod, qp, sp)
		}
		qm, err := harness.ReadMemory(qp)
		if err != nil {
			b.Fatal(err)
		}
		sm, err := harness.ReadMemory(sp)
		if err != nil {
			b.Fatal(err)
		}
		m.qemu, m.shim = m.qemu.Add(qm), m.shim.Add(sm)
		maps, err := harness.ReadMappings(qp)
		if err != nil {
			b.Fatal(err)
		}
		for _, mp := range maps {
			for kind, pss := range qemuKinds(mp, templates) {
				m.kinds[kind] += pss
			}
		}
		m.pids = append(m.pids, qp, sp)
	}
	return m
}

func (m podsMemory) print(n int, when string) {
	f := float64(n)
	fmt.Printf("  per pod, %s:\n", when)
	fmt.Printf("    MiB                 %8s %8s %8s\n", "RSS", "PSS", "anon")
	fmt.Printf("    QEMU                %8.1f %8.1f %8.1f\n", m.qemu.RSS/f, m.qemu.PSS/f, m.qemu.Anon/f)
	fmt.Printf("    shim                %8.1f %8.1f %8.1f\n", m.shim.RSS/f, m.shim.PSS/f, m.shim.Anon/f)
	both := m.qemu.Add(m.shim)
	fmt.Printf("    QEMU + shim         %8.1f %8.1f %8.1f\n", both.RSS/f, both.PSS/f, both.Anon/f)
	fmt.Printf("    QEMU's PSS by what it holds (smaps; docs/design.md, \"Memory per pod\"):\n")
	for _, kind := range qemuKindOrder {
		fmt.Printf("      %-38s %6.1f\n", kind, m.kinds[kind]/f)
	}
}

// densitySettle is how long after the last start the settled memory is
// read: $PODVM_DENSITY_SETTLE seconds, 150 by default (0: read once).
func densitySettle(b *testing.B) time.Duration {
	s := os.Getenv("PODVM_DENSITY_SETTLE")
	if s == "" {
		return 150 * time.Second
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		b.Fatalf("PODVM_DENSITY_SETTLE=%q: want seconds", s)
	}
	return time.Duration(v) * time.Second
}

// The kinds of QEMU's memory the density account tells apart.
const (
	kindTCG        = "TCG translation cache"
	kindRAMWritten = "guest RAM written since the restore"
	kindRAMShared  = "guest RAM shared with the template"
	kindRAMBooted  = "guest RAM of a booted VM"
	kindAnon       = "QEMU heap and other anonymous memory"
	kindFiles      = "QEMU binary and libraries"
)

var qemuKindOrder = []string{kindTCG, kindRAMWritten, kindRAMShared, kindRAMBooted, kindAnon, kindFiles}

// qemuKinds says what a QEMU mapping holds and its PSS for each. TCG's
// translation cache is QEMU's one anonymous mapping it writes code into
// (rwx); a template's RAM is its memory file mapped private, where the
// anonymous pages are those the guest wrote since the restore; a booted
// guest's RAM is an anonymous mapping the size of the guest. templates is
// the directory (with its slash) the templates' memory files are in.
func qemuKinds(m harness.Mapping, templates string) map[string]float64 {
	switch {
	case m.Name == "" && m.Perms == "rwxp":
		return map[string]float64{kindTCG: m.PSS}
	case strings.HasPrefix(m.Name, templates):
		return map[string]float64{kindRAMWritten: m.Anon, kindRAMShared: m.PSS - m.Anon}
	case m.Name == "" && m.SizeMiB >= vmconfig.MinMemoryMiB:
		return map[string]float64{kindRAMBooted: m.PSS}
	case strings.HasPrefix(m.Name, "/"):
		return map[string]float64{kindFiles: m.PSS}
	}
	return map[string]float64{kindAnon: m.PSS}
}

// memAvailableMiB is the host's MemAvailable.
func memAvailableMiB(b *testing.B) float64 {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}

// hostCPU returns the busy and total ticks of all CPUs (/proc/stat).
func hostCPU(b *testing.B) (busy, total uint64) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		total += v
		// user nice system idle iowait irq softirq steal ...
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}

// processTicks sums the user and system ticks of pids.
func processTicks(pids []int) uint64 {
	var sum uint64
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		// After the command: state is field 3, utime 14 and stime 15.
		if len(f) > 12 {
			u, _ := strconv.ParseUint(f[11], 10, 64)
			st, _ := strconv.ParseUint(f[12], 10, 64)
			sum += u + st
		}
	}
	return sum
}
