// Command containerd-shim-podvm-v2 is podvm's containerd shim (runtime
// io.containerd.podvm.v2), plus operator subcommands: check and version.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "check":
			os.Exit(runCheck(os.Args[2:]))
		case "version", "--version", "-v":
			printVersion(os.Stdout)
			return
		case "help", "-h", "--help":
			usage(os.Stdout)
			return
		}
	}
	// containerd starts shims as `... -namespace NS -id ID start` and the
	// like; the task service arrives with the task API.
	fmt.Fprintln(os.Stderr, "containerd-shim-podvm-v2: the containerd task API is not implemented in this build; `check` and `version` are")
	usage(os.Stderr)
	os.Exit(2)
}

func usage(w *os.File) {
	fmt.Fprint(w, `usage:
  containerd-shim-podvm-v2 check [-config FILE]   what this host has and lacks for podvm
  containerd-shim-podvm-v2 version                versions of the shim and its guest
containerd runs the shim itself for runtime_type "io.containerd.podvm.v2".
`)
}
