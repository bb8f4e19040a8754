package shim

import (
	"fmt"
	"os"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/podvm/podvm/vmconfig"
)

// runtimeOptionsURL is the type CRI sends the options of a runtime handler
// as (runtimeoptions.v1.Options: ConfigPath, ConfigBody).
const runtimeOptionsURL = "runtimeoptions.v1.Options"

// withRuntimeOptions refines the node's configuration with the runtime
// handler's options from containerd's config: the file named by ConfigPath,
// else the TOML in ConfigBody, on top of /etc/podvm/config.toml.
func withRuntimeOptions(base *vmconfig.Config, opts *anypb.Any) (*vmconfig.Config, error) {
	if opts == nil || len(opts.Value) == 0 {
		return base, nil
	}
	if opts.TypeUrl != runtimeOptionsURL && opts.TypeUrl != "/"+runtimeOptionsURL {
		// runc's options or others: not podvm's.
		return base, nil
	}
	var o runtimeoptions.Options
	if err := proto.Unmarshal(opts.Value, &o); err != nil {
		return nil, fmt.Errorf("decode runtime options: %w", err)
	}
	switch {
	case o.ConfigPath != "":
		b, err := os.ReadFile(o.ConfigPath)
		if err != nil {
			return nil, fmt.Errorf("runtime option ConfigPath: %w (fix the path in containerd's runtime options)", err)
		}
		c, err := base.Overlay(string(b))
		if err != nil {
			return nil, fmt.Errorf("podvm config %s (ConfigPath of the runtime handler): %w", o.ConfigPath, err)
		}
		return c, nil
	case len(o.ConfigBody) > 0:
		c, err := base.Overlay(string(o.ConfigBody))
		if err != nil {
			return nil, fmt.Errorf("podvm config in the runtime handler's options (ConfigBody): %w", err)
		}
		return c, nil
	}
	return base, nil
}
