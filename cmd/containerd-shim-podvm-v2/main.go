// Command containerd-shim-podvm-v2 is podvm's containerd shim (runtime
// io.containerd.podvm.v2), plus operator subcommands: check, version,
// metrics, console, template, install and uninstall.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/podvm/podvm/shim"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "check":
			os.Exit(runCheck(os.Args[2:]))
		case "metrics":
			os.Exit(runMetrics(os.Args[2:]))
		case "console":
			os.Exit(runConsole(os.Args[2:]))
		case "template":
			os.Exit(runTemplate(os.Args[2:]))
		case "install":
			os.Exit(runInstall(os.Args[2:], false))
		case "uninstall":
			os.Exit(runInstall(os.Args[2:], true))
		case "version", "--version", "-v":
			printVersion(os.Stdout)
			return
		case "help", "-h", "--help":
			usage(os.Stdout)
			return
		}
	}
	if isInfo(os.Args[1:]) {
		os.Exit(info())
	}
	// Everything else is containerd: `-namespace NS -id ID start`,
	// `... delete`, or serving a sandbox's task API.
	shim.Run(context.Background(), RuntimeName)
}

// RuntimeName is the runtime type containerd knows podvm by.
const RuntimeName = "io.containerd.podvm.v2"

func usage(w *os.File) {
	fmt.Fprint(w, `usage:
  containerd-shim-podvm-v2 check [-config FILE]   what this host has and lacks for podvm
  containerd-shim-podvm-v2 version                versions of the shim and its guest
  containerd-shim-podvm-v2 metrics [-state-dir DIR]  every running shim's Prometheus metrics
  containerd-shim-podvm-v2 console SANDBOX_ID     a shell in the sandbox's VM (needs debug_console = true)
  containerd-shim-podvm-v2 template build|list|remove  the VM templates pods start from
  containerd-shim-podvm-v2 install [flags]        copy podvm onto a node and add its runtime to containerd
  containerd-shim-podvm-v2 uninstall [flags]      undo install
containerd runs the shim itself for runtime_type "io.containerd.podvm.v2".
`)
}
