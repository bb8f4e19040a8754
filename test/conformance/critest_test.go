//go:build conformance

// Package conformance runs cri-tools' conformance suite, critest, against
// a private containerd with the runc handler and podvm's side by side, and
// fails when podvm fails a spec runc passes, unless the spec cannot hold
// for a pod in a VM (byDesign, each with its reason): `make conformance`.
// Its images are built here and served from a registry inside the test's
// network namespace; nothing comes from outside.
package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/test/harness"
)

// byDesign are the specs runc passes that a VM pod cannot, and why.
var byDesign = map[string]string{
	"[k8s.io] Security Context NamespaceOption runtime should support HostNetwork is true":                                                                                "a pod in a VM cannot share the node's network namespace: podvm refuses host-network pods at RunPodSandbox (use a runc RuntimeClass)",
	"[k8s.io] Streaming runtime should support streaming interfaces runtime should support portforward in host network":                                                   "a host-network pod is refused (above)",
	"[k8s.io] Container Mount Propagation runtime should support mount propagation mount with 'rshared' should support propagation from host to container and vice versa": "mounts made inside a VM cannot reach the host: a Bidirectional bind is refused naming the mount (HostToContainer works)",
}

// critest is cri-tools' conformance binary, as `make deps` builds it.
func critest() string { return filepath.Join(harness.RepoRoot(), "build", "tools", "critest") }

// specResult is one spec of a ginkgo JSON report.
type specResult struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
	Failure                 struct {
		Message string
	}
}

func (s specResult) name() string {
	return strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
}

// runCritest runs the whole suite with one handler and returns each
// spec's state.
func runCritest(t *testing.T, ctd *harness.Containerd, handler, dir string) map[string]specResult {
	t.Helper()
	report := filepath.Join(dir, handler+".json")
	endpoint := "unix://" + ctd.Address
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	// In containerd's network namespace: critest reaches pods by their
	// IPs and the streaming server on its loopback.
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/var/run/netns/"+ctd.NetNS, critest(),
		"--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--runtime-handler", handler,
		"--ginkgo.json-report", report, "--ginkgo.no-color", "--ginkgo.timeout", "40m")
	cmd.Env = ctd.Env
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("critest --runtime-handler %s: %v in %v", handler, err, time.Since(start).Round(time.Second))
	if err := os.WriteFile(filepath.Join(dir, handler+".log"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	cleanCritestDirs(t, start)
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("critest with %s wrote no report (%v): %s", handler, rerr, harness.TailLines(string(out), 40))
	}
	var suites []struct{ SpecReports []specResult }
	if err := json.Unmarshal(b, &suites); err != nil {
		t.Fatal(err)
	}
	results := map[string]specResult{}
	for _, s := range suites {
		for _, r := range s.SpecReports {
			if r.LeafNodeType == "It" {
				results[r.name()] = r
			}
		}
	}
	return results
}

// critestDir is a host directory critest's mount specs make (MkdirTemp
// "test"+pod ID); a spec that fails between its mounts and its cleanup
// leaves it mounted.
var critestDir = regexp.MustCompile(`^/tmp/test[0-9a-f]{64}[0-9]+$`)

// cleanCritestDirs unmounts and removes what failed critest specs left:
// their host directories, and the pod log directories (podLogTest*) made
// since start.
func cleanCritestDirs(t *testing.T, start time.Time) {
	logs, _ := filepath.Glob("/tmp/podLogTest*")
	for _, d := range logs {
		if st, err := os.Lstat(d); err == nil && st.IsDir() && !st.ModTime().Before(start.Add(-time.Second)) {
			_ = os.RemoveAll(d)
		}
	}
	dirs, _ := filepath.Glob("/tmp/test*")
	for _, d := range dirs {
		if !critestDir.MatchString(d) {
			continue
		}
		infos, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(d))
		for i := len(infos) - 1; i >= 0; i-- {
			_ = unix.Unmount(infos[i].Mountpoint, unix.MNT_DETACH)
		}
		if left, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(d)); len(left) > 0 {
			t.Errorf("critest left %s with mounts that do not unmount: %d", d, len(left))
			continue
		}
		t.Logf("critest left %s (%d mounts): removed", d, len(infos))
		_ = os.RemoveAll(d)
	}
}

// TestCritest: every critest spec runc passes passes with podvm (and, on
// containerd 2.x, with its Sandbox API handler), but those byDesign lists.
func TestCritest(t *testing.T) {
	harness.NeedRoot(t)
	_, err := os.Stat(critest())
	harness.Need(t, err == nil, "critest is missing (make deps builds it into build/tools)")
	harness.WatchLeaks(t)
	ctd := harness.StartCRI(t, registryConfig(t))
	startRegistry(t, "/var/run/netns/"+ctd.NetNS)
	dir := t.TempDir()
	handlers := []string{"runc", "podvm"}
	if harness.Containerd2() {
		handlers = append(handlers, "podvm-sandbox")
	}
	results := map[string]map[string]specResult{}
	for _, h := range handlers {
		results[h] = runCritest(t, ctd, h, dir)
	}
	var summary strings.Builder
	for _, h := range handlers {
		counts := map[string]int{}
		for _, r := range results[h] {
			counts[r.State]++
		}
		fmt.Fprintf(&summary, "%-14s passed %d, failed %d, skipped %d\n", h, counts["passed"], counts["failed"], counts["skipped"])
	}
	for _, h := range handlers[1:] {
		var names []string
		for n, r := range results["runc"] {
			if r.State == "passed" && results[h][n].State != "passed" {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		fmt.Fprintf(&summary, "runc passes, %s does not (%d):\n", h, len(names))
		for _, n := range names {
			why, ok := byDesign[n]
			if !ok {
				why = "UNEXPECTED: " + firstLine(results[h][n].Failure.Message)
				t.Errorf("%s fails %q, which runc passes: %s", h, n, results[h][n].Failure.Message)
			}
			fmt.Fprintf(&summary, "  %s\n    %s\n", n, why)
		}
	}
	t.Logf("critest %s on containerd %s:\n%s", "v1.37.0", containerdLine(), summary.String())
	if out := os.Getenv("PODVM_CONFORMANCE_REPORT"); out != "" {
		_ = os.WriteFile(out, []byte(summary.String()), 0o644)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func containerdLine() string {
	if harness.Containerd2() {
		return "2.x"
	}
	return "1.6"
}
