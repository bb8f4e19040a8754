package bench

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// netBytes is what each TCP sample moves.
const netBytes = 64 << 20

// BenchmarkNetwork measures TCP for each of podvm's network models (the
// podvm handler's tcfilter, podvm-macvtap, podvm-bridge) beside runc, in one
// containerd with the CNI bridge: into a pod from the test's namespace
// (64 MiB echoed back, as in BenchmarkCRI) and from one pod to another of
// the same handler (64 MiB one way, timed around `crictl exec -s` less an
// exec of `true`).
func BenchmarkNetwork(b *testing.B) {
	harness.VMConfig(b)
	ctd := harness.StartCRI(b)
	dir := b.TempDir()
	crictl := mustCrictl(b, ctd)
	handlers := []string{"runc", "podvm", "podvm-macvtap", "podvm-bridge"}
	n := harness.Samples(3)
	into, between := map[string][]float64{}, map[string][]float64{}
	for _, h := range handlers {
		// An echo server on 5001, a sink that answers with the byte count
		// on 5002.
		server, _ := startPod(crictl, dir, h, h+"-server", "sh", "-c", "nc -ll -p 5001 -e cat & exec nc -ll -p 5002 -e wc -c")
		ip := podIP(crictl, server)
		client, c := startPod(crictl, dir, h, h+"-client", "sleep", "100000")
		for i := 0; i < n; i++ {
			mb, err := throughput(ctd.NetNS, ip+":5001", netBytes)
			if err != nil {
				b.Fatalf("%s: TCP into the pod: %v", h, err)
			}
			into[h] = append(into[h], mb)
		}
		var base []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			crictl("exec", "-s", c, "true")
			base = append(base, time.Since(t0))
		}
		send := fmt.Sprintf("dd if=/dev/zero bs=64k count=%d 2>/dev/null | nc %s 5002", netBytes>>16, ip)
		for i := 0; i < n; i++ {
			t0 := time.Now()
			out := crictl("exec", "-s", c, "sh", "-c", send)
			took := time.Since(t0) - harness.Median(base)
			if got, _ := strconv.Atoi(strings.TrimSpace(out)); got != netBytes {
				b.Fatalf("%s: pod to pod: the server got %q bytes, want %d", h, out, netBytes)
			}
			between[h] = append(between[h], float64(netBytes)/1e6/took.Seconds())
		}
		for _, pod := range []string{client, server} {
			crictl("stopp", pod)
			crictl("rmp", pod)
		}
	}
	fmt.Printf("TCP by network model, runc beside podvm (MB/s, %d samples each):\n", n)
	for _, h := range handlers {
		line := fmt.Sprintf("  %-14s into the pod (echoed) %s; pod to pod %s", h, floats(into[h]), floats(between[h]))
		if h != "runc" {
			line += fmt.Sprintf("; %.2fx / %.2fx runc", median(into[h])/median(into["runc"]), median(between[h])/median(between["runc"]))
		}
		fmt.Println(line)
	}
}

// startPod runs a pod of handler with one busybox container running cmd,
// and returns the pod's and the container's IDs.
func startPod(crictl func(...string) string, dir, handler, name string, cmd ...string) (pod, ctr string) {
	podCfg, _ := harness.WriteJSON(dir, name+"-pod.json", map[string]any{
		"metadata": map[string]any{"name": name, "namespace": "default", "uid": name}, "linux": map[string]any{}})
	ctrCfg, _ := harness.WriteJSON(dir, name+"-ctr.json", map[string]any{
		"metadata": map[string]any{"name": "main"}, "image": map[string]any{"image": harness.BusyboxImage},
		"command": cmd, "linux": map[string]any{}})
	pod = crictl("runp", "--runtime", handler, podCfg)
	ctr = crictl("create", pod, ctrCfg, podCfg)
	crictl("start", ctr)
	return pod, ctr
}

// podIP is the pod's address as CRI reports it.
func podIP(crictl func(...string) string, pod string) string {
	var st struct {
		Status struct {
			Network struct{ IP string } `json:"network"`
		} `json:"status"`
	}
	json.Unmarshal([]byte(crictl("inspectp", "-o", "json", pod)), &st)
	return st.Status.Network.IP
}
