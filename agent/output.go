package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// A process's output goes to the host as data frames: spliced from a pipe
// (its pages go to the device, not copied by the agent), read and written
// from a pty.

// outStream is one attached output stream's standing with the host.
type outStream struct {
	credit   int64
	detached bool
	wake     chan struct{} // a credit or a detach arrived
}

// attach registers stream id with its first window; false if the id is
// taken.
func (o *stdioPort) attach(id uint32, window uint32) (*outStream, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.taken(id) {
		return nil, false
	}
	s := &outStream{credit: int64(window), wake: make(chan struct{}, 1)}
	o.streams[id] = s
	return s, true
}

// waitCredit returns how much the stream may send now, waiting for a
// credit while it has none; 0 once the host detached or done is closed.
func (o *stdioPort) waitCredit(s *outStream, done <-chan struct{}) int64 {
	for {
		o.mu.Lock()
		credit, detached := s.credit, s.detached
		o.mu.Unlock()
		if detached {
			return 0
		}
		if credit > 0 {
			return credit
		}
		select {
		case <-s.wake:
		case <-done:
			return 0
		}
	}
}

func (o *stdioPort) spend(s *outStream, n int) {
	o.mu.Lock()
	s.credit -= int64(n)
	o.mu.Unlock()
}

// push sends src's output as stream id until it ends (then an end frame),
// the host detaches, or done is closed (the process's streams were
// released).
func (o *stdioPort) push(id uint32, s *outStream, src *os.File, terminal bool, done <-chan struct{}) {
	defer recoverPanic("output")
	defer func() {
		o.mu.Lock()
		delete(o.streams, id)
		o.mu.Unlock()
	}()
	if src == nil {
		// The process has no such stream: it ends at once.
		if err := o.frame(agentapi.FrameHeader{Kind: agentapi.FrameEnd, Stream: id}, nil); err != nil {
			logf(levelWarn, "end of output stream %d: %v", id, err)
		}
		return
	}
	pipe := isPipe(src)
	var buf []byte // for what is not spliced
	for {
		credit := o.waitCredit(s, done)
		if credit == 0 {
			return
		}
		limit := int(min(credit, agentapi.MaxFrameData))
		var n int
		var ended bool
		var err error
		if pipe && spliceable(src) {
			n, ended, err = o.splice(id, src, limit)
		} else {
			if buf == nil {
				buf = make([]byte, agentapi.FrameHeaderSize+64<<10)
			}
			n, ended, err = o.copy(id, src, buf, limit, terminal)
		}
		o.spend(s, n)
		if err != nil {
			logf(levelWarn, "output of stream %d: %v", id, err)
			ended = true
		}
		if ended {
			if err := o.frame(agentapi.FrameHeader{Kind: agentapi.FrameEnd, Stream: id}, nil); err != nil {
				logf(levelWarn, "end of output stream %d: %v", id, err)
			}
			return
		}
	}
}

// splice sends what the pipe holds now, up to limit bytes, waiting until
// it holds something; ended once it is empty and its writers are gone.
func (o *stdioPort) splice(id uint32, src *os.File, limit int) (int, bool, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, true, err
	}
	var avail int
	var ended bool
	var ioErr error
	err = rc.Read(func(fd uintptr) bool {
		avail, ended, ioErr = pipeState(int(fd))
		return ioErr != nil || ended || avail > 0
	})
	if err != nil {
		// Closed under us: the process's streams were released.
		return 0, true, nil
	}
	if ioErr != nil || ended {
		return 0, true, ioErr
	}
	n := min(avail, limit)
	o.wmu.Lock()
	defer o.wmu.Unlock()
	if err := o.writeAll(agentapi.FrameHeader{Kind: agentapi.FrameData, Stream: id, Len: uint32(n)}.Marshal(nil)); err != nil {
		return 0, true, err
	}
	// The header promised n bytes: they are in the pipe, whose only
	// reader is this goroutine.
	moved := 0
	for moved < n {
		var k int64
		var serr error
		werr := o.raw.Write(func(port uintptr) bool {
			cerr := rc.Control(func(fd uintptr) {
				k, serr = unix.Splice(int(fd), nil, int(port), nil, n-moved, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			})
			if cerr != nil {
				serr = cerr
			}
			return !errors.Is(serr, unix.EAGAIN)
		})
		if werr == nil && serr == nil && k == 0 {
			serr = io.ErrUnexpectedEOF
		}
		if werr != nil || serr != nil {
			// A device or kernel without splice: read and write what
			// is left, which keeps the frame whole.
			return n, false, o.copyRest(src, n-moved, errors.Join(werr, serr))
		}
		moved += int(k)
	}
	return n, false, nil
}

