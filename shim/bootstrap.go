package shim

import (
	"errors"
	"io"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// containerd 2.3 and later start a shim with its bootstrap parameters
// (containerd.runtime.bootstrap.v1.BootstrapParams, protobuf) on stdin and
// read a BootstrapResult from its stdout, which says which task API the
// shim serves: podvm then answers version 3 (task API v3, which it serves
// beside v2). Older containerds write nothing (1.6) or the runtime options
// (1.7 to 2.2) on stdin and read a plain address, which means task API v2.
// The messages are decoded here by field number: the module that defines
// them is newer than the containerd 1.7 library podvm builds on.

// bootstrap is what podvm uses of containerd's bootstrap parameters.
type bootstrap struct {
	containerdVersion string
	// socketDir is where containerd wants the shim's socket; empty for
	// the usual /run/containerd/s.
	socketDir string
}

// startInput is what containerd tells `start` on stdin.
type startInput struct {
	// boot is nil before containerd 2.3.
	boot *bootstrap
	// options are the runtime handler's options (runtimeoptions.v1 from
	// CRI), nil if none: the Sandbox API's pod gets them only here.
	options *anypb.Any
}

// Field numbers of BootstrapParams and BootstrapResult.
const (
	paramInstanceID        = 1
	paramNamespace         = 2
	paramContainerdVersion = 4
	paramExtensions        = 8
	paramSocketDir         = 9

	resultVersion  = 1
	resultAddress  = 2
	resultProtocol = 3
)

// maxBootstrap bounds what is read of stdin.
const maxBootstrap = 10 << 20

// readStart reads stdin: containerd's bootstrap parameters (2.3 and
// later), whose first extension is the runtime options, or the runtime
// options alone (1.7 to 2.2), or nothing (1.6). Runtime options are a
// protobuf Any whose first field is a type URL: parameters are told apart
// by naming this very instance and namespace.
func readStart(stdin io.Reader, id, namespace string) startInput {
	data := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(stdin, maxBootstrap))
		data <- b
	}()
	var b []byte
	select {
	case b = <-data:
	case <-time.After(5 * time.Second):
		// Nothing closes stdin (a terminal, say): no parameters.
		return startInput{}
	}
	fields, err := stringFields(b)
	if err != nil {
		return startInput{}
	}
	if fields[paramInstanceID] != id || fields[paramNamespace] != namespace || fields[paramContainerdVersion] == "" {
		return startInput{options: anyOf(b)}
	}
	bs := &bootstrap{containerdVersion: fields[paramContainerdVersion], socketDir: fields[paramSocketDir]}
	if bs.socketDir != "" && !filepath.IsAbs(bs.socketDir) {
		bs.socketDir = ""
	}
	in := startInput{boot: bs}
	// The first Extension (field 8) holds the options in its field 1.
	if ext, ok := firstField(b, paramExtensions); ok {
		if v, ok := firstField(ext, 1); ok {
			in.options = anyOf(v)
		}
	}
	return in
}

// anyOf decodes b as a protobuf Any with a type URL, else nil.
func anyOf(b []byte) *anypb.Any {
	var a anypb.Any
	if err := proto.Unmarshal(b, &a); err != nil || a.TypeUrl == "" {
		return nil
	}
	return &a
}

// firstField is the first length-delimited field num of message b.
func firstField(b []byte, num protowire.Number) ([]byte, bool) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			return v, l >= 0
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
	}
	return nil, false
}

// stringFields decodes the length-delimited fields of a protobuf message
// as strings (the last of each number wins, as in protobuf), skipping the
// others.
func stringFields(b []byte) (map[protowire.Number]string, error) {
	out := map[protowire.Number]string{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			out[num] = string(v)
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	if len(out) == 0 {
		return nil, errors.New("no fields")
	}
	return out, nil
}

// bootstrapResult is the BootstrapResult of a shim serving task API v3 over
// ttrpc at address.
func bootstrapResult(address string) []byte {
	var b []byte
	b = protowire.AppendTag(b, resultVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, resultAddress, protowire.BytesType)
	b = protowire.AppendString(b, address)
	b = protowire.AppendTag(b, resultProtocol, protowire.BytesType)
	b = protowire.AppendString(b, "ttrpc")
	return b
}
