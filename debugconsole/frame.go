// Package debugconsole is the debug console's socket: how
// `containerd-shim-podvm-v2 console` and a shim relay a shell in the guest.
// Each direction is a stream of frames: a type byte, a big-endian uint32
// length and that many bytes.
package debugconsole

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// SocketName is the console socket in a sandbox's state directory; it
// exists only while the sandbox's VM runs with the console on.
const SocketName = "console.sock"

// FrameType says what a frame carries.
type FrameType byte

const (
	// Open is the client's first frame: a Hello in JSON.
	Open FrameType = 'o'
	// Data is terminal bytes, either way.
	Data FrameType = 'd'
	// Resize is the client's terminal size: Size's encoding.
	Resize FrameType = 'r'
	// EOF says the client's input has ended.
	EOF FrameType = 'e'
	// Exit is the shim's last frame: the shell's exit status, a big-endian
	// int32.
	Exit FrameType = 'x'
	// Error is the shim's last frame when there is no shell: the reason.
	Error FrameType = '!'
)

// maxFrame bounds one frame: larger lengths mean a peer that does not
// speak this protocol.
const maxFrame = 4 << 20

// Hello opens a console.
type Hello struct {
	// Terminal asks for a shell on a pty, for a client on a terminal;
	// without it the shell reads a script from its input and EOF ends it.
	Terminal bool   `json:"terminal"`
	Term     string `json:"term,omitempty"`
	Size     Size   `json:"size"`
}

// Size is a terminal's size in characters.
type Size struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// Bytes is the size in a Resize frame.
func (s Size) Bytes() []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, s.Width)
	binary.BigEndian.PutUint16(b[2:], s.Height)
	return b
}

// ParseSize reads a Resize frame's payload.
func ParseSize(b []byte) (Size, error) {
	if len(b) != 4 {
		return Size{}, fmt.Errorf("resize frame of %d bytes, want 4", len(b))
	}
	return Size{Width: binary.BigEndian.Uint16(b), Height: binary.BigEndian.Uint16(b[2:])}, nil
}

// ExitBytes is the payload of an Exit frame.
func ExitBytes(status int32) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(status))
}

// ParseExit reads an Exit frame's payload.
func ParseExit(b []byte) (int32, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("exit frame of %d bytes, want 4", len(b))
	}
	return int32(binary.BigEndian.Uint32(b)), nil
}

// Sender writes frames from several goroutines, one whole frame at a time.
type Sender struct {
	mu sync.Mutex
	w  io.Writer
}

// NewSender sends frames on w.
func NewSender(w io.Writer) *Sender { return &Sender{w: w} }

// Send writes one frame.
func (s *Sender) Send(t FrameType, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteFrame(s.w, t, payload)
}

// Hello sends the Open frame.
func (s *Sender) Hello(h Hello) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteHello(s.w, h)
}

// WriteFrame writes one frame. Callers that write from several goroutines
// use a Sender.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	b := make([]byte, 5, 5+len(payload))
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	_, err := w.Write(append(b, payload...))
	return err
}

// WriteHello writes the Open frame.
func WriteHello(w io.Writer, h Hello) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return WriteFrame(w, Open, b)
}

// ParseHello reads an Open frame's payload.
func ParseHello(b []byte) (Hello, error) {
	var h Hello
	if err := json.Unmarshal(b, &h); err != nil {
		return Hello{}, fmt.Errorf("open frame: %w", err)
	}
	return h, nil
}

// ReadFrame reads one frame. At a clean end of the stream it returns
// io.EOF.
func ReadFrame(r io.Reader) (FrameType, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("truncated frame header: %w", err)
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes: not a podvm console peer", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, fmt.Errorf("truncated frame: %w", err)
	}
	return FrameType(h[0]), b, nil
}
