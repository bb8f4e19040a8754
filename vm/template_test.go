package vm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/test/harness"
	"github.com/podvm/podvm/vmconfig"
)

// runScript runs sh -c script in a busybox container of g and returns its
// stdout.
func runScript(ctx context.Context, t *testing.T, g *Guest, share, id, script string) string {
	t.Helper()
	rootfs := filepath.Join(share, id, "rootfs")
	if err := harness.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	spec := specconv.Example()
	spec.Root.Path = "/run/podvm/shared/" + id + "/rootfs"
	spec.Root.Readonly = false
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sh", "-c", script}
	b, _ := json.Marshal(spec)
	if _, err := g.CreateContainer(ctx, Container{ID: id, Spec: b, Storages: []Storage{shareStorage}, Streams: Streams{Stdout: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.StartProcess(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	out := readAll(ctx, t, g, id, "", Stdout)
	if exit, err := g.Wait(ctx, id, ""); err != nil || exit.Status != 0 {
		t.Fatalf("%s: exit %d, %v", script, exit.Status, err)
	}
	if err := g.DeleteContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	return out
}

// templateConfig is a test VM's configuration with templates of its own,
// and the test's leaks watched.
func templateConfig(t *testing.T) *vmconfig.Config {
	cfg := harness.VMConfig(t)
	cfg.Template.Dir = filepath.Join(t.TempDir(), "templates")
	harness.WatchLeaks(t)
	return cfg
}

// TestTemplate: VMs restored from one template are each their own. The
// attacker's view: a pod that knows what another pod from the same template
// drew from its CRNG, or reads the template's clock, could predict keys and
// tokens; so two restored VMs must draw different random numbers and tell
// the host's time. A template whose state QEMU refuses costs a cold boot,
// not a failed pod, and is rebuilt.
func TestTemplate(t *testing.T) {
	cfg := templateConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := func(name string) (*Guest, string) {
		share := t.TempDir()
		g, err := Boot(ctx, cfg, Options{ID: "podvm-test-" + name, Shares: []hypervisor.Share{{Tag: "podvm", Path: share}}, Console: func(string) {}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Shutdown(context.Background()) })
		t.Logf("%s: template %q, boot %v (%+v)", name, g.Template, g.BootTime, g.Timings)
		return g, share
	}
	const script = "cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1; date +%s"
	var draws []string
	for _, name := range []string{"a", "b"} {
		g, share := start(name)
		if g.Template == "" {
			t.Fatalf("VM %s booted; want it restored from a template", name)
		}
		out := runScript(ctx, t, g, share, "c1", script)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 {
			t.Fatalf("%s: output %q", name, out)
		}
		draws = append(draws, lines[0], lines[1])
		guestTime, err := strconv.ParseInt(strings.TrimSpace(lines[2]), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Now().Unix() - guestTime; d < -2 || d > 5 {
			t.Errorf("%s: guest clock is %d s off the host's", name, d)
		}
		g.Shutdown(ctx)
	}
	if draws[0] == draws[2] || draws[1] == draws[3] {
		t.Errorf("two VMs from one template drew the same random numbers: %q", draws)
	}

	ts, err := Templates(cfg)
	if err != nil || len(ts) != 1 {
		t.Fatalf("templates = %v, %v; want one", ts, err)
	}
	// A state that QEMU refuses: a cold boot, the template removed.
	if err := os.WriteFile(filepath.Join(ts[0].Dir, templateState), []byte("QEVM garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := start("bad-state")
	if g.Template != "" {
		t.Errorf("VM restored from a corrupt template")
	}
	g.Shutdown(ctx)
	if _, err := os.Stat(ts[0].Dir); err == nil {
		t.Errorf("the refused template %s is still there", ts[0].Dir)
	}
	g, _ = start("rebuilt")
	if g.Template == "" {
		t.Errorf("no template rebuilt after the bad one")
	}
	g.Shutdown(ctx)

	// A new initramfs means a new template; template.max = 1 keeps only it.
	initramfs := filepath.Join(t.TempDir(), "initramfs.cpio")
	b, err := os.ReadFile(cfg.Hypervisor.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initramfs, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Hypervisor.Initramfs = initramfs
	cfg.Template.Max = 1
	g, _ = start("new-initramfs")
	if g.Template == "" || g.Template == filepath.Base(ts[0].Dir) {
		t.Errorf("template %q after the initramfs changed; want a new one", g.Template)
	}
	g.Shutdown(ctx)
	if ts, err := Templates(cfg); err != nil || len(ts) != 1 || filepath.Base(ts[0].Dir) != g.Template {
		t.Errorf("templates = %v, %v; want only %s", ts, err, g.Template)
	}
}

// TestTemplateDisabled: template.enabled = false boots every VM.
func TestTemplateDisabled(t *testing.T) {
	cfg := harness.VMConfig(t)
	cfg.Template.Dir = filepath.Join(t.TempDir(), "templates")
	cfg.Template = vmconfig.Template{Enabled: false, Max: 1}
	g := boot(t, cfg)
	if g.Template != "" {
		t.Errorf("restored from %s with templates disabled", g.Template)
	}
	if ts, _ := Templates(cfg); len(ts) != 0 {
		t.Errorf("templates built while disabled: %v", ts)
	}
}

// TestTemplateDirRefused plays another user of the node, who made the
// template directory first (in /dev/shm anyone can): whoever writes a
// template runs code in every pod's VM, so such a directory is refused.
func TestTemplateDirRefused(t *testing.T) {
	base := t.TempDir()
	own := filepath.Join(base, "own")
	if _, err := templateRoot(own); err != nil {
		t.Fatalf("a fresh directory: %v", err)
	}
	writable := filepath.Join(base, "writable")
	os.Mkdir(writable, 0o700)
	os.Chmod(writable, 0o777)
	other := filepath.Join(base, "other")
	os.Mkdir(other, 0o700)
	if err := os.Chown(other, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(own, link); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{writable, other, link} {
		if _, err := templateRoot(dir); err == nil || !strings.Contains(err.Error(), "template.dir") {
			t.Errorf("%s: %v; want it refused, naming template.dir", filepath.Base(dir), err)
		}
	}
}

// TestTemplateConcurrent: pods that start together on a node without a
// template build it once; every one of them is restored from it.
func TestTemplateConcurrent(t *testing.T) {
	cfg := templateConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		g   *Guest
		err error
	}
	results := make(chan result, 3)
	for i := 0; i < 3; i++ {
		go func(i int) {
			g, err := Boot(ctx, cfg, Options{ID: "podvm-test-together-" + strconv.Itoa(i), Console: func(string) {}})
			results <- result{g, err}
		}(i)
	}
	var names []string
	for i := 0; i < 3; i++ {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
			continue
		}
		names = append(names, r.g.Template)
		r.g.Shutdown(context.Background())
	}
	ts, err := Templates(cfg)
	if err != nil || len(ts) != 1 {
		t.Fatalf("templates = %v, %v; want one", ts, err)
	}
	for _, n := range names {
		if n != filepath.Base(ts[0].Dir) {
			t.Errorf("VMs came from %q; want all from %s", names, filepath.Base(ts[0].Dir))
			break
		}
	}
}
