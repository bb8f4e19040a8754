package agent

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// The template's warm-up builds the coders of the messages a pod's first
// calls use, its API's and the ones it borrows.
func TestWarmMessages(t *testing.T) {
	names := warmMessages()
	for _, want := range []protoreflect.FullName{
		"podvm.agent.v1.ExecProcessRequest", "google.protobuf.Empty", "google.rpc.Status",
		"ttrpc.Request", "ttrpc.Response",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s is not warmed up (warmed: %v)", want, names)
		}
	}
}
