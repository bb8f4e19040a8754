package sandbox

import (
	"context"
	"os"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

// PrepareTemplate builds (if missing) the VM template that pods of cfg's
// size with nics network interfaces (of MTU 1500) are restored from: what
// `containerd-shim-podvm-v2 template build` does ahead of the first pod.
func PrepareTemplate(ctx context.Context, cfg *vmconfig.Config, nics int) (*vm.Template, error) {
	opts := vm.Options{
		ID: "podvm-template",
		// The shape is what counts, not the directory.
		Shares: []hypervisor.Share{{Tag: shareTag, Path: os.TempDir()}},
	}
	for i := 0; i < nics; i++ {
		opts.NICs = append(opts.NICs, hypervisor.NIC{MAC: hypervisor.TemplateMAC(i), MTU: 1500})
	}
	return vm.PrepareTemplate(ctx, cfg, opts)
}
