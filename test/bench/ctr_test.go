package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

var runtimes = []string{"io.containerd.runc.v2", "io.containerd.podvm.v2"}

func short(rt string) string {
	return strings.TrimSuffix(strings.TrimPrefix(rt, "io.containerd."), ".v2")
}

// BenchmarkCtr measures what a `ctr` user sees, runc and podvm side by side
// in one private containerd: run to exit, exec latency, stdout throughput.
func BenchmarkCtr(b *testing.B) {
	harness.VMConfig(b)
	ctd := harness.StartContainerd(b, "")
	ctd.ImportBusybox(b)
	ctx := context.Background()
	ctr := func(args ...string) {
		if _, errOut, err := ctd.Ctr(ctx, args...); err != nil {
			b.Fatalf("ctr %v: %v: %s", args, err, errOut)
		}
	}
	// Each sample is taken for both runtimes in turn, the order
	// alternating, so that the host's own ups and downs (a shared
	// machine's neighbours) fall on both sides of a ratio.
	sides := func(n int, f func(rt string, i int)) {
		for i := 0; i < n; i++ {
			for j := range runtimes {
				f(runtimes[(i+j)%len(runtimes)], i)
			}
		}
	}
	timed := func(m map[string][]time.Duration, f func(rt string, i int)) func(rt string, i int) {
		return func(rt string, i int) {
			start := time.Now()
			f(rt, i)
			m[rt] = append(m[rt], time.Since(start))
		}
	}
	n := harness.Samples(10)
	run := map[string][]time.Duration{}
	exec := map[string][]time.Duration{}
	tput := map[string][]time.Duration{}
	stream := map[string][]time.Duration{} // first byte to last
	stdin := map[string][]time.Duration{}
	sides(n, timed(run, func(rt string, i int) {
		ctr("run", "--runtime", rt, "--rm", harness.BusyboxImage, fmt.Sprintf("%s-run-%d", short(rt), i), "true")
	}))
	for _, rt := range runtimes {
		ctr("run", "--runtime", rt, "-d", harness.BusyboxImage, short(rt)+"-exec", "sleep", "100000")
	}
	sides(n, timed(exec, func(rt string, i int) {
		ctr("task", "exec", "--exec-id", fmt.Sprintf("e%d", i), short(rt)+"-exec", "true")
	}))
	for _, rt := range runtimes {
		id := short(rt) + "-exec"
		ctr("task", "kill", "-s", "KILL", id)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if out, _, _ := ctd.Ctr(ctx, "task", "ls"); stopped(out, id) {
				break
			}
		}
		ctr("task", "delete", id)
		ctr("container", "delete", id)
	}
	sides(5, timed(tput, func(rt string, i int) {
		var out timedWriter
		args := []string{"run", "--runtime", rt, "--rm", harness.BusyboxImage, fmt.Sprintf("%s-tput-%d", short(rt), i), "dd", "if=/dev/zero", "bs=1M", "count=100"}
		if errOut, err := ctd.CtrTo(ctx, &out, args...); err != nil || out.n != 100<<20 {
			b.Fatalf("ctr %v: %d bytes of stdout, %v: %s", args, out.n, err, errOut)
		}
		stream[rt] = append(stream[rt], out.last.Sub(out.first))
	}))
	// stdin goes into dd, which costs little per byte, as stdout comes
	// from dd: `wc -c` counting 100 MiB under TCG took ~6 s of the
	// guest's CPU by itself, which measured the emulator, not the
	// transport. Whole 1 MiB records make dd's count exact: a lost byte
	// shows as a partial record.
	in := make([]byte, 100<<20)
	sides(3, timed(stdin, func(rt string, i int) {
		args := []string{"run", "--runtime", rt, "--rm", harness.BusyboxImage, fmt.Sprintf("%s-stdin-%d", short(rt), i), "dd", "of=/dev/null", "bs=1M", "iflag=fullblock"}
		out, errOut, err := ctd.CtrStdin(ctx, in, args...)
		if want := fmt.Sprintf("%d+0 records in", len(in)>>20); err != nil || !strings.Contains(out+errOut, want) {
			b.Fatalf("ctr %v: %q, %v: %s; want %q", args, out, err, errOut, want)
		}
	}))
	fmt.Printf("ctr, runc and podvm side by side (%d samples):\n", n)
	for _, rt := range runtimes {
		fmt.Printf("  %-6s ctr run --rm busybox true: %s\n", short(rt), harness.Summary(run[rt]))
		fmt.Printf("  %-6s ctr task exec true:        %s\n", short(rt), harness.Summary(exec[rt]))
		fmt.Printf("  %-6s ctr run, 100 MiB stdout:   %s (%.1f MB/s including the start)\n", short(rt), harness.Summary(tput[rt]), 104.8576/harness.Median(tput[rt]).Seconds())
		fmt.Printf("  %-6s   first byte to last:      %s (%.1f MB/s)\n", short(rt), harness.Summary(stream[rt]), 104.8576/harness.Median(stream[rt]).Seconds())
		fmt.Printf("  %-6s ctr run, 100 MiB stdin into dd: %s (%.1f MB/s including the start)\n", short(rt), harness.Summary(stdin[rt]), 104.8576/harness.Median(stdin[rt]).Seconds())
	}
	ratio := func(m map[string][]time.Duration) float64 {
		return float64(harness.Median(m[runtimes[1]])) / float64(harness.Median(m[runtimes[0]]))
	}
	fmt.Printf("  podvm/runc median ratios: run %.1fx, exec %.1fx, 100 MiB stdout %.1fx (throughput %.2f of runc's; streaming alone %.2f), 100 MiB stdin %.1fx\n",
		ratio(run), ratio(exec), ratio(tput), 1/ratio(tput), 1/ratio(stream), ratio(stdin))
	printBreakdown(ctd.Log(), harness.Median(run[runtimes[0]]))
}

// timedWriter counts what it is given and when the first and last bytes
// came.
type timedWriter struct {
	n           int
	first, last time.Time
}

func (w *timedWriter) Write(b []byte) (int, error) {
	now := time.Now()
	if w.first.IsZero() {
		w.first = now
	}
	w.last = now
	w.n += len(b)
	return len(b), nil
}

// printBreakdown prints where podvm's starts went, from the shim's log
// lines, next to runc's whole start.
func printBreakdown(log string, runc time.Duration) {
	fmt.Printf("  podvm start, by phase (medians from the shim's log; runc's whole start: %.1f ms):\n", float64(runc)/float64(time.Millisecond))
	fmt.Print("    pod VM up:\n" + harness.PhaseTable(harness.Phases(log, "pod VM up"),
		"network", "template", "cgroup", "qemu", "restore", "agent", "vm", "guest_network"))
	fmt.Print("    container created:\n" + harness.PhaseTable(harness.Phases(log, "container created"),
		"rootfs", "prepare", "guest_mounts", "guest_runc_create", "guest_stdio", "guest_create"))
	fmt.Print("    container started:\n" + harness.PhaseTable(harness.Phases(log, "container started")))
	fmt.Print("    pod stopped:\n" + harness.PhaseTable(harness.Phases(log, "pod stopped"), "vm_stop", "cgroup_leave", "network_down", "unmount"))
}

// stopped says whether `ctr task ls` lists task id as stopped.
func stopped(ls, id string) bool {
	for _, line := range strings.Split(ls, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id && f[2] == "STOPPED" {
			return true
		}
	}
	return false
}
