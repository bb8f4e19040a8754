package vm

import (
	"bytes"
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

// inputWindow is how far the host's stdin may run ahead of the process:
// the most the agent buffers per stream.
const inputWindow = 1 << 20

// stdioPort carries processes' streams on the guest's stdio port (see
// agentapi.StdioPortName): it hands each output stream its frames, and
// sends stdin within the credits the guest returns. What the guest sends
// is checked against what the host asked for: a frame for a stream never
// opened, beyond a stream's window, a credit for more than was sent, or a
// malformed frame ends the port for every stream with ErrBadReply; nothing
// the guest sends makes the host buffer more than the windows it gave.
type stdioPort struct {
	conn net.Conn

	mu      sync.Mutex
	last    uint32 // the last stream id given out
	streams map[uint32]*portStream
	credits map[uint32]uint32 // to send, by stream
	detach  []uint32          // to send
	err     error             // why the port stopped

	scratch []byte // small frames are read into this (by read only)

	kick chan struct{} // credits or detaches to send
	done chan struct{} // closed once the port has stopped
}

// portStream is one stream as the host holds it: output (chunks received,
// not yet written out), or stdin (input).
type portStream struct {
	input  bool
	chunks [][]byte
	// room is what the guest may still send of an output stream, what
	// the host may still send of stdin.
	room int64
	// sent is stdin the guest has not credited yet.
	sent int64
	// ended: the output's end arrived, or the process takes no more stdin.
	ended bool
	ready chan struct{} // a chunk, a credit or the end arrived
}

func newStdioPort(conn net.Conn) *stdioPort {
	o := &stdioPort{
		conn:    conn,
		streams: map[uint32]*portStream{},
		credits: map[uint32]uint32{},
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	go o.read()
	go o.write()
	return o
}

// open registers a new stream with a full window.
func (o *stdioPort) open(input bool) (uint32, *portStream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return 0, nil, o.err
	}
	o.last++
	s := &portStream{input: input, room: outputWindow, ready: make(chan struct{}, 1)}
	if input {
		s.room = inputWindow
	}
	o.streams[o.last] = s
	return o.last, s, nil
}

// close forgets a stream; one that has not ended is detached in the guest.
func (o *stdioPort) close(id uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.streams[id]
	if !ok {
		return
	}
	delete(o.streams, id)
	delete(o.credits, id)
	if !s.ended && !s.input {
		o.detach = append(o.detach, id)
		o.poke()
	}
}

// next returns the stream's next chunk, or ended, waiting for one until
// cancel is closed or the port stops.
func (o *stdioPort) next(s *portStream, cancel <-chan struct{}) (chunk []byte, ended bool, err error) {
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

var errCanceled = errors.New("stdio copy canceled")

// credited takes the guest's credit for n bytes of stdin: never more than
// it was sent.
func (o *stdioPort) credited(id uint32, s *portStream, n uint32) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if int64(n) > s.sent {
		return fmt.Errorf("credit of %d bytes for stream %d, which had %d outstanding", n, id, s.sent)
	}
	s.sent -= int64(n)
	s.room += int64(n)
	signal(s.ready)
	return nil
}

// send sends data (nil: the end) on stdin stream id, waiting for room in
// its window; it returns how much it sent.
func (o *stdioPort) send(id uint32, s *portStream, data []byte, cancel <-chan struct{}) (int, error) {
	for {
		o.mu.Lock()
		room, ended, err := s.room, s.ended, o.err
		o.mu.Unlock()
		switch {
		case err != nil:
			return 0, err
		case ended:
			return 0, errInputRefused
		case data == nil:
			_, err := o.conn.Write(agentapi.FrameHeader{Kind: agentapi.FrameEnd, Stream: id}.Marshal(nil))
			return 0, o.why(err)
		case room > 0:
			n := int(min(room, int64(len(data)), agentapi.MaxFrameData))
			o.mu.Lock()
			s.room -= int64(n)
			s.sent += int64(n)
			o.mu.Unlock()
			// One write per frame: the connection writes it whole,
			// whatever else writes to it.
			b := agentapi.FrameHeader{Kind: agentapi.FrameData, Stream: id, Len: uint32(n)}.Marshal(make([]byte, 0, agentapi.FrameHeaderSize+n))
			_, err := o.conn.Write(append(b, data[:n]...))
			return n, o.why(err)
		}
		select {
		case <-s.ready:
		case <-o.done:
		case <-cancel:
			return 0, errCanceled
		}
	}
}

// why is the port's reason for a failed write, where it stopped.
func (o *stdioPort) why(err error) error {
	if err == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return o.err
	}
	return err
}

// errInputRefused: the process takes no more stdin (it closed it, or it
// is gone).
var errInputRefused = errors.New("the process takes no more input")

