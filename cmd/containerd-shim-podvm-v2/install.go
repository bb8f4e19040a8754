package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/podvm/podvm/install"
)

// runInstall is `install` and `uninstall`: podvm onto (or off) a node,
// from a shell on the node or from deploy/'s DaemonSet with the node's root
// mounted at /host.
func runInstall(args []string, remove bool) int {
	name := "install"
	if remove {
		name = "uninstall"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	root := fs.String("root", "/", "the node's root directory (/host in deploy/'s DaemonSet)")
	prefix := fs.String("prefix", "/opt/podvm", "where bin/ and share/podvm/ go, inside root")
	linkDir := fs.String("link-dir", "/usr/local/bin", "directory in containerd's PATH that gets a link to the shim (\"\" for none)")
	source := fs.String("source", "", "prefix to copy bin/ and share/podvm/ from (default: this binary's own)")
	ctdConfig := fs.String("containerd-config", install.DefaultContainerdConfig, "containerd's configuration file, inside root")
	runtimeName := fs.String("runtime-name", "podvm", "CRI runtime name, the RuntimeClass handler")
	restart := fs.Bool("restart-containerd", false, "restart containerd (systemctl, in the node's namespaces) when its configuration changed")
	wait := fs.Bool("wait", false, "after installing, stay until SIGTERM, then uninstall (a DaemonSet's container)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *source == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: find this binary: %v (pass --source)\n", name, err)
			return 1
		}
		*source = filepath.Dir(filepath.Dir(exe))
	}
	n := &install.Node{
		Root: *root, Source: *source, Prefix: *prefix, LinkDir: *linkDir,
		ContainerdConfig: *ctdConfig, RuntimeName: *runtimeName,
		ContainerdMajor: containerdMajor(*root),
		Log:             func(format string, args ...any) { fmt.Printf(format+"\n", args...) },
	}
	do := n.Install
	if remove {
		do = n.Uninstall
	}
	if code := step(name, do, *root, *restart); code != 0 || !*wait || remove {
		return code
	}
	fmt.Println("installed; uninstalls on SIGTERM")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return step("uninstall", n.Uninstall, *root, *restart)
}

func step(name string, do func() (bool, error), root string, restart bool) int {
	changed, err := do()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	if !changed {
		fmt.Println("containerd's configuration already as wanted")
		return 0
	}
	if !restart {
		fmt.Println("restart containerd for the change to its configuration to apply: systemctl restart containerd")
		return 0
	}
	if err := restartContainerd(root); err != nil {
		fmt.Fprintf(os.Stderr, "%s: restart containerd: %v (restart it by hand: systemctl restart containerd)\n", name, err)
		return 1
	}
	fmt.Println("restarted containerd")
	return 0
}

// restartContainerd restarts the node's containerd: directly on the node;
// from a DaemonSet (hostPID) with the node's nsenter, run in the node's
// root, entering PID 1's mount namespace (which also leaves the chroot).
func restartContainerd(root string) error {
	cmd := exec.Command("systemctl", "restart", "containerd")
	if filepath.Clean(root) != "/" {
		nsenter := "/usr/bin/nsenter"
		cmd = &exec.Cmd{
			Path:        nsenter,
			Args:        []string{nsenter, "--target", "1", "--mount", "--", "systemctl", "restart", "containerd"},
			SysProcAttr: &syscall.SysProcAttr{Chroot: root},
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// containerdMajor asks the node's containerd its version, for a node whose
// configuration file does not exist yet; 0 if it cannot tell.
func containerdMajor(root string) int {
	cmd := exec.Command("containerd", "--version")
	if filepath.Clean(root) != "/" {
		// The node's binary, run in the node's root.
		for _, p := range []string{"/usr/local/bin/containerd", "/usr/bin/containerd"} {
			if _, err := os.Stat(filepath.Join(root, p)); err == nil {
				cmd = &exec.Cmd{Path: p, Args: []string{p, "--version"}, SysProcAttr: &syscall.SysProcAttr{Chroot: root}}
				break
			}
		}
	}
	out, err := cmd.Output()
	if err != nil {
		return 0
	}
	return install.ContainerdMajor(string(out))
}
