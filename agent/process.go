package agent

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/agent/cinit"
	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// process is one process of a container: the init process or an exec.
type process struct {
	execID string
	lp     *libcontainer.Process
	// cinit, when set, is the process cinit made (the container's init,
	// or an exec'd process): waited for and signalled through it.
	cinit *cinit.Init
	io    *processIO
	pid   int

	// onExit, when set, runs once the process has exited, before that
	// is known.
	onExit   func()
	exited   chan struct{} // closed once the process has been waited for
	status   int           // exit status as runc reports it (128+signal when killed)
	exitedAt time.Time
}

// processIO holds the agent's ends of a process's standard streams.
type processIO struct {
	terminal bool
	stdin    *os.File // the agent writes here; nil without stdin
	stdout   *os.File // the agent reads here (the pty master with a terminal)
	stderr   *os.File
	// consoleSocket receives the pty master from runc init.
	consoleSocket *os.File
	// child holds the process's ends, closed once it has them.
	child []*os.File

	stdinMu   sync.Mutex
	attachMu  sync.Mutex
	attached  [3]bool // stdout's, stderr's (sent to the host), stdin's
	closeOnce sync.Once

	releasedOnce sync.Once
	released     chan struct{}
}

// pipeSize is the kernel buffer of output pipes: large enough that a fast
// writer rarely waits for the host, and at most maxSplicePipe, so that
// the output moves by splice.
const pipeSize = 1 << 20

// setupIO creates the streams cfg asks for and attaches them to lp.
func setupIO(cfg *agentapi.StdioConfig, lp *libcontainer.Process) (*processIO, error) {
	pio := &processIO{}
	if cfg == nil {
		cfg = &agentapi.StdioConfig{}
	}
	if cfg.Terminal {
		pio.terminal = true
		parent, child, err := utils.NewSockPair("console")
		if err != nil {
			return nil, err
		}
		pio.consoleSocket = parent
		pio.child = append(pio.child, child)
		lp.ConsoleSocket = child
		return pio, nil
	}
	fail := func(err error) (*processIO, error) {
		pio.closeChild()
		pio.close()
		return nil, err
	}
	if cfg.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		lp.Stdin, pio.stdin = r, w
		pio.child = append(pio.child, r)
	}
	out := func(enabled bool) (*os.File, *os.File, error) {
		if !enabled {
			return nil, nil, nil
		}
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		// Not r.Fd(): that would switch the pipe to blocking mode, and
		// reads with deadlines would then block for good.
		if rc, err := r.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
		}
		pio.child = append(pio.child, w)
		return r, w, nil
	}
	r, w, err := out(cfg.Stdout)
	if err != nil {
		return fail(err)
	}
	if w != nil {
		lp.Stdout, pio.stdout = w, r
	}
	r, w, err = out(cfg.Stderr)
	if err != nil {
		return fail(err)
	}
	if w != nil {
		lp.Stderr, pio.stderr = w, r
	}
	return pio, nil
}

// started is called once the process runs: the agent closes its copies of
// the process's ends (or stdout would never reach EOF) and, with a
// terminal, receives the pty master.
func (pio *processIO) started() error {
	pio.closeChild()
	if pio.consoleSocket == nil {
		return nil
	}
	master, err := utils.RecvFile(pio.consoleSocket)
	pio.consoleSocket.Close()
	pio.consoleSocket = nil
	if err != nil {
		return err
	}
	// Non-blocking, so that the runtime poller serves it and reads can
	// have deadlines.
	fd, err := unix.FcntlInt(master.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	master.Close()
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	master = os.NewFile(uintptr(fd), "console")
	pio.stdout, pio.stdin = master, master
	return nil
}

func (pio *processIO) closeChild() {
	for _, f := range pio.child {
		f.Close()
	}
	pio.child = nil
}

// close releases the agent's ends; a blocked read or write returns.
func (pio *processIO) close() {
	pio.closeOnce.Do(func() {
		for _, f := range []*os.File{pio.stdin, pio.stdout, pio.stderr, pio.consoleSocket} {
			if f != nil {
				f.Close()
			}
		}
		pio.closeChild()
		close(pio.releasedCh())
	})
}

// output returns the stream's file (nil if the process has none) and
// marks it attached: its output has one reader, once.
func (pio *processIO) output(stream agentapi.AttachOutputRequest_Stream) (f *os.File, ok bool) {
	i := 0
	f = pio.stdout
	if stream == agentapi.AttachOutputRequest_STDERR {
		i, f = 1, pio.stderr
	}
	pio.attachMu.Lock()
	defer pio.attachMu.Unlock()
	if pio.attached[i] {
		return nil, false
	}
	pio.attached[i] = true
	return f, true
}

// attachInput marks stdin attached: it has one writer, once.
func (pio *processIO) attachInput() bool {
	pio.attachMu.Lock()
	defer pio.attachMu.Unlock()
	if pio.attached[2] {
		return false
	}
	pio.attached[2] = true
	return true
}

// releasedCh is closed once the agent's ends are released (close).
func (pio *processIO) releasedCh() chan struct{} {
	pio.releasedOnce.Do(func() { pio.released = make(chan struct{}) })
	return pio.released
}

// writeInput writes b to the process's stdin, waiting while its pipe is
// full; it fails once stdin is closed.
func (pio *processIO) writeInput(b []byte) error {
	pio.stdinMu.Lock()
	f := pio.stdin
	pio.stdinMu.Unlock()
	if f == nil {
		return os.ErrClosed
	}
	_, err := f.Write(b)
	return err
}

// closeStdin delivers EOF. A terminal has no EOF of its own: the process
// keeps its pty; containerd's runc shim behaves the same.
func (pio *processIO) closeStdin() {
	pio.stdinMu.Lock()
	defer pio.stdinMu.Unlock()
	if pio.stdin != nil && !pio.terminal {
		pio.stdin.Close()
		pio.stdin = nil
	}
}

func (pio *processIO) resize(width, height uint32) error {
	if !pio.terminal || pio.stdout == nil {
		return errors.New("process has no terminal")
	}
	rc, err := pio.stdout.SyscallConn()
	if err != nil {
		return err
	}
	// Through Control, not Fd(), which would make the pty blocking.
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(width), Row: uint16(height)})
	}); err != nil {
		return err
	}
	return ioErr
}

// wait collects the process's exit through libcontainer, which owns its
// PID (or through the Cmd of an init cinit made), and records it the way
// runc reports it.
func (p *process) wait(r *reaper) {
	defer recoverPanic("wait")
	var (
		ps  *os.ProcessState
		err error
	)
	if p.cinit != nil {
		// Its waiter released the PID.
		ps, err = p.cinit.Wait()
	} else {
		ps, err = p.lp.Wait()
		r.Release(p.pid)
	}
	p.exitedAt = time.Now()
	p.status = 255
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				p.status = 128 + int(ws.Signal())
			case ws.Exited():
				p.status = ws.ExitStatus()
			}
		}
	} else if err != nil {
		logf(levelWarn, "wait for pid %d: %v", p.pid, err)
	}
	if p.onExit != nil {
		p.onExit()
	}
	close(p.exited)
}

// signal sends sig to an exec'd process, through the pidfd its
// os.Process holds (never a recycled PID).
func (p *process) signal(sig syscall.Signal) error {
	if p.cinit != nil {
		return p.cinit.Process().Signal(sig)
	}
	return p.lp.Signal(sig)
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}
