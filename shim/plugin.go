package shim

import (
	"context"
	"flag"

	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/shim"
)

// Register adds the task service to the shim's plugins, as containerd's
// runc shim does in its plugin package.
func Register() {
	plugin.Register(&plugin.Registration{
		Type: plugin.TTRPCPlugin,
		ID:   "task",
		Requires: []plugin.Type{
			plugin.EventPlugin,
			plugin.InternalPlugin,
		},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			// The shim library parsed -id: for a podvm shim it names the
			// sandbox (see manager.Start).
			id := ""
			if f := flag.Lookup("id"); f != nil {
				id = f.Value.String()
			}
			return NewTaskService(ic.Context, id, pp.(shim.Publisher), ss.(shutdown.Service))
		},
	})
}

// Run runs the shim binary's containerd side: `start`, `delete`, or
// serving the task API.
func Run(ctx context.Context, name string) {
	Register()
	shim.RunManager(ctx, NewManager(name), func(c *shim.Config) {
		// QEMU is the shim's only child, and the hypervisor package waits
		// for it: the library's reaper would steal its exit status.
		c.NoReaper = true
		c.NoSubreaper = true
	})
}
