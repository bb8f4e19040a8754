package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/podvm/podvm/version"
	"github.com/podvm/podvm/vmconfig"
)

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "containerd-shim-podvm-v2 %s (agent API %s, %s)\n", version.Version, version.APIVersion, runtime.Version())
	cfg, err := vmconfig.Load()
	if err != nil {
		fmt.Fprintf(w, "configuration: %v\n", err)
		return
	}
	fmt.Fprintf(w, "guest kernel: %s (%s)\n", cfg.Hypervisor.Kernel, kernelVersion(cfg.Hypervisor.Kernel))
	fmt.Fprintf(w, "guest initramfs: %s\n", cfg.Hypervisor.Initramfs)
}

// kernelVersion reads the vmlinux.version file `make guest` writes beside
// the kernel.
func kernelVersion(kernel string) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(kernel), "vmlinux.version"))
	if err != nil {
		return "version unknown"
	}
	return strings.TrimSpace(string(b))
}
