package agentapi

import (
	"encoding/binary"
	"fmt"
)

// Processes' output leaves the guest on a virtio-serial port of its own,
// OutputPortName, as frames: a FrameHeaderSize header, then for a data
// frame Len bytes. The port is reachable only by QEMU on the host (a socket
// pair) whatever the agent's transport, so it needs no hello. Every stream
// the host reads (AttachOutput) has an id the host chose and a window: the
// agent sends at most that many bytes beyond the credits the host returned
// as it wrote them out. A slow reader of one stream therefore never holds
// up another, and the host never buffers more than the windows it gave.
const (
	OutputPortName = "podvm.output"

	FrameHeaderSize = 12
	// MaxFrameData bounds one data frame; a longer one breaks the protocol.
	MaxFrameData = 1 << 20
	// MaxWindow bounds a stream's window.
	MaxWindow = 64 << 20
)

// FrameKind says what a frame carries.
type FrameKind uint8

const (
	// FrameData (guest to host): Len bytes of the stream's output follow.
	FrameData FrameKind = 1
	// FrameEnd (guest to host): the stream has ended (EOF); nothing
	// follows.
	FrameEnd FrameKind = 2
	// FrameCredit (host to guest): the host wrote out Len more bytes of
	// the stream; the agent may send that many more.
	FrameCredit FrameKind = 3
	// FrameDetach (host to guest): the host reads the stream no more.
	FrameDetach FrameKind = 4
)

func (k FrameKind) String() string {
	switch k {
	case FrameData:
		return "data"
	case FrameEnd:
		return "end"
	case FrameCredit:
		return "credit"
	case FrameDetach:
		return "detach"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// FrameHeader is laid out as: kind (1 byte), 3 zero bytes, stream id and
// length (little endian, 4 bytes each).
type FrameHeader struct {
	Kind   FrameKind
	Stream uint32
	Len    uint32
}

// Marshal appends the header to b.
func (h FrameHeader) Marshal(b []byte) []byte {
	b = append(b, byte(h.Kind), 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, h.Stream)
	return binary.LittleEndian.AppendUint32(b, h.Len)
}

// ParseFrameHeader reads a header from the first FrameHeaderSize bytes of
// b. It checks the layout only: what a kind or length may be is the
// reader's to check.
func ParseFrameHeader(b []byte) (FrameHeader, error) {
	if len(b) < FrameHeaderSize {
		return FrameHeader{}, fmt.Errorf("frame header of %d bytes, want %d", len(b), FrameHeaderSize)
	}
	if b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return FrameHeader{}, fmt.Errorf("frame header with padding % x", b[1:4])
	}
	return FrameHeader{
		Kind:   FrameKind(b[0]),
		Stream: binary.LittleEndian.Uint32(b[4:8]),
		Len:    binary.LittleEndian.Uint32(b[8:12]),
	}, nil
}
