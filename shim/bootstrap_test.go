package shim

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func field(b []byte, num protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func TestReadBootstrap(t *testing.T) {
	var params []byte
	params = field(params, paramInstanceID, "c1")
	params = field(params, paramNamespace, "k8s.io")
	params = protowire.AppendTag(params, 3, protowire.VarintType) // log level
	params = protowire.AppendVarint(params, 4)
	params = field(params, paramContainerdVersion, "v2.4.2")
	params = field(params, 5, "unix:///run/containerd/containerd.sock.ttrpc")
	params = field(params, paramSocketDir, "/run/k/s")

	// containerd 1.7 to 2.2: the runtime options, an Any.
	var options []byte
	options = field(options, 1, "runtimeoptions.v1.Options")
	options = field(options, 2, "\x0a\x05/x.toml")

	for _, tt := range []struct {
		name  string
		stdin []byte
		want  *bootstrap
	}{
		{"containerd 2.3+", params, &bootstrap{containerdVersion: "v2.4.2", socketDir: "/run/k/s"}},
		{"runtime options", options, nil},
		{"nothing (1.6)", nil, nil},
		{"another instance's parameters", field(field(field(nil, 1, "c2"), 2, "k8s.io"), 4, "v2.4.2"), nil},
		{"garbage", []byte("\xff\xff\xff"), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := readStart(bytes.NewReader(tt.stdin), "c1", "k8s.io").boot
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestBootstrapResult(t *testing.T) {
	f, err := stringFields(bootstrapResult("unix:///run/containerd/s/abc"))
	if err != nil || f[resultAddress] != "unix:///run/containerd/s/abc" || f[resultProtocol] != "ttrpc" {
		t.Errorf("fields %v, %v", f, err)
	}
	if !strings.HasPrefix(string(bootstrapResult("x")), "\x08\x03") {
		t.Error("version 3 is not the first field")
	}
}

// The runtime handler's options reach the shim from every containerd that
// sends them: in the first bootstrap extension (2.3+), or alone (1.7-2.2).
func TestReadStartOptions(t *testing.T) {
	var options []byte
	options = field(options, 1, "runtimeoptions.v1.Options")
	options = field(options, 2, "\x0a\x05/x.toml")
	var params []byte
	params = field(params, paramInstanceID, "c1")
	params = field(params, paramNamespace, "k8s.io")
	params = field(params, paramContainerdVersion, "v2.4.2")
	params = field(params, paramExtensions, string(field(nil, 1, string(options))))

	for name, stdin := range map[string][]byte{"containerd 2.3+": params, "containerd 1.7 to 2.2": options} {
		in := readStart(bytes.NewReader(stdin), "c1", "k8s.io")
		if in.options == nil || in.options.TypeUrl != "runtimeoptions.v1.Options" || string(in.options.Value) != "\x0a\x05/x.toml" {
			t.Errorf("%s: options %v", name, in.options)
		}
	}
	if in := readStart(bytes.NewReader(nil), "c1", "k8s.io"); in.options != nil || in.boot != nil {
		t.Errorf("nothing on stdin: %+v", in)
	}
}
