package agent

import (
	"sync"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// inStream is one process's stdin as the agent holds it: what the host
// sent and the process has not taken yet.
type inStream struct {
	queue  [][]byte
	queued int
	window int
	ended  bool // the host sent EOF
	gone   bool // the port went away
	wake   chan struct{}
}

// attachInput registers stdin stream id; false if the id is taken.
func (o *stdioPort) attachInput(id uint32, window uint32) (*inStream, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.taken(id) {
		return nil, false
	}
	s := &inStream{window: int(window), wake: make(chan struct{}, 1)}
	o.inputs[id] = s
	return s, true
}

// input queues what the host sent for stream id (nil: its end). The host
// keeps to the window; what goes beyond it is dropped with a warning
// rather than held.
func (o *stdioPort) input(id uint32, data []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.inputs[id]
	switch {
	case s == nil:
		// A stream whose process is gone.
	case data == nil:
		s.ended = true
		wake(s.wake)
	case s.queued+len(data) > s.window:
		logf(levelWarn, "stdin stream %d: %d bytes beyond the window dropped", id, len(data))
	default:
		s.queue = append(s.queue, data)
		s.queued += len(data)
		wake(s.wake)
	}
}

// next returns the stream's next chunk, or ended, waiting until there is
// one; stop once the port is gone or done is closed.
func (o *stdioPort) nextInput(s *inStream, done <-chan struct{}) (chunk []byte, ended, stop bool) {
	for {
		o.mu.Lock()
		switch {
		case s.gone:
			o.mu.Unlock()
			return nil, false, true
		case len(s.queue) > 0:
			chunk = s.queue[0]
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.queued -= len(chunk)
			o.mu.Unlock()
			return chunk, false, false
		case s.ended:
			o.mu.Unlock()
			return nil, true, false
		}
		o.mu.Unlock()
		select {
		case <-s.wake:
		case <-done:
			return nil, false, true
		}
	}
}

// pull writes stream id to the process's stdin, crediting the host for
// each chunk once the process took it, until the host's end (then the
// process gets EOF), the process's streams are released (done) or the
// process no longer takes input (the host is told with an end frame, and
// stops sending).
func (o *stdioPort) pull(id uint32, s *inStream, pio *processIO, done <-chan struct{}) {
	defer recoverPanic("stdin")
	defer func() {
		o.mu.Lock()
		delete(o.inputs, id)
		o.mu.Unlock()
	}()
	for {
		chunk, ended, stop := o.nextInput(s, done)
		switch {
		case stop:
			return
		case ended:
			pio.closeStdin()
			return
		}
		n := len(chunk)
		err := pio.writeInput(chunk)
		putInput(chunk)
		if err != nil {
			logf(levelDebug, "stdin stream %d: %v", id, err)
			if err := o.frame(agentapi.FrameHeader{Kind: agentapi.FrameEnd, Stream: id}, nil); err != nil {
				logf(levelWarn, "end of stdin stream %d: %v", id, err)
			}
			return
		}
		if err := o.frame(agentapi.FrameHeader{Kind: agentapi.FrameCredit, Stream: id, Len: uint32(n)}, nil); err != nil {
			logf(levelWarn, "credit of stdin stream %d: %v", id, err)
			return
		}
	}
}

// inputPiece is the size of the pooled buffers stdin frames are read
// into: the host sends streaming stdin in frames of up to 128 KiB, and a
// fresh buffer per frame kept the collector at ~15% of the guest's CPU
// while stdin streamed.
const inputPiece = 128 << 10

var inputPieces = sync.Pool{New: func() any { b := make([]byte, inputPiece); return &b }}

// getInput returns a buffer for an n-byte frame: pooled for the large
// frames of streaming input, its own size for small ones, so that queued
// frames hold about what the host sent.
func getInput(n int) []byte {
	if n < inputPiece/4 || n > inputPiece {
		return make([]byte, n)
	}
	return (*inputPieces.Get().(*[]byte))[:n]
}

// putInput gives back a buffer from getInput once the process took it.
func putInput(b []byte) {
	if cap(b) != inputPiece {
		return
	}
	b = b[:inputPiece]
	inputPieces.Put(&b)
}
