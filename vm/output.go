package vm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// outputWindow is how far a stream's output may run ahead of the host's
// writes: the most the host buffers per stream.
const outputWindow = 2 << 20

// outputs receives processes' output on the guest's output port and hands
// each stream its frames (see agentapi.OutputPortName). What the guest
// sends is checked against what the host asked for: a frame for a stream
// never opened, beyond a stream's window, or malformed ends the port for
// every stream with ErrBadReply; nothing the guest sends makes the host
// buffer more than the windows it gave.
type outputs struct {
	conn net.Conn

	mu      sync.Mutex
	last    uint32 // the last stream id given out
	streams map[uint32]*outStream
	credits map[uint32]uint32 // to send, by stream
	detach  []uint32          // to send
	err     error             // why the port stopped

	kick chan struct{} // credits or detaches to send
	done chan struct{} // closed once the port has stopped
}

// outStream is one stream's output as the host holds it.
type outStream struct {
	chunks [][]byte
	room   int64 // what the guest may still send
	ended  bool
	ready  chan struct{} // a chunk or the end arrived
}

func newOutputs(conn net.Conn) *outputs {
	o := &outputs{
		conn:    conn,
		streams: map[uint32]*outStream{},
		credits: map[uint32]uint32{},
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	go o.read()
	go o.write()
	return o
}

// open registers a new stream with a full window.
func (o *outputs) open() (uint32, *outStream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return 0, nil, o.err
	}
	o.last++
	s := &outStream{room: outputWindow, ready: make(chan struct{}, 1)}
	o.streams[o.last] = s
	return o.last, s, nil
}

// close forgets a stream; one that has not ended is detached in the guest.
func (o *outputs) close(id uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.streams[id]
	if !ok {
		return
	}
	delete(o.streams, id)
	delete(o.credits, id)
	if !s.ended {
		o.detach = append(o.detach, id)
		o.poke()
	}
}

// next returns the stream's next chunk, or ended, waiting for one until
// cancel is closed or the port stops.
func (o *outputs) next(s *outStream, cancel <-chan struct{}) (chunk []byte, ended bool, err error) {
	for {
		o.mu.Lock()
		switch {
		case len(s.chunks) > 0:
			chunk = s.chunks[0]
			s.chunks[0] = nil
			s.chunks = s.chunks[1:]
			o.mu.Unlock()
			return chunk, false, nil
		case s.ended:
			o.mu.Unlock()
			return nil, true, nil
		case o.err != nil:
			err := o.err
			o.mu.Unlock()
			return nil, false, err
		}
		o.mu.Unlock()
		select {
		case <-s.ready:
		case <-o.done:
		case <-cancel:
			return nil, false, errCanceled
		}
	}
}

var errCanceled = errors.New("output copy canceled")

// credit returns n bytes of room to the stream: they were written out.
func (o *outputs) credit(id uint32, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.streams[id]
	if !ok || s.ended {
		return
	}
	s.room += int64(n)
	o.credits[id] += uint32(n)
	o.poke()
}

func (o *outputs) poke() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// read takes the guest's frames until the port closes or breaks a rule.
func (o *outputs) read() {
	var hdr [agentapi.FrameHeaderSize]byte
	for {
		if _, err := io.ReadFull(o.conn, hdr[:]); err != nil {
			o.stop(fmt.Errorf("output port: %w", err))
			return
		}
		if err := o.frame(hdr[:]); err != nil {
			o.stop(fmt.Errorf("output port: %w: %w", err, ErrBadReply))
			return
		}
	}
}

// frame checks and takes one frame whose header is hdr.
func (o *outputs) frame(hdr []byte) error {
	h, err := agentapi.ParseFrameHeader(hdr)
	if err != nil {
		return err
	}
	if h.Kind != agentapi.FrameData && h.Kind != agentapi.FrameEnd {
		return fmt.Errorf("%v frame from the guest", h.Kind)
	}
	o.mu.Lock()
	s := o.streams[h.Stream]
	issued := h.Stream != 0 && h.Stream <= o.last
	o.mu.Unlock()
	if !issued {
		return fmt.Errorf("%v frame for stream %d, which the host never opened", h.Kind, h.Stream)
	}
	if h.Kind == agentapi.FrameEnd {
		if h.Len != 0 {
			return fmt.Errorf("end frame of stream %d with length %d", h.Stream, h.Len)
		}
		if s != nil {
			o.mu.Lock()
			s.ended = true
			o.mu.Unlock()
			signal(s.ready)
		}
		return nil
	}
	if h.Len == 0 || h.Len > agentapi.MaxFrameData {
		return fmt.Errorf("data frame of %d bytes for stream %d (at most %d)", h.Len, h.Stream, agentapi.MaxFrameData)
	}
	if s == nil {
		// A stream the host stopped reading: its last frames are
		// dropped, as a detached stream's are.
		_, err := io.CopyN(io.Discard, o.conn, int64(h.Len))
		return err
	}
	o.mu.Lock()
	room, ended := s.room, s.ended
	s.room -= int64(h.Len)
	o.mu.Unlock()
	if ended {
		return fmt.Errorf("data for stream %d after its end", h.Stream)
	}
	if int64(h.Len) > room {
		return fmt.Errorf("%d bytes for stream %d, which had room for %d", h.Len, h.Stream, room)
	}
	data := make([]byte, h.Len)
	if _, err := io.ReadFull(o.conn, data); err != nil {
		return err
	}
	o.mu.Lock()
	s.chunks = append(s.chunks, data)
	o.mu.Unlock()
	signal(s.ready)
	return nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// write sends credits and detaches. Credits for one stream add up while a
// write is under way, so a guest that does not read its port holds up
// this goroutine only, never a copy.
func (o *outputs) write() {
	for {
		select {
		case <-o.kick:
		case <-o.done:
			return
		}
		o.mu.Lock()
		var b []byte
		for id, n := range o.credits {
			b = agentapi.FrameHeader{Kind: agentapi.FrameCredit, Stream: id, Len: n}.Marshal(b)
		}
		for _, id := range o.detach {
			b = agentapi.FrameHeader{Kind: agentapi.FrameDetach, Stream: id}.Marshal(b)
		}
		clear(o.credits)
		o.detach = o.detach[:0]
		o.mu.Unlock()
		if _, err := o.conn.Write(b); err != nil {
			o.stop(fmt.Errorf("output port: %w", err))
			return
		}
	}
}

// stop ends the port for every stream; the first reason stays.
func (o *outputs) stop(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return
	}
	o.err = err
	o.conn.Close()
	close(o.done)
}

// Close stops the port (the VM is going); nil does nothing.
func (o *outputs) Close() {
	if o != nil {
		o.stop(ErrStopped)
	}
}
