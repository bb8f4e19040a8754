package agent

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// TestInputFrames plays the host on a socket pair: stdin in frames of
// every size, small ones held in buffers of their own and streaming ones
// in pooled pieces, within the window the credits allow. The process must
// get every byte in order (a piece reused while still queued would show
// as corruption).
func TestInputFrames(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	host := os.NewFile(uintptr(fds[1]), "host")
	defer host.Close()
	o := newStdioPort("test")
	o.f = os.NewFile(uintptr(fds[0]), "port")
	close(o.opened)
	defer o.f.Close()
	const window = 1 << 20
	s, ok := o.attachInput(7, window)
	if !ok {
		t.Fatal("stream 7 taken")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan struct{})
	defer close(done)
	go o.read()
	go o.pull(7, s, &processIO{stdin: w}, done)

	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	credits := make(chan uint32, len(data))
	go func() { // the host's reader: credits
		defer close(credits)
		var hdr [agentapi.FrameHeaderSize]byte
		for {
			if _, err := io.ReadFull(host, hdr[:]); err != nil {
				return
			}
			h, err := agentapi.ParseFrameHeader(hdr[:])
			if err != nil || h.Kind != agentapi.FrameCredit || h.Stream != 7 {
				t.Errorf("the agent sent %+v (%v), want credits for stream 7", h, err)
				return
			}
			credits <- h.Len
		}
	}()
	go func() { // the host's writer, within the window
		room := window
		for sent := 0; sent < len(data); {
			n := min(1+rand.IntN(inputPiece), len(data)-sent)
			for room < n {
				room += int(<-credits)
			}
			frame := agentapi.FrameHeader{Kind: agentapi.FrameData, Stream: 7, Len: uint32(n)}.Marshal(nil)
			if _, err := host.Write(append(frame, data[sent:sent+n]...)); err != nil {
				t.Error(err)
				return
			}
			sent += n
			room -= n
		}
		host.Write(agentapi.FrameHeader{Kind: agentapi.FrameEnd, Stream: 7}.Marshal(nil))
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the process read %d bytes, want the %d sent, in order", len(got), len(data))
	}
}
