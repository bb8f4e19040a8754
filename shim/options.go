package shim

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/podvm/podvm/vmconfig"
)

// runtimeOptionsURL is the type CRI sends the options of a runtime handler
// as (runtimeoptions.v1.Options: ConfigPath, ConfigBody).
const runtimeOptionsURL = "runtimeoptions.v1.Options"

// runtimeOptionsFile keeps, in the bundle a shim starts in, the runtime
// options containerd gave `start`: the Sandbox API's CreateSandbox carries
// none of its own.
const runtimeOptionsFile = "podvm-runtime-options.pb"

// maxRuntimeOptions bounds the saved options read back.
const maxRuntimeOptions = 1 << 20

func saveRuntimeOptions(bundle string, opts *anypb.Any) error {
	if opts == nil {
		return nil
	}
	b, err := proto.Marshal(opts)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bundle, runtimeOptionsFile), b, 0o600); err != nil {
		return fmt.Errorf("keep the runtime options for the shim: %w", err)
	}
	return nil
}

// loadRuntimeOptions reads the options saveRuntimeOptions kept; none is
// nil.
func loadRuntimeOptions(bundle string) (*anypb.Any, error) {
	f, err := os.Open(filepath.Join(bundle, runtimeOptionsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRuntimeOptions))
	if err != nil {
		return nil, err
	}
	var a anypb.Any
	if err := proto.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%s: %w", runtimeOptionsFile, err)
	}
	return &a, nil
}

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
