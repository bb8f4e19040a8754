package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/vm"
)

// Stdio is what containerd gives for a process's streams: FIFO paths, or
// binary:// and file:// URIs for logging.
type Stdio struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
}

// hostIO is the host end of a process's streams: containerd's FIFOs (or a
// log binary or file) on one side, the agent's Stdio service on the other.
type hostIO struct {
	stdin          io.ReadCloser
	stdinPath      string
	stdout, stderr io.WriteCloser
	logger         *exec.Cmd // a binary:// logger

	outputs   sync.WaitGroup
	done      chan struct{} // closed when every output stream has ended
	closeOnce sync.Once
}

// openIO opens what the paths name. The FIFOs' other ends belong to
// containerd's client, which may open them only after Create returns (CRI
// does): ctx must outlive the request, since the fifo package closes a
// FIFO whose open is still pending when ctx ends.
func openIO(ctx context.Context, id, namespace string, s Stdio) (_ *hostIO, retErr error) {
	h := &hostIO{done: make(chan struct{})}
	defer func() {
		if retErr != nil {
			h.close()
		}
	}()
	if s.Stdin != "" {
		f, err := fifo.OpenFifo(ctx, s.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open stdin fifo %s: %w", s.Stdin, err)
		}
		h.stdin, h.stdinPath = f, s.Stdin
	}
	u, err := url.Parse(s.Stdout)
	if err == nil && u.Scheme != "" && u.Scheme != "fifo" {
		switch u.Scheme {
		case "binary":
			if err := h.startLogger(ctx, u, id, namespace); err != nil {
				return nil, err
			}
		case "file":
			f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
			if err != nil {
				return nil, fmt.Errorf("open log file %s: %w", u.Path, err)
			}
			// Both streams go to the one file, as with runc; it is
			// closed once both have ended.
			shared := &sharedFile{f: f, users: 2}
			h.stdout, h.stderr = &sharedUse{s: shared}, &sharedUse{s: shared}
		default:
			return nil, fmt.Errorf("unsupported stdio scheme %q in %s: use a FIFO path, binary:// or file://", u.Scheme, s.Stdout)
		}
		return h, nil
	}
	open := func(path string) (io.WriteCloser, error) {
		if path == "" {
			return nil, nil
		}
		if u, err := url.Parse(path); err == nil && u.Scheme == "fifo" {
			path = u.Path
		}
		f, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open fifo %s: %w", path, err)
		}
		return f, nil
	}
	if h.stdout, err = open(s.Stdout); err != nil {
		return nil, err
	}
	if !s.Terminal {
		if h.stderr, err = open(s.Stderr); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// sharedFile is one file written by two streams: each Close drops a user,
// and the last closes the file.
type sharedFile struct {
	mu    sync.Mutex
	f     *os.File
	users int
}

func (s *sharedFile) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Write(b)
}

func (s *sharedFile) release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users--; s.users == 0 {
		return s.f.Close()
	}
	return nil
}

// sharedUse is one stream's hold on a sharedFile; closing it twice
// releases it once.
type sharedUse struct {
	s    *sharedFile
	once sync.Once
}

func (u *sharedUse) Write(b []byte) (int, error) { return u.s.Write(b) }

func (u *sharedUse) Close() (err error) {
	u.once.Do(func() { err = u.s.release() })
	return err
}

// startLogger runs a binary:// logger the way containerd's runc shim does:
// stdout and stderr on fds 3 and 4, a readiness pipe on fd 5.
func (h *hostIO) startLogger(ctx context.Context, u *url.URL, id, namespace string) error {
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 {
			args = append(args, vs[0])
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return err
	}
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+namespace)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	err = cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		outW.Close()
		errW.Close()
		readyR.Close()
		return fmt.Errorf("start logging binary %s: %w", u.Path, err)
	}
	h.logger, h.stdout, h.stderr = cmd, outW, errW
	b := make([]byte, 1)
	_, err = readyR.Read(b)
	readyR.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("logging binary %s did not get ready: %w", u.Path, err)
	}
	return nil
}

// copy moves the process's stdout and stderr from the guest, and its stdin
// to the guest, until each stream ends.
func (h *hostIO) copy(ctx context.Context, g *vm.Guest, id, execID string) {
	pump := func(stream vm.Stream, w io.WriteCloser) {
		defer h.outputs.Done()
		if err := g.CopyOutput(ctx, id, execID, stream, w); err != nil {
			log.G(ctx).WithError(err).WithField("container", id).Debugf("%v copy ended", stream)
		}
		w.Close()
	}
	if h.stdout != nil {
		h.outputs.Add(1)
		go pump(vm.Stdout, h.stdout)
	}
	if h.stderr != nil {
		h.outputs.Add(1)
		go pump(vm.Stderr, h.stderr)
	}
	go func() {
		h.outputs.Wait()
		close(h.done)
	}()
	if h.stdin != nil {
		go h.copyInput(ctx, g, id, execID)
	}
}

func (h *hostIO) copyInput(ctx context.Context, g *vm.Guest, id, execID string) {
	// Once the client closes its end, the process sees EOF, as under runc.
	if err := g.CopyInput(ctx, id, execID, h.stdin); err != nil {
		log.G(ctx).WithError(err).WithField("container", id).Debug("stdin copy ended")
	}
}

// waitOutput waits until the process's output has been copied out, but no
// longer than max: a background child that keeps stdout open must not hold
// up the exit event forever.
func (h *hostIO) waitOutput(max time.Duration) bool {
	if h == nil {
		return true
	}
	select {
	case <-h.done:
		return true
	case <-time.After(max):
		return false
	}
}

// closeStdin lets stdin end (CloseIO). The FIFO is not closed here: what
// the client wrote before CloseIO may still be in it (containerd 2.x's CRI
// writes the last of an exec's stdin and calls CloseIO at once), and the
// copy delivers that and then EOF, once the client's end is closed: as
// under runc, whose shim drops its own writer of the FIFO on CloseIO. A
// client that never opened the FIFO leaves our reader waiting in open: a
// writer opened and closed at once lets it see EOF. It reports whether
// there was a stdin FIFO.
func (h *hostIO) closeStdin() bool {
	if h == nil || h.stdin == nil {
		return false
	}
	// ENXIO: no reader any more, the copy has ended.
	if fd, err := unix.Open(h.stdinPath, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	}
	return true
}

func (h *hostIO) close() {
	if h == nil {
		return
	}
	h.closeOnce.Do(func() {
		if h.stdin != nil {
			h.stdin.Close()
		}
		for _, w := range []io.WriteCloser{h.stdout, h.stderr} {
			if w != nil {
				w.Close()
			}
		}
		if h.logger != nil {
			stopLogger(h.logger)
		}
	})
}

// stopLogger lets a binary logger flush after its pipes closed, then ends
// it.
func stopLogger(cmd *exec.Cmd) {
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
