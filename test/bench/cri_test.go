package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/podvm/podvm/test/harness"
)

// mustCrictl returns crictl against ctd, ending the benchmark on failure.
func mustCrictl(b *testing.B, ctd *harness.Containerd) func(args ...string) string {
	return func(args ...string) string {
		out, errOut, err := ctd.Crictl(context.Background(), args...)
		if err != nil {
			b.Fatalf("crictl %v: %v: %s", args, err, errOut)
		}
		return strings.TrimSpace(out)
	}
}

// BenchmarkCRI measures what a kubelet sees, runc and podvm side by side in
// one containerd: a pod with one container from runp to started, a
// synchronous exec into it (crictl exec -s), and TCP
// throughput from the test's namespace (the CNI bridge's side) into it.
func BenchmarkCRI(b *testing.B) {
	harness.VMConfig(b)
	ctd := harness.StartCRI(b)
	dir := b.TempDir()
	crictl := mustCrictl(b, ctd)
	n := harness.Samples(10)
	start := map[string][]time.Duration{}
	execFirst, execAgain := map[string][]time.Duration{}, map[string][]time.Duration{}
	mbps := map[string][]float64{}
	handlers := []string{"runc", "podvm"}
	if harness.Containerd2() {
		// The Sandbox API's pods too (no pause container; the shim's
		// infra process holds the namespaces).
		handlers = append(handlers, "podvm-sandbox")
	}
	for i := 0; i < n; i++ {
		// Both handlers in turn, the order alternating: the host's ups and
		// downs fall on both sides of a ratio.
		for j := range handlers {
			handler := handlers[(i+j)%len(handlers)]
			t0 := time.Now()
			pod, c := startPod(crictl, dir, handler, fmt.Sprintf("%s-%d", handler, i), "nc", "-ll", "-p", "5001", "-e", "cat")
			start[handler] = append(start[handler], time.Since(t0))
			// The first exec into a VM runs code its TCG cache has not
			// seen; a kubelet's probes exec again and again.
			for _, m := range []map[string][]time.Duration{execFirst, execAgain} {
				t0 = time.Now()
				crictl("exec", "-s", c, "true")
				m[handler] = append(m[handler], time.Since(t0))
			}
			if i < 3 {
				mb, err := throughput(ctd.NetNS, podIP(crictl, pod)+":5001", 64<<20)
				if err != nil {
					b.Fatalf("%s: %v", handler, err)
				}
				mbps[handler] = append(mbps[handler], mb)
			}
			crictl("stopp", pod)
			crictl("rmp", pod)
		}
	}
	flavour := "containerd 1.6"
	if harness.Containerd2() {
		flavour = "containerd 2.x"
	}
	fmt.Printf("CRI, runc and podvm side by side (%d pods each, %s):\n", n, flavour)
	for _, h := range handlers {
		fmt.Printf("  %-13s runp + create + start: %s\n", h, harness.Summary(start[h]))
		fmt.Printf("  %-13s crictl exec -s true, first: %s\n", h, harness.Summary(execFirst[h]))
		fmt.Printf("  %-13s crictl exec -s true, again: %s\n", h, harness.Summary(execAgain[h]))
		fmt.Printf("  %-13s TCP into the pod (64 MiB, echoed back): %s MB/s\n", h, floats(mbps[h]))
	}
	for _, h := range handlers[1:] {
		ratio := func(m map[string][]time.Duration) float64 {
			return float64(harness.Median(m[h])) / float64(harness.Median(m["runc"]))
		}
		fmt.Printf("  %s/runc: start %.1fx, exec %.1fx first / %.1fx again, TCP %.2fx\n",
			h, ratio(start), ratio(execFirst), ratio(execAgain), median(mbps[h])/median(mbps["runc"]))
	}
	printBreakdown(ctd.Log(), harness.Median(start["runc"]))
}

// throughput sends size bytes to addr from inside the namespace and reads
// them back (the server echoes), returning MB/s each way.
func throughput(nsName, addr string, size int) (float64, error) {
	errc := make(chan error, 1)
	var mb float64
	go func() {
		runtime.LockOSThread()
		// The thread stays in the namespace and ends with the goroutine.
		ns, err := netns.GetFromPath(filepath.Join("/var/run/netns", nsName))
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		var conn net.Conn
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			if conn, err = net.DialTimeout("tcp", addr, 5*time.Second); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			errc <- err
			return
		}
		defer conn.Close()
		t0 := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := io.CopyN(io.Discard, conn, int64(size))
			done <- err
		}()
		buf := make([]byte, 256<<10)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := conn.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		if err := <-done; err != nil {
			errc <- err
			return
		}
		mb = float64(size) / 1e6 / time.Since(t0).Seconds()
		errc <- nil
	}()
	return mb, <-errc
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func floats(v []float64) string {
	var parts []string
	for _, f := range v {
		parts = append(parts, fmt.Sprintf("%.1f", f))
	}
	return fmt.Sprintf("median %.1f (%s)", median(v), strings.Join(parts, ", "))
}
