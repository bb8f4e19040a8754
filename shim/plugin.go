package shim

import (
	"context"
	"flag"
	"math"
	"os"
	"os/signal"
	"strings"

	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
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
	// What containerd and `start` handed down (the shim's listening
	// socket on fd 3, the log pipe) must not reach QEMU: a VM holding the
	// shim's socket would keep it accepting connections after the shim
	// died, and `delete` would take the dead shim for a live one.
	_ = unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	// containerd reads `delete`'s output through pipes; if it goes away
	// meanwhile, the cleanup must still finish rather than die of SIGPIPE
	// at its next log line.
	signal.Ignore(unix.SIGPIPE)
	Register()
	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(idFields(os.Args[1:])))
	shim.RunManager(ctx, NewManager(name), func(c *shim.Config) {
		// QEMU is the shim's only child, and the hypervisor package waits
		// for it: the library's reaper would steal its exit status.
		c.NoReaper = true
		c.NoSubreaper = true
	})
}

// idFields names what a shim process's log lines are about, from the
// arguments containerd gave it (parsed here because the shim library parses
// them only after it starts logging): the serving shim's -id is its
// sandbox (see manager.Start), `start` and `delete` name a container.
func idFields(args []string) log.Fields {
	id, action := "", ""
	for i, a := range args {
		switch {
		case (a == "-id" || a == "--id") && i+1 < len(args):
			id = args[i+1]
		case strings.HasPrefix(a, "-id="), strings.HasPrefix(a, "--id="):
			id = a[strings.Index(a, "=")+1:]
		case a == "start" || a == "delete":
			action = a
		}
	}
	if id == "" {
		return log.Fields{}
	}
	if action != "" {
		return log.Fields{"container": id}
	}
	return log.Fields{"sandbox": id}
}
