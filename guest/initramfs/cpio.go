// Package initramfs writes the guest's initramfs: an uncompressed cpio
// archive in the kernel's "newc" format, byte-for-byte reproducible (fixed
// owners, times and inode numbers, entries in the order given).
package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Mode bits of cpio entries (those of stat(2)).
const (
	TypeDir     = 0o040000
	TypeRegular = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
)

// Entry is one file of the archive.
type Entry struct {
	Name string // path inside the guest, without a leading slash
	Mode uint32 // type and permission bits
	// Exactly one of Data (regular file contents), Source (a host file to
	// copy), Target (a symlink's target) matters, by Mode's type.
	Data   []byte
	Source string
	Target string
	// Major and Minor name a device node.
	Major, Minor uint32
}

// Writer writes entries to an archive. Close writes the trailer.
type Writer struct {
	w   *bufio.Writer
	ino uint32
	n   int64
	err error
}

// NewWriter starts an archive on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 1<<20), ino: 300000}
}

// Add writes one entry.
func (w *Writer) Add(e Entry) error {
	if w.err != nil {
		return w.err
	}
	name := strings.TrimPrefix(path.Clean("/"+e.Name), "/")
	if name == "" {
		return fmt.Errorf("initramfs: empty entry name %q", e.Name)
	}
	var body io.Reader
	var size int64
	switch e.Mode &^ 0o7777 {
	case TypeRegular:
		if e.Source != "" {
			f, err := os.Open(e.Source)
			if err != nil {
				return fmt.Errorf("initramfs: %s: %w", name, err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return fmt.Errorf("initramfs: %s: %w", name, err)
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("initramfs: %s: source %s is not a regular file", name, e.Source)
			}
			body, size = f, st.Size()
		} else {
			body, size = strings.NewReader(string(e.Data)), int64(len(e.Data))
		}
	case TypeSymlink:
		body, size = strings.NewReader(e.Target), int64(len(e.Target))
	case TypeDir, TypeChar:
	default:
		return fmt.Errorf("initramfs: %s: unsupported mode %#o", name, e.Mode)
	}
	w.ino++
	nlink := uint32(1)
	if e.Mode&^0o7777 == TypeDir {
		nlink = 2
	}
	w.header(w.ino, e.Mode, nlink, uint32(size), e.Major, e.Minor, name)
	if body != nil && w.err == nil {
		n, err := io.Copy(w.w, body)
		if err == nil && n != size {
			err = fmt.Errorf("%s changed while being read", e.Source)
		}
		if err != nil {
			w.err = fmt.Errorf("initramfs: %s: %w", name, err)
		}
		w.n += n
		w.pad()
	}
	return w.err
}

func (w *Writer) header(ino, mode, nlink, size, rmajor, rminor uint32, name string) {
	if w.err != nil {
		return
	}
	// Fields: ino mode uid gid nlink mtime filesize devmajor devminor
	// rdevmajor rdevminor namesize check. Owner and mtime are zero on
	// purpose: they make the archive reproducible.
	n, err := fmt.Fprintf(w.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\x00",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0, name)
	w.n += int64(n)
	w.err = err
	w.pad()
}

func (w *Writer) pad() {
	if w.err != nil {
		return
	}
	if r := w.n % 4; r != 0 {
		n, err := w.w.Write(make([]byte, 4-r))
		w.n += int64(n)
		w.err = err
	}
}

// Close writes the trailer and flushes. It does not close the underlying
// writer.
func (w *Writer) Close() error {
	w.header(0, 0, 1, 0, 0, 0, "TRAILER!!!")
	if w.err != nil {
		return w.err
	}
	return w.w.Flush()
}
