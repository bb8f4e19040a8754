package hypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pvhNote is an ELF note with the PVH entry point, as a kernel carries it.
func pvhNote() []byte {
	b := []byte{4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0}
	b = append(b, 'X', 'e', 'n', 0)
	return append(b, 0, 0, 0x10, 0)
}

func TestHasPVHNote(t *testing.T) {
	other := []byte{4, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 'G', 'N', 'U', 0, 1, 2, 3, 4}
	tests := []struct {
		name  string
		notes []byte
		want  bool
	}{
		{"pvh only", pvhNote(), true},
		{"after another note", append(append([]byte{}, other...), pvhNote()...), true},
		{"other only", other, false},
		{"truncated", pvhNote()[:14], false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := hasPVHNote(tt.notes); got != tt.want {
			t.Errorf("%s: hasPVHNote = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbage := write("garbage", []byte("this is not a kernel at all, nor an initramfs"))
	empty := write("empty", nil)
	cpio := write("initramfs.cpio", []byte("070701000000000000"))
	// Any x86-64 ELF without the PVH note: the test binary itself.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	good := Config{ID: "t", QEMU: "sh", Kernel: self, Initramfs: cpio, Machine: "microvm", Accel: TCG, CPUs: 1, MemoryMiB: 128, Ports: []string{"podvm.agent"}}
	tests := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"missing qemu", func(c *Config) { c.QEMU = "/nonexistent/qemu-system-x86_64" }, "apt-get install qemu-system-x86"},
		{"missing kernel", func(c *Config) { c.Kernel = filepath.Join(dir, "nope") }, "does not exist"},
		{"empty kernel", func(c *Config) { c.Kernel = empty }, "is empty"},
		{"kernel not ELF", func(c *Config) { c.Kernel = garbage }, "not an ELF vmlinux"},
		{"kernel without PVH", func(c *Config) {}, "no PVH entry point"},
		{"kernel is a directory", func(c *Config) { c.Kernel = dir }, "not a regular file"},
		{"initramfs not cpio", func(c *Config) { c.Initramfs = garbage }, "not a cpio archive"},
		{"unknown machine", func(c *Config) { c.Machine = "pc" }, `"pc" is not a supported machine type`},
		{"unknown accel", func(c *Config) { c.Accel = "hvf" }, `unknown accelerator "hvf"`},
		{"no cpus", func(c *Config) { c.CPUs = 0 }, "vCPUs must be between"},
		{"too little memory", func(c *Config) { c.MemoryMiB = 16 }, "at least 64 MiB"},
		{"bad port name", func(c *Config) { c.Ports = []string{"a,b"} }, `invalid or repeated virtio-serial port name "a,b"`},
		{"option in the name", func(c *Config) { c.ID = "a,debug-threads=on" }, `invalid VM name "a,debug-threads=on"`},
		{"kernel parameter with a space", func(c *Config) { c.KernelParams = []string{"a b"} }, `kernel parameter "a b": parameters are words`},
		{"unknown shared filesystem", func(c *Config) { c.SharedFS = "nfs" }, `unknown shared filesystem "nfs"`},
		{"virtio-fs without its daemon", func(c *Config) {
			c.SharedFS, c.Virtiofsd, c.VirtioFSCache, c.SocketDir = FSVirtio, "/nonexistent/virtiofsd", "auto", dir
			c.Shares = []Share{{Tag: "podvm", Path: dir}}
		}, "apt-get install qemu-system-common"},
		{"virtio-fs with a template's RAM", func(c *Config) {
			c.SharedFS, c.Virtiofsd, c.VirtioFSCache, c.SocketDir = FSVirtio, "sh", "auto", dir
			c.Shares, c.Memory = []Share{{Tag: "podvm", Path: dir}}, &MemoryFile{Path: "/dev/shm/t/ram"}
		}, "virtiofsd must share it"},
		{"virtio-fs share with a comma", func(c *Config) {
			c.SharedFS, c.Virtiofsd, c.VirtioFSCache, c.SocketDir = FSVirtio, "sh", "auto", dir
			c.Shares = []Share{{Tag: "podvm", Path: dir + "/a,b"}}
		}, "the path has a comma"},
		{"virtio-fs without a socket directory", func(c *Config) {
			c.SharedFS, c.Virtiofsd, c.VirtioFSCache = FSVirtio, "sh", "auto"
			c.Shares = []Share{{Tag: "podvm", Path: dir}}
		}, "private directory for its sockets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
