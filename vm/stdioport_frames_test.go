package vm

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"unsafe"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// TestOutputPiecesAndCredits plays the guest's side of an output stream
// on a socket pair: it sends whole windows in the largest frames, and
// more only as credits come. Every byte must come out in order, though
// the host reads frames into pooled pieces that it reuses, and the host
// returns room in batches (creditBatch), not a credit per piece: each
// credit wakes the agent.
func TestOutputPiecesAndCredits(t *testing.T) {
	o, guest, id, st := outputStream(t)
	const total = 4 * outputWindow
	data := make([]byte, total)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}

	credits := make(chan uint32, total) // never full: a credit is at least a byte
	creditFrames := 0                   // the host sent
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the guest's reader: credit frames
		defer wg.Done()
		defer close(credits)
		var hdr [agentapi.FrameHeaderSize]byte
		for {
			if _, err := io.ReadFull(guest, hdr[:]); err != nil {
				return
			}
			h, err := agentapi.ParseFrameHeader(hdr[:])
			if err != nil || h.Kind != agentapi.FrameCredit || h.Stream != id {
				t.Errorf("the host sent %+v (%v), want credits for stream %d", h, err, id)
				return
			}
			creditFrames++
			credits <- h.Len
		}
	}()
	go func() { // the guest's writer: data within its window
		defer wg.Done()
		room := int64(outputWindow)
		for sent := 0; sent < total; {
			for room == 0 {
				n, ok := <-credits
				if !ok {
					t.Error("the port closed while the guest waited for room")
					return
				}
				room += int64(n)
			}
			n := min(int(room), agentapi.MaxFrameData, total-sent)
			frame := agentapi.FrameHeader{Kind: agentapi.FrameData, Stream: id, Len: uint32(n)}.Marshal(nil)
			if _, err := guest.Write(append(frame, data[sent:sent+n]...)); err != nil {
				t.Error(err)
				return
			}
			sent += n
			room -= int64(n)
		}
		if _, err := guest.Write(agentapi.FrameHeader{Kind: agentapi.FrameEnd, Stream: id}.Marshal(nil)); err != nil {
			t.Error(err)
		}
	}()

	var got bytes.Buffer
	for {
		chunk, ended, err := o.next(st, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ended {
			break
		}
		if len(chunk) > pieceSize {
			t.Fatalf("a piece of %d bytes, more than %d", len(chunk), pieceSize)
		}
		got.Write(chunk)
		o.credit(id, len(chunk))
		putPiece(chunk)
	}
	o.Close()
	guest.Close()
	wg.Wait()
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("%d bytes out, want the %d sent, in order", got.Len(), len(data))
	}
	// The host wrote out 4 windows: at most one credit per 512 KiB,
	// however small the pieces.
	if max := total / (512 << 10); creditFrames > max {
		t.Errorf("the host sent %d credit frames for %d bytes, want at most %d", creditFrames, total, max)
	}
}

// TestTinyFramesHeld: a guest that fills a stream's whole window with
// 1-byte frames while the host is not writing out makes the host hold
// about what it sent: the frames join the stream's last chunk, never a
// buffer and a slice entry each (~30 bytes held per byte sent), nor a
// pooled piece each (64 KiB per byte).
func TestTinyFramesHeld(t *testing.T) {
	o, guest, id, st := outputStream(t)
	frame := agentapi.FrameHeader{Kind: agentapi.FrameData, Stream: id, Len: 1}.Marshal(nil)
	frame = append(frame, 'x')
	go func() {
		// Many frames per write: net.Pipe hands each write over whole.
		batch := bytes.Repeat(frame, 4096)
		for sent := 0; sent < outputWindow; sent += 4096 {
			if _, err := guest.Write(batch); err != nil {
				return
			}
		}
		guest.Write(agentapi.FrameHeader{Kind: agentapi.FrameEnd, Stream: id}.Marshal(nil))
	}()
	for {
		o.mu.Lock()
		ended := st.ended
		o.mu.Unlock()
		if ended {
			break
		}
		select {
		case <-st.ready:
		case <-o.done:
			t.Fatal("the port stopped")
		}
	}
	o.mu.Lock()
	held, got, chunks := cap(st.chunks)*int(unsafe.Sizeof([]byte(nil))), 0, len(st.chunks)
	for _, c := range st.chunks {
		held += cap(c)
		got += len(c)
		if len(c) > pieceSize {
			t.Errorf("a chunk of %d bytes, more than a piece", len(c))
		}
	}
	o.mu.Unlock()
	t.Logf("%d bytes sent in 1-byte frames, held in %d chunks of %d bytes of buffers", got, chunks, held)
	if got != outputWindow {
		t.Fatalf("the host holds %d bytes, want the %d sent", got, outputWindow)
	}
	if held > 2*outputWindow {
		t.Errorf("the host holds %d bytes of buffers for %d bytes sent, want at most twice that", held, outputWindow)
	}
}

// outputStream is a stdio port on a pipe, closed when the test ends, with
// one output stream open; guest is the guest's end.
func outputStream(t *testing.T) (*stdioPort, net.Conn, uint32, *portStream) {
	host, guest := net.Pipe()
	o := newStdioPort(host)
	t.Cleanup(o.Close)
	id, st, err := o.open(false)
	if err != nil {
		t.Fatal(err)
	}
	return o, guest, id, st
}
