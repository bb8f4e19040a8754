package sandbox

import (
	"strings"
	"testing"
)

func TestCgroupfsPath(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{in: "/default/c1", want: "/default/c1"},
		{in: "/kubepods/burstable/pod123/abc", want: "/kubepods/burstable/pod123/abc"},
		{in: "system.slice:cri-containerd:abc", want: "/system.slice/cri-containerd-abc.scope"},
		{in: "kubepods-burstable-pod12.slice:cri-containerd:abc", want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice/cri-containerd-abc.scope"},
		{in: ":cri-containerd:abc", want: "/system.slice/cri-containerd-abc.scope"},
		{in: "-.slice:p:n", want: "/p-n.scope"},
		{in: "relative/path", err: "not a clean absolute path"},
		{in: "/a/../../etc", err: "not a clean absolute path"},
		{in: "/", err: "not a clean absolute path"},
		{in: "a.slice:p", err: "neither a path nor slice:prefix:name"},
		{in: "a.slice:p:../../x", err: "bad component"},
		{in: "notaslice:p:n", err: "is not a slice"},
		{in: "a--b.slice:p:n", err: "not a valid slice name"},
	} {
		got, err := cgroupfsPath(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: %q, %v; want an error saying %q", tt.in, got, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%q: %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
