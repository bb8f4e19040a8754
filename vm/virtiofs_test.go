package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/test/harness"
)

// TestGuestVirtioFS: a container whose rootfs reaches the guest over
// virtio-fs. The VM boots (no template), the guest's root is virtiofs, a
// file written in the container lands in the host's directory, a link the
// host left in the rootfs pointing outside it is resolved in the guest (the
// daemon never follows it on the host), and the daemon is gone with QEMU.
func TestGuestVirtioFS(t *testing.T) {
	for _, machine := range []string{"microvm", "q35"} {
		t.Run(machine, func(t *testing.T) { testGuestVirtioFS(t, machine) })
	}
}

func testGuestVirtioFS(t *testing.T, machine string) {
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	cfg.Hypervisor.SharedFS = hypervisor.FSVirtio
	cfg.Hypervisor.Machine = machine
	cfg.Hypervisor.MaxMemoryMiB = 2048
	share := t.TempDir()
	rootfs := filepath.Join(share, "c1", "rootfs")
	if err := harness.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	// A secret of the host's, outside the share, and a link to it inside.
	secret := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(secret, []byte("host only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	sockets := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-virtiofs-" + machine, SocketDir: sockets,
		Shares: []hypervisor.Share{{Tag: "podvm", Path: share}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	if g.Template != "" {
		t.Errorf("a virtio-fs VM was restored from template %s", g.Template)
	}
	daemon := harness.TakeCensus().VirtiofsdPid(share)
	if daemon == 0 {
		t.Fatalf("no virtiofsd serving %s", share)
	}
	checkDaemonSandbox(t, daemon, share)
	if entries, _ := os.ReadDir(sockets); len(entries) != 0 {
		t.Errorf("socket directory not empty after the start: %v", entries)
	}

	if machine == "q35" {
		// Hot-plugged RAM must be shared with virtiofsd too, or QEMU
		// cannot hand it the new memory table.
		if err := g.Grow(ctx, 1, cfg.Hypervisor.MemoryMiB+256); err != nil {
			t.Fatal(err)
		}
	}
	spec := specconv.Example()
	spec.Root.Path = "/run/podvm/shared/c1/rootfs"
	spec.Root.Readonly = false
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sh", "-c", `awk '$2 == "/" { print $3 }' /proc/mounts; echo written > /from-guest; cat /escape 2>&1; dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null; true`}
	b, _ := json.Marshal(spec)
	storage := Storage{Source: "podvm", Target: "/run/podvm/shared", Type: "virtiofs"}
	if _, err := g.CreateContainer(ctx, Container{ID: "c1", Spec: b, Storages: []Storage{storage}, Streams: Streams{Stdout: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.StartProcess(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	out := readAll(ctx, t, g, "c1", "", Stdout)
	if exit, err := g.Wait(ctx, "c1", ""); err != nil || exit.Status != 0 {
		t.Fatalf("wait = %d, %v", exit.Status, err)
	}
	lines := strings.SplitN(out, "\n", 2)
	if lines[0] != "virtiofs" {
		t.Errorf("the container's root is %q, want virtiofs (output %q)", lines[0], out)
	}
	if strings.Contains(out, "host only") {
		t.Errorf("the guest read a host file outside the share through a link: %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "from-guest")); err != nil || string(b) != "written\n" {
		t.Errorf("file written in the guest: %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(rootfs, "big")); err != nil || st.Size() != 64<<20 {
		t.Errorf("64 MiB written in the guest: %v", err)
	}
	if err := g.DeleteContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(daemon))); err == nil {
		t.Errorf("virtiofsd %d still there after the VM stopped", daemon)
	}
}

// checkDaemonSandbox: the daemon a hostile guest talks to is confined: its
// root is the share, a seccomp filter is on, and of root's capabilities it
// keeps none that could reach beyond files (no CAP_SYS_ADMIN, no
// CAP_SYS_PTRACE, no CAP_NET_ADMIN...).
func checkDaemonSandbox(t *testing.T, pid int, share string) {
	t.Helper()
	if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err != nil || root != share {
		t.Errorf("virtiofsd's root is %q (%v), want the share %s", root, err, share)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields["Seccomp"] != "2" {
		t.Errorf("virtiofsd runs without a seccomp filter (Seccomp: %s)", fields["Seccomp"])
	}
	eff, err := strconv.ParseUint(fields["CapEff"], 16, 64)
	if err != nil {
		t.Fatalf("CapEff %q: %v", fields["CapEff"], err)
	}
	// chown, dac_override, fowner, fsetid, setgid, setuid, mknod, setfcap:
	// what serving files as their owners takes.
	const allowed = 1<<0 | 1<<1 | 1<<3 | 1<<4 | 1<<6 | 1<<7 | 1<<27 | 1<<31
	if extra := eff &^ allowed; extra != 0 {
		t.Errorf("virtiofsd keeps capabilities beyond file ownership: CapEff %016x (extra %016x)", eff, extra)
	}
}

// TestVirtioFSDaemonDies: a VM whose virtio-fs daemon ends is stopped (its
// processes would hang on their files forever), and QEMU's exit error says
// why.
func TestVirtioFSDaemonDies(t *testing.T) {
	cfg := harness.VMConfig(t)
	harness.WatchLeaks(t)
	cfg.Hypervisor.SharedFS = hypervisor.FSVirtio
	share := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := Boot(ctx, cfg, Options{ID: "podvm-test-virtiofs-dies", SocketDir: t.TempDir(),
		Shares: []hypervisor.Share{{Tag: "podvm", Path: share}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	daemon := harness.TakeCensus().VirtiofsdPid(share)
	if daemon == 0 {
		t.Fatalf("no virtiofsd serving %s", share)
	}
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.VM.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the VM still runs 20 s after its virtio-fs daemon was killed")
	}
	if err := g.VM.Err(); err == nil || !strings.Contains(err.Error(), "virtiofsd") {
		t.Errorf("QEMU's exit error %v does not say the daemon ended", err)
	}
}
