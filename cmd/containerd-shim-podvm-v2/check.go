package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/install"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

// finding is one line of `check`: what was looked at, what was found, and
// for a failure the command that fixes it.
type finding struct {
	status string // ok, info, warn (not needed for ctr, needed for CRI), FAIL
	what   string
	detail string
	fix    string
}

// runCheck is `containerd-shim-podvm-v2 check`, podvm's answer to
// `kata-runtime check`: it exits non-zero when something podvm needs is
// missing and says how to get it. `check --config [FILE]` only validates
// the configuration and prints it as podvm would run with it.
func runCheck(args []string) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	onlyConfig := fs.Bool("config", false, "validate the configuration file and print the effective configuration")
	ctdConfig := fs.String("containerd-config", install.DefaultContainerdConfig, "containerd's configuration file, checked for podvm's runtime")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: containerd-shim-podvm-v2 check [--config] [--containerd-config FILE] [CONFIG]\n"+
			"CONFIG defaults to $PODVM_CONFIG, else %s.\n", vmconfig.DefaultPath)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return 2
	}
	configPath := fs.Arg(0)
	if *onlyConfig {
		return printConfig(os.Stdout, os.Stderr, configPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fds := check(ctx, configPath)
	fds = append(fds, containerdFindings(*ctdConfig)...)
	return report(os.Stdout, fds)
}

// loadConfig reads the named file, else the one podvm would read.
func loadConfig(configPath string) (*vmconfig.Config, string, error) {
	if configPath != "" {
		c, err := vmconfig.LoadFile(configPath)
		return c, configPath, err
	}
	path, _ := vmconfig.Path()
	c, err := vmconfig.Load()
	return c, path, err
}

// printConfig is `check --config`: the configuration after defaults, as
// TOML, or the error naming the bad key.
func printConfig(w, errw io.Writer, configPath string) int {
	cfg, path, err := loadConfig(configPath)
	if err != nil {
		fmt.Fprintf(errw, "FAIL  configuration: %v\n      fix: correct %s (every key is described in share/podvm/config.toml.example)\n", err, path)
		return 1
	}
	source := "built-in defaults (" + path + " does not exist)"
	if _, err := os.Stat(path); err == nil {
		source = "built-in defaults overlaid with " + path
	}
	fmt.Fprintf(w, "# effective podvm configuration: %s\n", source)
	fmt.Fprintf(w, "# containerd's runtime options and allowed pod annotations may still change it per pod\n")
	if err := toml.NewEncoder(w).Encode(cfg); err != nil {
		fmt.Fprintf(errw, "print configuration: %v\n", err)
		return 1
	}
	return 0
}

func report(w io.Writer, fds []finding) int {
	failed := 0
	for _, f := range fds {
		fmt.Fprintf(w, "%-5s %s: %s\n", f.status, f.what, f.detail)
		if f.status == "FAIL" {
			failed++
		}
		if f.fix != "" && f.status != "ok" {
			fmt.Fprintf(w, "      fix: %s\n", strings.ReplaceAll(f.fix, "\n", "\n           "))
		}
	}
	if failed > 0 {
		fmt.Fprintf(w, "%d problem(s) found: podvm cannot run pods on this host until they are fixed\n", failed)
		return 1
	}
	fmt.Fprintln(w, "this host can run podvm")
	return 0
}

func check(ctx context.Context, configPath string) []finding {
	var fds []finding
	add := func(f finding) { fds = append(fds, f) }

	cfg, path, err := loadConfig(configPath)
	if err != nil {
		add(finding{"FAIL", "configuration", err.Error(), "correct " + path + " (see " + "share/podvm/config.toml.example)"})
		return fds
	}
	if _, err := os.Stat(path); err != nil {
		add(finding{"ok", "configuration", "built-in defaults (" + path + " does not exist)", ""})
	} else {
		add(finding{"ok", "configuration", path, ""})
	}

	qemuOK := true
	if v, err := qemuVersion(cfg.Hypervisor.Path); err != nil {
		qemuOK = false
		add(finding{"FAIL", "qemu", err.Error(), "apt-get install qemu-system-x86 (or set hypervisor.path)"})
	} else {
		add(finding{"ok", "qemu", v, ""})
	}
	kernelOK := assetFinding(add, "guest kernel", cfg.Hypervisor.Kernel, kernelVersion(cfg.Hypervisor.Kernel))
	initOK := assetFinding(add, "guest initramfs", cfg.Hypervisor.Initramfs, "")

	if _, err := os.Stat("/dev/kvm"); err != nil {
		add(finding{"info", "kvm", "no /dev/kvm: guests run under TCG (software emulation, several times slower)", ""})
	}
	if qemuOK && kernelOK && initOK {
		fds = append(fds, bootFindings(ctx, cfg)...)
	}
	add(sharedFSFinding(cfg))
	if hypervisor.VsockAvailable() {
		add(finding{"ok", "vhost-vsock", "available: the agent channel can use vsock", ""})
	} else {
		add(finding{"info", "vhost-vsock", "not available: the agent channel uses virtio-serial", ""})
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		add(finding{"FAIL", "/dev/net/tun", err.Error(), "modprobe tun (pods need TAP devices)"})
	} else {
		f.Close()
		add(finding{"ok", "/dev/net/tun", "TAP devices can be created", ""})
	}
	if v, err := commandVersion("containerd", "--version"); err != nil {
		add(finding{"FAIL", "containerd", err.Error(), "apt-get install containerd"})
	} else {
		add(finding{"ok", "containerd", v, ""})
	}
	add(cgroupFinding())
	return fds
}

// sharedFSFinding says how containers' files will reach the guests, and
// whether the virtio-fs daemon the configuration may need is there.
func sharedFSFinding(cfg *vmconfig.Config) finding {
	h := cfg.Hypervisor
	_, err := exec.LookPath(h.VirtioFSDaemon)
	switch {
	case h.SharedFS == hypervisor.FS9P:
		return finding{"ok", "shared filesystem", "9p", ""}
	case h.SharedFS == hypervisor.FSVirtio && err != nil:
		return finding{"FAIL", "shared filesystem", "virtio-fs, but " + h.VirtioFSDaemon + " is missing",
			"apt-get install qemu-system-common, or set hypervisor.virtio_fs_daemon, or hypervisor.shared_fs = \"9p\""}
	case h.SharedFS == hypervisor.FSVirtio:
		return finding{"ok", "shared filesystem", "virtio-fs (" + h.VirtioFSDaemon + "); VMs boot, templates do not apply", ""}
	case err != nil:
		return finding{"info", "shared filesystem", "9p (auto; no virtio-fs daemon at " + h.VirtioFSDaemon + ")", ""}
	}
	return finding{"ok", "shared filesystem", "auto: 9p for VMs restored from templates, virtio-fs (" + h.VirtioFSDaemon + ") for VMs that boot", ""}
}

func assetFinding(add func(finding), what, path, version string) bool {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		add(finding{"FAIL", what, path + " not found", "make guest install (from the podvm source tree)"})
		return false
	case st.Size() == 0:
		add(finding{"FAIL", what, path + " is empty", "make guest install"})
		return false
	}
	detail := fmt.Sprintf("%s (%d KiB)", path, st.Size()>>10)
	if version != "" {
		detail += ", " + version
	}
	add(finding{"ok", what, detail, ""})
	return true
}

