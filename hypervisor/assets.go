package hypervisor

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// xenElfnotePhys32Entry is the ELF note type of the PVH entry point
// (XEN_ELFNOTE_PHYS32_ENTRY), which QEMU needs to boot a vmlinux directly.
const xenElfnotePhys32Entry = 18

// checkKernel verifies that path is an x86-64 ELF kernel with a PVH entry:
// a bzImage or a vmlinux built without CONFIG_PVH makes QEMU fail with a
// message that does not name the cause.
func checkKernel(path string) error {
	if err := checkAsset("guest kernel", path); err != nil {
		return err
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("guest kernel %s is not an ELF vmlinux (%v): build it with `make guest`; a bzImage does not boot here", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("guest kernel %s is for %v, not x86-64", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return fmt.Errorf("guest kernel %s: read notes: %w", path, err)
		}
		if hasPVHNote(notes) {
			return nil
		}
	}
	return fmt.Errorf("guest kernel %s has no PVH entry point (CONFIG_PVH): build it with `make guest`", path)
}

func hasPVHNote(b []byte) bool {
	align := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz := binary.LittleEndian.Uint32(b[0:])
		descsz := binary.LittleEndian.Uint32(b[4:])
		typ := binary.LittleEndian.Uint32(b[8:])
		b = b[12:]
		if uint64(align(namesz))+uint64(align(descsz)) > uint64(len(b)) {
			return false
		}
		name := bytes.TrimRight(b[:namesz], "\x00")
		if string(name) == "Xen" && typ == xenElfnotePhys32Entry {
			return true
		}
		b = b[align(namesz)+align(descsz):]
	}
	return false
}

// initramfsMagics are the starts of the archives the guest kernel unpacks:
// cpio newc (with and without CRC) and the compressors it may support.
var initramfsMagics = [][]byte{
	[]byte("070701"), []byte("070702"),
	{0x1f, 0x8b},               // gzip
	{0xfd, '7', 'z', 'X', 'Z'}, // xz
	{0x02, 0x21, 0x4c, 0x18},   // lz4 legacy
	{0x28, 0xb5, 0x2f, 0xfd},   // zstd
}

func checkInitramfs(path string) error {
	if err := checkAsset("guest initramfs", path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("guest initramfs %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, 6)
	n, _ := io.ReadFull(f, head)
	for _, m := range initramfsMagics {
		if n >= len(m) && bytes.Equal(head[:len(m)], m) {
			return nil
		}
	}
	return fmt.Errorf("guest initramfs %s is not a cpio archive: rebuild it with `make guest`", path)
}
