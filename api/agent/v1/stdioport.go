package agentapi

import (
	"encoding/binary"
	"fmt"
)

// Processes' streams travel on a virtio-serial port of their own,
// StdioPortName, as frames: a FrameHeaderSize header, then for a data frame
// Len bytes. The port is reachable only by QEMU on the host (a socket pair)
// whatever the agent's transport, so it needs no hello. Every stream has an
// id the host chose (AttachOutput, AttachInput) and a window: its sender
// sends at most that many bytes beyond the credits its receiver returned as
// it wrote them out. A slow reader of one stream therefore never holds up
// another, and neither side buffers more than the windows. Each side sends
// data and end frames for the streams it writes (the guest: output; the
// host: stdin) and credits for the streams it reads.
const (
	StdioPortName = "podvm.stdio"

	FrameHeaderSize = 12
	// MaxFrameData bounds one data frame; a longer one breaks the protocol.
	MaxFrameData = 1 << 20
	// MaxWindow bounds a stream's window.
	MaxWindow = 64 << 20
)

// FrameKind says what a frame carries.
type FrameKind uint8

const (
	// FrameData: Len bytes of the stream follow.
	FrameData FrameKind = 1
	// FrameEnd: the stream has ended (EOF); nothing follows. From the
	// guest on an input stream: the process takes no more input.
	FrameEnd FrameKind = 2
	// FrameCredit: the receiver wrote out Len more bytes of the stream;
	// the sender may send that many more.
	FrameCredit FrameKind = 3
	// FrameDetach (host to guest): the host reads the output stream no
	// more.
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