// bootFindings boots the configured guest: the accelerator probe's answer,
// then the agent's own account of the guest. It boots cold, whatever the
// templates: the kernel and initramfs are what is checked, and a check
// leaves no template behind.
func bootFindings(ctx context.Context, cfg *vmconfig.Config) []finding {
	var fds []finding
	g, err := vm.Boot(ctx, cfg, vm.Options{ID: "podvm-check", ColdBoot: true})
	if err != nil {
		return append(fds, finding{"FAIL", "guest boot", err.Error(), "make guest install, then run `containerd-shim-podvm-v2 check` again; with debug = true in the configuration the guest console is logged"})
	}
	defer g.Shutdown(context.Background())
	accel := fmt.Sprintf("%s (%s)", g.Accel.Accel, g.Accel.Reason)
	if g.Accel.Cached {
		accel += ", cached"
	}
	fds = append(fds, finding{"ok", "accelerator", accel, ""})
	v, err := g.Version(ctx)
	if err != nil {
		return append(fds, finding{"FAIL", "guest agent", err.Error(), "make guest install"})
	}
	fds = append(fds, finding{"ok", "guest boot", fmt.Sprintf("agent %s (API %s) on kernel %s answered %v after QEMU started",
		v.Agent, v.API, v.KernelRelease, g.BootTime.Round(time.Millisecond)), ""})
	if err := g.Shutdown(ctx); err != nil {
		fds = append(fds, finding{"FAIL", "guest shutdown", err.Error(), ""})
	}
	return fds
}

