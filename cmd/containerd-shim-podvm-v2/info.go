package main

import (
	"fmt"
	"io"
	"os"

	apitypes "github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"

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
	b, err := proto.Marshal(&apitypes.RuntimeInfo{
		Name:    RuntimeName,
		Version: &apitypes.RuntimeVersion{Version: version.Version},
	})
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}

func info() int {
	if err := runInfo(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
