package agentapi

import (
	"strings"
	"testing"
)

func TestFrameHeader(t *testing.T) {
	h := FrameHeader{Kind: FrameData, Stream: 0x01020304, Len: MaxFrameData}
	b := h.Marshal([]byte("x"))
	if len(b) != 1+FrameHeaderSize {
		t.Fatalf("marshalled to %d bytes", len(b))
	}
	got, err := ParseFrameHeader(b[1:])
	if err != nil || got != h {
		t.Fatalf("parsed %+v, %v; want %+v", got, err, h)
	}
	if _, err := ParseFrameHeader(b[1:FrameHeaderSize]); err == nil || !strings.Contains(err.Error(), "11 bytes") {
		t.Errorf("short header: %v", err)
	}
	b[2] = 1
	if _, err := ParseFrameHeader(b[1:]); err == nil || !strings.Contains(err.Error(), "padding") {
		t.Errorf("padding: %v", err)
	}
	if s := FrameKind(9).String(); s != "kind 9" {
		t.Errorf("unknown kind reads %q", s)
	}
}
