package initramfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

type parsed struct {
	name       string
	mode       uint32
	data       string
	rmaj, rmin uint32
	uid, mtime uint32
}

// readNewc parses a newc archive the way the kernel does, strictly: any
// misalignment or bad magic fails.
func readNewc(t *testing.T, b []byte) []parsed {
	t.Helper()
	var out []parsed
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at offset %d", off)
		}
		mode, uid, mtime, size := field(1), field(2), field(5), field(6)
		rmaj, rmin, namesize := field(9), field(10), field(11)
		name := string(b[off+110 : off+110+int(namesize)-1])
		if b[off+110+int(namesize)-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		off = align(off + 110 + int(namesize))
		data := string(b[off : off+int(size)])
		off = align(off + int(size))
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, parsed{name, mode, data, rmaj, rmin, uid, mtime})
	}
}

func TestWriter(t *testing.T) {
	src := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(src, []byte("#!agent binary\x00\x01"), 0o755); err != nil {
		t.Fatal(err)
	}
	build := func() []byte {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		for _, e := range append(Layout(src), Entry{Name: "/etc/hostname", Mode: TypeRegular | 0o644, Data: []byte("podvm\n")},
			Entry{Name: "bin/sh", Mode: TypeSymlink | 0o777, Target: "busybox"}) {
			if err := w.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a := build()
	if !bytes.Equal(a, build()) {
		t.Fatal("two builds of the same input differ")
	}
	got := map[string]parsed{}
	for _, p := range readNewc(t, a) {
		if p.uid != 0 || p.mtime != 0 {
			t.Errorf("%s: uid %d mtime %d, want 0 (reproducible)", p.name, p.uid, p.mtime)
		}
		got[p.name] = p
	}
	checks := []struct {
		name string
		mode uint32
		data string
	}{
		{"init", TypeRegular | 0o755, "#!agent binary\x00\x01"},
		{"dev/console", TypeChar | 0o600, ""},
		{"tmp", TypeDir | 0o1777, ""},
		{"etc/hostname", TypeRegular | 0o644, "podvm\n"},
		{"bin/sh", TypeSymlink | 0o777, "busybox"},
	}
	for _, c := range checks {
		p, ok := got[c.name]
		if !ok {
			t.Errorf("%s missing", c.name)
			continue
		}
		if p.mode != c.mode || p.data != c.data {
			t.Errorf("%s: mode %o data %q, want %o %q", c.name, p.mode, p.data, c.mode, c.data)
		}
	}
	if c := got["dev/console"]; c.rmaj != 5 || c.rmin != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.rmaj, c.rmin)
	}
}

func TestWriterErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []Entry{
		{Name: "x", Mode: TypeRegular | 0o755, Source: filepath.Join(dir, "missing")},
		{Name: "x", Mode: TypeRegular | 0o755, Source: dir},
		{Name: "/", Mode: TypeDir | 0o755},
		{Name: "fifo", Mode: 0o010000 | 0o644},
	}
	for i, e := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if err := NewWriter(&bytes.Buffer{}).Add(e); err == nil {
				t.Errorf("Add(%+v) accepted it", e)
			}
		})
	}
}
