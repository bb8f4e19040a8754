//go:build k8s

package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

// BenchmarkKubelet starts and deletes pods one after the other through the
// API server, runc's handler beside podvm's: the start as kubelet reports
// it (podStartSLOduration: API object created -> running containers seen
// by kubelet, from a creation time of one-second resolution), the start as
// the client sees it (create -> Ready) and the delete (request -> gone).
func BenchmarkKubelet(b *testing.B) {
	harness.NeedRoot(b)
	ctd := harness.StartCRI(b)
	n := StartNode(b, ctd)
	// The first podvm pod builds the VM template: outside the samples.
	n.apply(pod("warm", "podvm", container("main", sleeper)))
	n.waitReady("warm")
	n.deletePods("warm")

	// A container that exits on SIGTERM, so that the delete measures the
	// runtime's teardown, not the grace period.
	main := container("main", []string{"sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"})
	samples := harness.Samples(5)
	medians := map[string][3]time.Duration{}
	for _, handler := range []string{"", "podvm"} {
		var ready, del []time.Duration
		var names []string
		before, err := n.runtimeOperations()
		if err != nil {
			b.Fatal(err)
		}
		for i := range samples {
			name := fmt.Sprintf("bench-%s-%d", nameOf(handler), i)
			start := time.Now()
			n.apply(pod(name, handler, main))
			n.waitReadyFast(name)
			ready = append(ready, time.Since(start))
			start = time.Now()
			n.deletePods(name)
			del = append(del, time.Since(start))
			names = append(names, name)
		}
		kubelet, err := n.kubeletStartups(names)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("pods through kubelet, handler %s, %d pods one after the other:\n", nameOf(handler), samples)
		fmt.Printf("  start as kubelet reports it (podStartSLOduration): %s\n", harness.Summary(kubelet))
		fmt.Printf("  create -> Ready, as kubectl sees it:              %s\n", harness.Summary(ready))
		fmt.Printf("  delete -> gone, as kubectl sees it:               %s\n", harness.Summary(del))
		after, err := n.runtimeOperations()
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("  kubelet's CRI calls, mean:")
		for _, op := range []string{"run_podsandbox", "create_container", "start_container", "stop_container", "stop_podsandbox", "remove_podsandbox"} {
			if count := after[op].count - before[op].count; count > 0 {
				fmt.Printf(" %s %.0f ms,", op, 1000*(after[op].sum-before[op].sum)/count)
			}
		}
		fmt.Println()
		medians[nameOf(handler)] = [3]time.Duration{harness.Median(kubelet), harness.Median(ready), harness.Median(del)}
	}
	r, p := medians["runc"], medians["podvm"]
	fmt.Printf("podvm / runc (medians): kubelet's start %.1fx, create -> Ready %.1fx, delete %.1fx\n",
		ratio(p[0], r[0]), ratio(p[1], r[1]), ratio(p[2], r[2]))
}

func nameOf(handler string) string {
	if handler == "" {
		return "runc"
	}
	return handler
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// waitReadyFast is waitReady with kubectl's watch, so the time measured is
// not the poll's.
func (n *Node) waitReadyFast(name string) {
	n.t.Helper()
	if _, err := n.kubectlQuiet("wait", "--for=condition=Ready", "pod/"+name, "--timeout=3m"); err != nil {
		n.t.Fatal(err)
	}
}

// operation is one of kubelet's runtime operation histograms.
type operation struct{ sum, count float64 }

var operationLine = regexp.MustCompile(`^kubelet_runtime_operations_duration_seconds_(sum|count)\{operation_type="([a-z_]+)"\} ([0-9.e+-]+)$`)

// runtimeOperations reads kubelet's runtime operation durations (CRI
// calls, by operation) from its metrics, through the API server.
func (n *Node) runtimeOperations() (map[string]operation, error) {
	out, err := n.kubectlQuiet("get", "--raw", "/api/v1/nodes/"+nodeName+"/proxy/metrics")
	if err != nil {
		return nil, err
	}
	ops := map[string]operation{}
	for _, line := range strings.Split(out, "\n") {
		m := operationLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("kubelet metric %q: %v", line, err)
		}
		op := ops[m[2]]
		if m[1] == "sum" {
			op.sum = v
		} else {
			op.count = v
		}
		ops[m[2]] = op
	}
	if len(ops) == 0 {
		return nil, fmt.Errorf("kubelet's metrics have no runtime operation durations")
	}
	return ops, nil
}

var startupLine = regexp.MustCompile(`"Observed pod startup duration" pod="default/([^"]+)" podStartSLOduration=([0-9.]+)`)

// kubeletStartups are the start durations kubelet logged for the pods.
func (n *Node) kubeletStartups(names []string) ([]time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(n.dir, "kubelet.log"))
	if err != nil {
		return nil, err
	}
	logged := map[string]string{}
	for _, m := range startupLine.FindAllStringSubmatch(string(b), -1) {
		logged[m[1]] = m[2]
	}
	var out []time.Duration
	for _, name := range names {
		s, err := strconv.ParseFloat(logged[name], 64)
		if err != nil {
			return nil, fmt.Errorf("kubelet logged no startup duration for pod %s", name)
		}
		out = append(out, time.Duration(s*float64(time.Second)))
	}
	return out, nil
}
