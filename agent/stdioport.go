package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// stdioPort carries processes' streams on the stdio port, as frames (see
// agentapi.StdioPortName): output to the host (output.go), stdin from it
// (input.go).
type stdioPort struct {
	name   string
	opened chan struct{} // closed once f or openErr is set
	once   sync.Once
	f      *os.File
	raw    syscall.RawConn

	openErr error

	wmu sync.Mutex // one frame at a time on the port

	mu      sync.Mutex
	streams map[uint32]*outStream
	inputs  map[uint32]*inStream
}

func newStdioPort(name string) *stdioPort {
	return &stdioPort{name: name, opened: make(chan struct{}), streams: map[uint32]*outStream{}, inputs: map[uint32]*inStream{}}
}

// openNow opens the port if the guest has it already (a template's VM
// saves with it open); it reports whether it did.
func (o *stdioPort) openNow() bool {
	dev, ok := portNow(o.name)
	if ok {
		o.once.Do(func() { o.setup(dev, nil) })
	}
	return ok
}

// open waits for the port, which arrives through the device's control
// queue, and opens it.
func (o *stdioPort) open(ctx context.Context) {
	if o.isOpen() {
		return
	}
	dev, err := findPort(ctx, o.name)
	o.once.Do(func() { o.setup(dev, err) })
}

func (o *stdioPort) isOpen() bool {
	select {
	case <-o.opened:
		return true
	default:
		return false
	}
}

func (o *stdioPort) setup(dev string, err error) {
	defer close(o.opened)
	if err == nil {
		// Non-blocking (os.OpenFile on a character device): the
		// runtime's poller waits for room in the device's queue.
		o.f, err = os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err == nil {
		o.raw, err = o.f.SyscallConn()
	}
	if err != nil {
		o.openErr = fmt.Errorf("stdio port %s: %w", o.name, err)
		logf(levelWarn, "%v", o.openErr)
		return
	}
	go o.read()
}

// ready waits until the port is open.
func (o *stdioPort) ready(ctx context.Context) error {
	select {
	case <-o.opened:
		return o.openErr
	case <-ctx.Done():
		return fmt.Errorf("stdio port %s not open yet: %w", o.name, ctx.Err())
	}
}

// read takes the host's frames: stdin data and ends, output credits and
// detaches. It never blocks on a process: stdin is queued, at most the
// window the host was given.
func (o *stdioPort) read() {
	defer recoverPanic("stdio port")
	var hdr [agentapi.FrameHeaderSize]byte
	for {
		if err := o.readFull(hdr[:]); err != nil {
			logf(levelWarn, "stdio port: %v; streams stop", err)
			o.stopAll()
			return
		}
		h, err := agentapi.ParseFrameHeader(hdr[:])
		if err == nil && h.Kind == agentapi.FrameData && h.Len > agentapi.MaxFrameData {
			err = fmt.Errorf("data frame of %d bytes", h.Len)
		}
		if err != nil {
			logf(levelWarn, "stdio port: bad frame from the host (%v); streams stop", err)
			o.stopAll()
			return
		}
		switch h.Kind {
		case agentapi.FrameData:
			data := getInput(int(h.Len))
			if err := o.readFull(data); err != nil {
				logf(levelWarn, "stdio port: %v; streams stop", err)
				o.stopAll()
				return
			}
			o.input(h.Stream, data)
		case agentapi.FrameEnd:
			o.input(h.Stream, nil)
		case agentapi.FrameCredit, agentapi.FrameDetach:
			o.mu.Lock()
			if s := o.streams[h.Stream]; s != nil {
				if h.Kind == agentapi.FrameDetach {
					s.detached = true
				} else {
					s.credit = min(s.credit+int64(h.Len), agentapi.MaxWindow)
				}
				wake(s.wake)
			}
			o.mu.Unlock()
		default:
			logf(levelWarn, "stdio port: %v frame from the host ignored", h.Kind)
		}
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// readFull reads len(b) bytes from the port. The port reads end of file
// while the host's end is not connected: then it waits for the host.
func (o *stdioPort) readFull(b []byte) error {
	for done := 0; done < len(b); {
		n, err := o.f.Read(b[done:])
		done += n
		switch {
		case errors.Is(err, io.EOF):
			time.Sleep(20 * time.Millisecond)
		case err != nil:
			return err
		}
	}
	return nil
}

// taken says whether a stream has id; o.mu is held.
func (o *stdioPort) taken(id uint32) bool {
	_, out := o.streams[id]
	_, in := o.inputs[id]
	return out || in
}

// stopAll ends every stream: the port is gone.
func (o *stdioPort) stopAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.streams {
		s.detached = true
		wake(s.wake)
	}
	for _, s := range o.inputs {
		s.gone = true
		wake(s.wake)
	}
}

// frame writes a frame under the port's lock.
func (o *stdioPort) frame(h agentapi.FrameHeader, data []byte) error {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	return o.writeAll(append(h.Marshal(nil), data...))
}

// writeAll writes b to the port; the device takes at most 32 KiB a write.
func (o *stdioPort) writeAll(b []byte) error {
	for len(b) > 0 {
		n, err := o.f.Write(b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