// credit returns n bytes of room to the stream: they were written out.
func (o *stdioPort) credit(id uint32, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.streams[id]
	if !ok || s.ended {
		return
	}
	s.room += int64(n)
	o.credits[id] += uint32(n)
	if o.credits[id] >= creditBatch {
		o.poke()
	}
}

// creditBatch is how much output the host writes out before it returns the
// room to the guest: each credit wakes the agent, which costs more under
// emulation than the bytes. What is held back is less than a quarter of
// the window, so a guest out of room waits for the host's writes, never
// for a credit held back.
const creditBatch = outputWindow / 4

func (o *stdioPort) poke() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// read takes the guest's frames until the port closes or breaks a rule.
func (o *stdioPort) read() {
	var hdr [agentapi.FrameHeaderSize]byte
	for {
		if _, err := io.ReadFull(o.conn, hdr[:]); err != nil {
			o.stop(fmt.Errorf("stdio port: %w", err))
			return
		}
		if err := o.frame(hdr[:]); err != nil {
			o.stop(fmt.Errorf("stdio port: %w: %w", err, ErrBadReply))
			return
		}
	}
}

// frame checks and takes one frame whose header is hdr.
func (o *stdioPort) frame(hdr []byte) error {
	h, err := agentapi.ParseFrameHeader(hdr)
	if err != nil {
		return err
	}
	if h.Kind != agentapi.FrameData && h.Kind != agentapi.FrameEnd && h.Kind != agentapi.FrameCredit {
		return fmt.Errorf("%v frame from the guest", h.Kind)
	}
	o.mu.Lock()
	s := o.streams[h.Stream]
	issued := h.Stream != 0 && h.Stream <= o.last
	o.mu.Unlock()
	if !issued {
		return fmt.Errorf("%v frame for stream %d, which the host never opened", h.Kind, h.Stream)
	}
	if s != nil && s.input && h.Kind == agentapi.FrameData {
		return fmt.Errorf("data frame for stream %d, which is stdin", h.Stream)
	}
	if s != nil && !s.input && h.Kind == agentapi.FrameCredit {
		return fmt.Errorf("credit frame for stream %d, which is output", h.Stream)
	}
	if h.Kind == agentapi.FrameCredit {
		if s != nil {
			return o.credited(h.Stream, s, h.Len)
		}
		return nil
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
	// Whole pieces are read into pooled buffers: streaming output then
	// allocates little per frame (a fresh buffer per frame kept the
	// shim's GC busy) and the copy starts on a frame's first piece.
	left := int(h.Len)
	for ; left >= pieceSize; left -= pieceSize {
		piece := *pieces.Get().(*[]byte)
		if _, err := io.ReadFull(o.conn, piece); err != nil {
			putPiece(piece)
			return err
		}
		o.mu.Lock()
		s.chunks = append(s.chunks, piece)
		o.mu.Unlock()
		signal(s.ready)
	}
	if left > 0 {
		return o.small(s, left)
	}
	return nil
}

// small takes the last n (< pieceSize) bytes of a data frame for s. They
// join the stream's last chunk when that has not been taken and stays
// within a piece: a guest sending tiny frames then makes the host hold
// about what it sent (a buffer per frame and its slice entry would hold
// ~30 times a window of 1-byte frames).
func (o *stdioPort) small(s *portStream, n int) error {
	if o.scratch == nil {
		o.scratch = make([]byte, pieceSize)
	}
	b := o.scratch[:n]
	if _, err := io.ReadFull(o.conn, b); err != nil {
		return err
	}
	o.mu.Lock()
	if last := len(s.chunks) - 1; last >= 0 && len(s.chunks[last])+n <= pieceSize {
		s.chunks[last] = append(s.chunks[last], b...)
	} else {
		s.chunks = append(s.chunks, bytes.Clone(b))
	}
	o.mu.Unlock()
	signal(s.ready)
	return nil
}

// pieceSize bounds the buffers output is read into.
const pieceSize = 64 << 10

var pieces = sync.Pool{New: func() any { b := make([]byte, pieceSize); return &b }}

// putPiece returns a chunk once its bytes are written out; only whole
// pieces go back to the pool.
func putPiece(b []byte) {
	if cap(b) != pieceSize {
		return
	}
	b = b[:pieceSize]
	pieces.Put(&b)
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
func (o *stdioPort) write() {
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
			o.stop(fmt.Errorf("stdio port: %w", err))
			return
		}
	}
}

// stop ends the port for every stream; the first reason stays.
func (o *stdioPort) stop(err error) {
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
func (o *stdioPort) Close() {
	if o != nil {
		o.stop(ErrStopped)
	}
}
