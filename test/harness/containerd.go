package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Containerd is a private containerd for one test: its own config, root,
// state and socket, running inside a network namespace the test made, with
// podvm's shim on its PATH.
type Containerd struct {
	Dir     string // everything of this containerd lives below
	Address string
	NetNS   string // the network namespace's name under /var/run/netns
	Env     []string

	cmd  *exec.Cmd
	done chan struct{}
}

// ShimBinary is the shim under test: $PODVM_SHIM, else bin/ of the tree.
func ShimBinary() string {
	if p := os.Getenv("PODVM_SHIM"); p != "" {
		return p
	}
	return filepath.Join(RepoRoot(), "bin", "containerd-shim-podvm-v2")
}

// StartContainerd starts a private containerd and registers its teardown.
// extraConfig is appended to its config.toml.
func StartContainerd(t testing.TB, extraConfig string) *Containerd {
	t.Helper()
	NeedRoot(t)
	for _, bin := range []string{"containerd", "ctr", "runc", "ip", "nsenter"} {
		_, err := exec.LookPath(bin)
		Need(t, err == nil, bin+" is missing (make deps)")
	}
	shimBin := ShimBinary()
	_, err := os.Stat(shimBin)
	Need(t, err == nil, shimBin+" is missing (make build)")
	kernel, initramfs := Assets()

	dir, err := os.MkdirTemp("", "podvm-ctd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "containerd.sock"), NetNS: "podvm-test-" + filepath.Base(dir)[len("podvm-ctd-"):], done: make(chan struct{})}
	t.Cleanup(func() { c.stop(t) })

	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// containerd finds io.containerd.podvm.v2 as containerd-shim-podvm-v2
	// in its PATH (and caches the path for its lifetime).
	if err := os.Symlink(shimBin, filepath.Join(binDir, "containerd-shim-podvm-v2")); err != nil {
		t.Fatal(err)
	}
	podvmConfig := filepath.Join(dir, "podvm.toml")
	cfg := fmt.Sprintf("state_dir = %q\n[hypervisor]\nkernel = %q\ninitramfs = %q\n", filepath.Join(dir, "podvm"), kernel, initramfs)
	if err := os.WriteFile(podvmConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
%s
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = "debug"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), extraConfig, c.Address, c.Address+".ttrpc")
	if extraConfig == "" {
		config = strings.Replace(config, "\n\n[grpc]", "\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]", 1)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "add", c.NetNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "-n", c.NetNS, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// nsenter, not `ip netns exec`: the latter remounts /sys and runc then
	// finds no cgroups.
	c.cmd = exec.Command("nsenter", "--net=/var/run/netns/"+c.NetNS, "containerd", "--config", filepath.Join(dir, "config.toml"))
	c.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "PODVM_CONFIG="+podvmConfig)
	c.cmd.Env = c.Env
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, _, err := c.Ctr(context.Background(), "version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up; log:\n%s", c.Log())
		}
		select {
		case <-c.done:
			t.Fatalf("containerd exited; log:\n%s", c.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return c
}

// Log is containerd's log so far, shims' included.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	return string(b)
}

// Ctr runs ctr against this containerd.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	return c.CtrStdin(ctx, nil, args...)
}

// CtrStdin runs ctr with stdin.
func (c *Containerd) CtrStdin(ctx context.Context, stdin []byte, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.Address}, args...)...)
	cmd.Env = c.Env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// ImportBusybox imports the local busybox image.
func (c *Containerd) ImportBusybox(t testing.TB) {
	t.Helper()
	tarball := filepath.Join(c.Dir, "busybox.tar")
	if err := WriteBusyboxImage(tarball, BusyboxImage); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := c.Ctr(context.Background(), "image", "import", tarball); err != nil {
		t.Fatalf("ctr image import: %v: %s", err, errOut)
	}
}

// stop ends containerd and every shim and VM it left, then removes the
// namespace and the directory.
func (c *Containerd) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c.cmd != nil && c.cmd.Process != nil {
		// Tasks first, so that shims tear their VMs down properly.
		if out, _, err := c.Ctr(ctx, "task", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				c.Ctr(ctx, "task", "kill", "-s", "KILL", id)
				c.Ctr(ctx, "task", "delete", "-f", id)
			}
		}
		if out, _, err := c.Ctr(ctx, "container", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				c.Ctr(ctx, "container", "delete", id)
			}
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	_ = exec.Command("ip", "netns", "del", c.NetNS).Run()
	if t.Failed() {
		t.Logf("containerd log:\n%s", tailLines(c.Log(), 80))
	}
	// A task deleted properly leaves no mount behind; anything still
	// mounted below the directory is a leak (then cleaned up).
	for _, m := range MountsUnder(c.Dir) {
		t.Errorf("leak: mount left at %s", m)
	}
	UnmountUnder(c.Dir)
	if err := os.RemoveAll(c.Dir); err != nil {
		t.Errorf("remove %s: %v", c.Dir, err)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