// pipeState says what the read end of a pipe holds: bytes to read, or
// ended (empty, and no writer is left), or neither (wait). One poll
// decides both: a process that writes its last line and exits between
// two separate looks (empty, then hung up) would otherwise lose that line.
func pipeState(fd int) (avail int, ended bool, err error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err = unix.Poll(fds, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case err != nil:
		return 0, false, err
	case fds[0].Revents&unix.POLLIN != 0:
		// This goroutine is the only reader: what poll saw stays.
		avail, err = unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
		return avail, false, err
	case fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0:
		return 0, true, nil
	}
	return 0, false, nil
}

// copyRest moves n bytes of a data frame whose splice failed by read and
// write; bytes that cannot be read are sent as zeros, which keeps the
// frames in step.
func (o *stdioPort) copyRest(src *os.File, n int, why error) error {
	logf(levelDebug, "output splice: %v; copying", why)
	buf := make([]byte, min(n, 64<<10))
	var readErr error
	for n > 0 {
		chunk := buf[:min(n, len(buf))]
		k := 0
		if readErr == nil {
			k, readErr = io.ReadFull(src, chunk)
		}
		clear(chunk[k:])
		if err := o.writeAll(chunk); err != nil {
			return err
		}
		n -= len(chunk)
	}
	if readErr != nil {
		return fmt.Errorf("output lost after a failed splice: %w", readErr)
	}
	return nil
}

// copy reads what src has (a pty master) and sends it as one frame.
func (o *stdioPort) copy(id uint32, src *os.File, buf []byte, limit int, terminal bool) (int, bool, error) {
	data := buf[agentapi.FrameHeaderSize:]
	data = data[:min(len(data), limit)]
	n, err := src.Read(data)
	if n > 0 {
		agentapi.FrameHeader{Kind: agentapi.FrameData, Stream: id, Len: uint32(n)}.Marshal(buf[:0])
		o.wmu.Lock()
		werr := o.writeAll(buf[:agentapi.FrameHeaderSize+n])
		o.wmu.Unlock()
		if werr != nil {
			return n, true, werr
		}
	}
	switch {
	case err == nil:
		return n, false, nil
	case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
		return n, true, nil
	case errors.Is(err, syscall.EIO) && terminal:
		// A pty master reads EIO once every slave end is closed.
		return n, true, nil
	}
	return n, true, err
}

// spliceable says whether the pipe is small enough to splice from: one
// splice to the port is one descriptor chain with an entry per page the
// pipe holds, and QEMU breaks the whole device (every port, the agent's
// too) on a chain of more than 1024 entries. The process holds the other
// end and may have grown its pipe: beyond 1 MiB only with CAP_SYS_RESOURCE,
// which lets it break its own VM in many ways; the check keeps a program
// that merely likes big pipes from doing so by accident.
func spliceable(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	size := 0
	_ = rc.Control(func(fd uintptr) { size, _ = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) })
	return size > 0 && size <= maxSplicePipe
}

// maxSplicePipe is the largest pipe spliced from: 256 pages, well within
// QEMU's limit.
const maxSplicePipe = 1 << 20

func isPipe(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeNamedPipe != 0
}