var qemuVersionRE = regexp.MustCompile(`QEMU emulator version (\S+)`)

func qemuVersion(path string) (string, error) {
	full, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("%s not found", path)
	}
	out, err := exec.Command(full, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", full, err)
	}
	m := qemuVersionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("%s does not look like QEMU", full)
	}
	machines, _ := exec.Command(full, "-machine", "help").Output()
	var have []string
	for _, name := range hypervisor.Machines() {
		if regexp.MustCompile(`(?m)^` + name + `\s`).Match(machines) {
			have = append(have, name)
		}
	}
	return fmt.Sprintf("%s, QEMU %s, machines %s", full, m[1], strings.Join(have, " ")), nil
}

func commandVersion(name string, args ...string) (string, error) {
	full, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH", name)
	}
	out, err := exec.Command(full, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", full, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

func cgroupFinding() finding {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return finding{"ok", "cgroups", "v2 (unified hierarchy)", ""}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
		return finding{"ok", "cgroups", "v1 (legacy or hybrid hierarchy)", ""}
	}
	return finding{"FAIL", "cgroups", "no cgroup hierarchy mounted at /sys/fs/cgroup", "mount -t cgroup2 none /sys/fs/cgroup"}
}

// containerdFindings looks for podvm's runtime in containerd's
// configuration: without it ctr works (--runtime io.containerd.podvm.v2)
// but CRI, and so Kubernetes, cannot run podvm pods.
func containerdFindings(path string) []finding {
	major := 0
	if v, err := commandVersion("containerd", "--version"); err == nil {
		major = install.ContainerdMajor(v)
	}
	c, err := install.ReadContainerdConfig("/", path, major)
	if err != nil {
		return []finding{{"warn", "containerd config", err.Error(), "fix " + path + ", then run `containerd-shim-podvm-v2 install` or add the podvm runtime by hand"}}
	}
	names := c.PodvmRuntimes()
	if len(names) == 0 {
		return []finding{{"warn", "containerd config", fmt.Sprintf("%s (version %d) has no CRI runtime with runtime_type %q: Kubernetes cannot run podvm pods", path, c.Version, install.RuntimeType),
			"run `containerd-shim-podvm-v2 install`, or add to " + path + " and restart containerd:\n" + install.Stanza(c.Version, "podvm")}}
	}
	var fds []finding
	for _, name := range names {
		if c.PassesAnnotations(name) {
			fds = append(fds, finding{"ok", "containerd config", fmt.Sprintf("CRI runtime %q runs podvm and passes io.podvm.config.* annotations", name), ""})
		} else {
			fds = append(fds, finding{"info", "containerd config", fmt.Sprintf("CRI runtime %q runs podvm; without pod_annotations = [\"io.podvm.config.*\"] pods cannot use io.podvm.config.* annotations", name), ""})
		}
	}
	return fds
}
