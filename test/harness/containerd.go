package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
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
	CNIDir  string // CRI: the CNI configuration and IP allocations

	cmd  *exec.Cmd
	done chan struct{}
}

// ShimBinary is the shim under test: $PODVM_SHIM, else the one beside the
// running program (bin/ for the demo), else bin/ of the tree.
func ShimBinary() string {
	if p := os.Getenv("PODVM_SHIM"); p != "" {
		return p
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "containerd-shim-podvm-v2")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(RepoRoot(), "bin", "containerd-shim-podvm-v2")
}

// StartContainerd starts a private containerd and registers its teardown,
// which fails the test if anything was left mounted. extraConfig is
// appended to its config.toml.
func StartContainerd(t testing.TB, extraConfig string) *Containerd {
	t.Helper()
	NeedRoot(t)
	for _, bin := range []string{ContainerdBin(), CtrBin(), "runc", "ip", "nsenter"} {
		_, err := exec.LookPath(bin)
		Need(t, err == nil, bin+" is missing (make deps)")
	}
	_, err := os.Stat(ShimBinary())
	Need(t, err == nil, ShimBinary()+" is missing (make build)")
	c, err := NewContainerd(extraConfig)
	if c != nil {
		t.Cleanup(func() {
			for _, leak := range c.Stop() {
				t.Errorf("leak: %s", leak)
			}
			if t.Failed() {
				t.Logf("containerd log:\n%s", TailLines(c.Log(), 80))
			}
			c.Remove()
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewContainerd starts a private containerd. On error, a non-nil result
// still needs Stop and Remove.
func NewContainerd(extraConfig string) (*Containerd, error) {
	kernel, initramfs := Assets()
	dir, err := os.MkdirTemp("", "podvm-ctd-")
	if err != nil {
		return nil, err
	}
	c := &Containerd{Dir: dir, Address: filepath.Join(dir, "containerd.sock"), NetNS: "podvm-test-" + filepath.Base(dir)[len("podvm-ctd-"):]}
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return c, err
	}
	// containerd finds io.containerd.podvm.v2 as containerd-shim-podvm-v2
	// in its PATH (and caches the path for its lifetime).
	if err := os.Symlink(ShimBinary(), filepath.Join(binDir, "containerd-shim-podvm-v2")); err != nil {
		return c, err
	}
	podvmConfig := filepath.Join(dir, "podvm.toml")
	if err := os.MkdirAll(filepath.Dir(TemplateDir()), 0o700); err != nil {
		return c, err
	}
	if err := shareHostFacts(filepath.Join(dir, "podvm"), sharedStateDir(), false); err != nil {
		return c, err
	}
	cfg := fmt.Sprintf("state_dir = %q\n[hypervisor]\nkernel = %q\ninitramfs = %q\n[template]\ndir = %q\n",
		filepath.Join(dir, "podvm"), kernel, initramfs, TemplateDir())
	if err := os.WriteFile(podvmConfig, []byte(cfg), 0o644); err != nil {
		return c, err
	}
	version, disabled := 2, `["io.containerd.grpc.v1.cri"]`
	if Containerd2() {
		// The 2.x runc shim beside containerd 2.x.
		if err := os.Symlink(filepath.Join(containerd2Dir(), "containerd-shim-runc-v2"), filepath.Join(binDir, "containerd-shim-runc-v2")); err != nil {
			return c, err
		}
		version, disabled = 3, `["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim"]`
	}
	config := fmt.Sprintf(`version = %d
root = %q
state = %q
%s
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = %q
`, version, filepath.Join(dir, "root"), filepath.Join(dir, "state"), extraConfig, c.Address, c.Address+".ttrpc", logLevel())
	if extraConfig == "" {
		config = strings.Replace(config, "\n\n[grpc]", "\ndisabled_plugins = "+disabled+"\n[grpc]", 1)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		return c, err
	}
	if out, err := exec.Command("ip", "netns", "add", c.NetNS).CombinedOutput(); err != nil {
		return c, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "-n", c.NetNS, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return c, fmt.Errorf("lo up: %v: %s", err, out)
	}
	c.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "PODVM_CONFIG="+podvmConfig)
	return c, c.start()
}

// start runs containerd (again) with the directory's configuration and
// waits until it answers.
func (c *Containerd) start() error {
	logf, err := os.OpenFile(filepath.Join(c.Dir, "containerd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// nsenter, not `ip netns exec`: the latter remounts /sys and runc then
	// finds no cgroups.
	c.cmd = exec.Command("nsenter", "--net=/var/run/netns/"+c.NetNS, ContainerdBin(), "--config", filepath.Join(c.Dir, "config.toml"))
	c.cmd.Env = c.Env
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		c.cmd = nil
		return err
	}
	done := make(chan struct{})
	c.done = done
	cmd := c.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, _, err := c.Ctr(context.Background(), "version"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not come up; log:\n%s", c.Log())
		}
		select {
		case <-done:
			return fmt.Errorf("containerd exited; log:\n%s", c.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart kills containerd, as a crash would, and starts it again on the
// same state: running shims and their VMs must carry on.
func (c *Containerd) Restart() error {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return c.start()
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
	cmd := exec.CommandContext(ctx, CtrBin(), append([]string{"--address", c.Address}, args...)...)
	cmd.Env = c.Env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), withoutBanners(errb.String()), err
}

// CtrTo runs ctr with its stdout going to w.
func (c *Containerd) CtrTo(ctx context.Context, w io.Writer, args ...string) (stderr string, err error) {
	cmd := exec.CommandContext(ctx, CtrBin(), append([]string{"--address", c.Address}, args...)...)
	cmd.Env = c.Env
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &errb
	err = cmd.Run()
	return withoutBanners(errb.String()), err
}

// withoutBanners drops what ctr 2.x says on every call on a cgroup v1
// host, so that a command's own stderr compares equal across lines.
func withoutBanners(stderr string) string {
	var keep []string
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.Contains(l, `msg="DEPRECATION: The support for cgroup v1 is deprecated`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// ImportBusybox imports the local busybox image.
func (c *Containerd) ImportBusybox(t testing.TB) {
	t.Helper()
	if err := c.Import(); err != nil {
		t.Fatal(err)
	}
}

// Import imports the local busybox image (and, for CRI, the pause image
// into CRI's k8s.io namespace too).
func (c *Containerd) Import() error {
	images := []struct {
		name string
		cmd  []string
	}{{BusyboxImage, []string{"sh"}}, {PauseImage, []string{"sleep", "2147483647"}}}
	for i, img := range images {
		tarball := filepath.Join(c.Dir, fmt.Sprintf("image%d.tar", i))
		if err := WriteImage(tarball, img.name, img.cmd); err != nil {
			return err
		}
		for _, ns := range []string{"default", "k8s.io"} {
			if _, errOut, err := c.Ctr(context.Background(), "-n", ns, "image", "import", tarball); err != nil {
				return fmt.Errorf("ctr image import: %v: %s", err, errOut)
			}
		}
	}
	return nil
}

// Stop ends containerd after deleting its tasks (so shims tear their VMs
// down properly) and removes the network namespace. It returns what was
// left mounted below the directory, which it then unmounts.
func (c *Containerd) Stop() (leaks []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c.cmd != nil && c.cmd.Process != nil {
		if c.CNIDir != "" {
			// Through CRI, so that it releases the pods' namespaces and
			// addresses.
			c.Crictl(ctx, "rmp", "--all", "--force")
		}
		for _, ns := range []string{"default", "k8s.io"} {
			if out, _, err := c.Ctr(ctx, "-n", ns, "task", "ls", "-q"); err == nil {
				for _, id := range strings.Fields(out) {
					c.Ctr(ctx, "-n", ns, "task", "kill", "-s", "KILL", id)
					c.Ctr(ctx, "-n", ns, "task", "delete", "-f", id)
				}
			}
			if out, _, err := c.Ctr(ctx, "-n", ns, "container", "ls", "-q"); err == nil {
				for _, id := range strings.Fields(out) {
					c.Ctr(ctx, "-n", ns, "container", "delete", id)
				}
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
	for _, m := range MountsUnder(c.Dir) {
		leaks = append(leaks, "mount left at "+m)
	}
	UnmountUnder(c.Dir)
	return leaks
}

// Remove deletes the directory (after Stop), and a CNI directory made by
// NewCRI.
func (c *Containerd) Remove() error {
	// What this containerd's shims measured or probed (anew, when the
	// shared answer was for other guest assets) is what later ones reuse.
	_ = shareHostFacts(sharedStateDir(), filepath.Join(c.Dir, "podvm"), true)
	if strings.HasPrefix(filepath.Base(c.CNIDir), "podvm-cni-") {
		os.RemoveAll(c.CNIDir)
	}
	return os.RemoveAll(c.Dir)
}

// TailLines is the last n lines of s (a log, for a failure message).
func TailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logLevel is containerd's log level, which the shims and the guest agent
// follow: debug unless $PODVM_CONTAINERD_LOG says otherwise (the
// benchmarks measure what a node runs, at info).
func logLevel() string {
	if l := os.Getenv("PODVM_CONTAINERD_LOG"); l != "" {
		return l
	}
	return "debug"
}

// hostFacts are the files in a state directory that describe the host, not
// a pod: the accelerator probe's answer and the measured TSC rate. Every
// test's containerd has a state directory of its own (its pods' leftovers
// are checked there), but a node has one: without sharing these, each test
// would probe KVM again (up to 10 s) and measure a slightly different TSC
// rate, which is on the guest's command line, so each test would build a
// VM template of its own, and a test could not know whether its VM was the
// one that built the template.
var hostFacts = []string{"accel.json", "tsc"}

// shareHostFacts copies the host facts from one state directory to another,
// replacing those already there only if replace is set.
func shareHostFacts(to, from string, replace bool) error {
	for _, name := range hostFacts {
		if _, err := os.Stat(filepath.Join(to, name)); err == nil && !replace {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			continue
		}
		if err := os.MkdirAll(to, 0o755); err != nil {
			return err
		}
		tmp := filepath.Join(to, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(to, name)); err != nil {
			return err
		}
	}
	return nil
}
