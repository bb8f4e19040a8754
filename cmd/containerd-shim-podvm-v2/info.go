package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	apitypes "github.com/containerd/containerd/api/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/podvm/podvm/version"
)

// isInfo reports whether containerd asks `-info`: containerd 2.x runs the
// shim so to learn its name, version and features (the runtime options
// are on stdin; podvm reports none of its own).
func isInfo(args []string) bool {
	for _, a := range args {
		if a == "-info" || a == "--info" {
			return true
		}
	}
	return false
}

// runInfo prints the shim's RuntimeInfo protobuf, as containerd's shims do.
func runInfo(stdin io.Reader, stdout io.Writer) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(stdin, 1<<20))
	features, err := json.Marshal(runtimeFeatures())
	if err != nil {
		return err
	}
	b, err := proto.Marshal(&apitypes.RuntimeInfo{
		Name:    RuntimeName,
		Version: &apitypes.RuntimeVersion{Version: version.Version},
		// As typeurl marshals a registered non-protobuf type: JSON.
		Features: &anypb.Any{TypeUrl: featuresTypeURL, Value: features},
	})
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}

// featuresTypeURL is the type URL containerd registers for the runtime
// spec's features document.
const featuresTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"

// runtimeFeatures is what `runc features` says, for what a podvm container
// gets: containerd 2.x's CRI reads the mount options (rro: recursive
// read-only binds) from it. Shared propagation is left out (a mount made in
// the VM cannot reach the host), and so are hooks (they name host
// binaries; podvm drops them) and user namespaces (not offered).
func runtimeFeatures() *features.Features {
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         []string{},
		MountOptions: []string{
			"async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
			"iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime",
			"noexec", "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime",
			"nosuid", "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime",
			"relatime", "remount", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec",
			"rnorelatime", "rnostrictatime", "rnosuid", "rnosymfollow", "ro", "rprivate",
			"rrelatime", "rro", "rrw", "rslave", "rstrictatime", "rsuid", "rsymfollow",
			"runbindable", "rw", "silent", "slave", "strictatime", "suid", "symfollow",
			"sync", "tmpcopyup", "unbindable",
		},
	}
}

func info() int {
	if err := runInfo(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
