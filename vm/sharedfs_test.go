package vm

import (
	"testing"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vmconfig"
)

// TestSharedFS: "auto" keeps 9p where a template serves the VM and takes
// virtio-fs where the VM boots anyway, if the daemon is there.
func TestSharedFS(t *testing.T) {
	const present, missing = "/bin/sh", "/nonexistent/virtiofsd"
	for _, tt := range []struct {
		setting   string
		templates bool
		vsock     bool
		daemon    string
		want      string
	}{
		{"9p", false, true, present, hypervisor.FS9P},
		{"virtio-fs", true, false, present, hypervisor.FSVirtio},
		{"auto", true, false, present, hypervisor.FS9P},
		{"auto", false, false, present, hypervisor.FSVirtio},
		{"auto", true, true, present, hypervisor.FSVirtio},
		{"auto", false, false, missing, hypervisor.FS9P},
	} {
		c := vmconfig.Default()
		c.Hypervisor.SharedFS, c.Hypervisor.VirtioFSDaemon = tt.setting, tt.daemon
		c.Template.Enabled = tt.templates
		if got := sharedFS(c, tt.vsock); got != tt.want {
			t.Errorf("shared_fs %q, templates %v, vsock %v, daemon %s: got %s, want %s", tt.setting, tt.templates, tt.vsock, tt.daemon, got, tt.want)
		}
	}
}
