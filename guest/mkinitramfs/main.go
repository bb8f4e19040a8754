// Command mkinitramfs writes the podvm guest initramfs: the agent binary as
// /init plus the fixed layout of package initramfs.
//
//	mkinitramfs -agent bin/podvm-agent -o build/guest/initramfs.cpio
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/podvm/podvm/guest/initramfs"
)

func main() {
	agent := flag.String("agent", "bin/podvm-agent", "the static agent binary to install as /init")
	out := flag.String("o", "build/guest/initramfs.cpio", "output file")
	flag.Parse()
	if err := write(*out, initramfs.Layout(*agent)); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
}

// write builds the archive next to out and renames it into place, so a
// failed build never leaves a truncated initramfs for QEMU to boot.
func write(out string, entries []initramfs.Entry) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".initramfs-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w := initramfs.NewWriter(f)
	for _, e := range entries {
		if err := w.Add(e); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}
