//go:build soak

// Package soak runs CRI pods through their life in a loop, with QEMU or
// the shim killed at random, and counts what fails and what is left:
// `make soak N=200`.
package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvm/podvm/test/harness"
)

func TestSoak(t *testing.T) {
	harness.NeedRoot(t)
	n, _ := strconv.Atoi(os.Getenv("PODVM_SOAK_N"))
	if n <= 0 {
		n = 20
	}
	before := harness.TakeCensus()
	ctd, err := harness.NewCRI()
	if ctd != nil {
		defer func() {
			ctd.Stop()
			ctd.Remove()
		}()
	}
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crictl := func(args ...string) (string, error) {
		out, errOut, err := ctd.Crictl(context.Background(), args...)
		if err != nil {
			return out, fmt.Errorf("crictl %s: %v: %s", args[0], err, strings.TrimSpace(errOut))
		}
		return strings.TrimSpace(out), nil
	}
	write := func(name string, v any) string {
		p, err := harness.WriteJSON(dir, name, v)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	container := write("container.json", map[string]any{
		"metadata": map[string]any{"name": "sleeper"},
		"image":    map[string]any{"image": harness.BusyboxImage},
		"command":  []string{"sleep", "100000"},
		"log_path": "sleeper.log",
		"linux":    map[string]any{},
	})
	faults := map[string]int{}
	var failures []string
	start := time.Now()
	for i := 0; i < n; i++ {
		pod := write(fmt.Sprintf("pod-%d.json", i), map[string]any{
			"metadata":      map[string]any{"name": fmt.Sprintf("soak-%d", i), "namespace": "default", "uid": fmt.Sprintf("soak-%d", i)},
			"log_directory": dir,
			"linux":         map[string]any{},
		})
		fault := []string{"none", "qemu", "shim"}[rand.IntN(3)]
		faults[fault]++
		fail := func(format string, args ...any) {
			msg := fmt.Sprintf("cycle %d (%s): %s", i, fault, fmt.Sprintf(format, args...))
			failures = append(failures, msg)
			t.Log(msg)
		}
		id, err := crictl("runp", "--runtime", "podvm", pod)
		if err != nil {
			fail("%v", err)
			continue
		}
		cid, err := crictl("create", id, container, pod)
		if err == nil {
			_, err = crictl("start", cid)
		}
		if err != nil {
			fail("%v", err)
		}
		// The fault, before or after an exec.
		killAt := rand.IntN(2)
		kill := func() {
			if fault == "none" {
				return
			}
			census := harness.TakeCensus()
			list, needle := census.QEMU, " -name "+id+" "
			if fault == "shim" {
				list, needle = census.Shims, " -id "+id+" "
			}
			for _, e := range list {
				if strings.Contains(e+" ", needle) {
					var pid int
					fmt.Sscan(e, &pid)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if killAt == 0 {
			kill()
		}
		if err == nil && (fault == "none" || killAt == 1) {
			if out, err := crictl("exec", "-s", cid, "echo", "ok"); err != nil || out != "ok" {
				fail("exec: %q %v", out, err)
			}
		}
		if killAt == 1 {
			kill()
		}
		removed := false
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
			if _, err := crictl("stopp", id); err != nil {
				continue
			}
			if _, err := crictl("rmp", id); err == nil {
				removed = true
				break
			}
		}
		if !removed {
			fail("pod %s not removable in 90 s", id)
		}
	}
	took := time.Since(start)
	stopLeaks := ctd.Stop()
	ctd.Remove()
	leaks := append(stopLeaks, before.Leaks(harness.TakeCensus())...)
	ipam, _ := filepath.Glob(filepath.Join(ctd.CNIDir, "ipam", "*", "10.*"))
	fmt.Printf("soak: %d cycles in %v (%v a cycle); faults %v; %d failures; leftovers: %d (%v), IP allocations: %d\n",
		n, took.Round(time.Second), (took / time.Duration(n)).Round(time.Millisecond), faults, len(failures), len(leaks), leaks, len(ipam))
	for _, f := range failures {
		fmt.Println("  failure:", f)
	}
	if len(failures) > 0 || len(leaks) > 0 || len(ipam) > 0 {
		t.Fail()
	}
}
