package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/podvm/podvm/vm"
)

// process is a container's init process or one of its exec processes, as
// the shim tracks it: the guest runs the real process; this holds what
// containerd asks about it and the host end of its stdio.
//
// The lock guards the fields, never a call to the guest: an operation
// checks the state under the lock, marks the process busy, lets the guest
// work, and takes the lock again to move on. So State, events and other
// containers never wait for a slow or stuck guest.
type Process struct {
	mu     sync.Mutex
	idle   *sync.Cond // signalled when busy clears
	c      *Container
	execID string
	stdio  Stdio
	// spec is the OCI process of an exec (JSON).
	spec []byte
	// pid is the PID containerd sees: QEMU's, so that /proc/<pid>/ns/net
	// is the pod's network namespace. guestPid is the process's own.
	pid      uint32
	guestPid uint32

	state state
	// busy names the operation the guest is doing for this process, if
	// any: another that would move the process on is refused meanwhile.
	busy       string
	exitStatus uint32
	exitedAt   time.Time
	exited     chan struct{} // closed when the exit is known

	io *hostIO
}

func newProcess(c *Container, execID string, stdio Stdio) *Process {
	var first state = createdState{}
	if execID != "" {
		first = execCreatedState{}
	}
	p := &Process{c: c, execID: execID, stdio: stdio, exited: make(chan struct{}), state: first}
	p.idle = sync.NewCond(&p.mu)
	return p
}

func (p *Process) guest() *vm.Guest { return p.c.guest }

func (p *Process) logger(ctx context.Context) *log.Entry {
	l := log.G(ctx).WithField("container", p.c.id)
	if p.execID != "" {
		l = l.WithField("exec", p.execID)
	}
	return l
}

func (p *Process) what() string {
	if p.execID == "" {
		return "container " + p.c.id
	}
	return "exec process " + p.execID
}

// transition runs an operation that moves the process to another state:
// check says whether the current state allows it and what comes next, do
// asks the guest, and after (if any) runs under the lock once the process
// has moved on. An exit recorded while the guest worked wins over the next
// state, except over deletion.
func (p *Process) transition(ctx context.Context, op string, check func(state) (state, error), do func(context.Context) error, after func()) error {
	p.mu.Lock()
	if p.busy != "" {
		busy := p.busy
		p.mu.Unlock()
		return fmt.Errorf("cannot %s %s while %s is in progress: %w", op, p.what(), busy, errdefs.ErrFailedPrecondition)
	}
	from := p.state
	next, err := check(from)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	p.busy = op
	p.mu.Unlock()

	err = do(ctx)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy = ""
	p.idle.Broadcast()
	if err != nil {
		return err
	}
	if p.state == from || op == "delete" {
		p.state = next
	}
	if after != nil {
		after()
	}
	return nil
}

// check runs a state's verdict on an operation that does not move the
// process on.
func (p *Process) check(verdict func(state) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return verdict(p.state)
}

// Start starts the process; started runs under the process's lock once it
// has, so the start event it queues always precedes the exit event (which
// waits for the start to finish). Before the pod's own container starts,
// interfaces CNI added since the VM booted (`ctr run --cni`) are joined:
// the workload must find them configured.
func (p *Process) Start(ctx context.Context, started func()) error {
	if p.execID == "" && p.c.id == p.c.sb.id {
		if err := p.c.sb.rescanNetwork(ctx, p.guest()); err != nil {
			return fmt.Errorf("pod network: %w", err)
		}
	}
	return p.transition(ctx, "start", state.start, p.doStart, started)
}

// Pid is the PID containerd sees: QEMU's (see Process.pid).
func (p *Process) Pid() uint32 { return p.pid }

// ExecID is the exec process's ID, empty for the init process.
func (p *Process) ExecID() string { return p.execID }

// Stdio is what containerd gave for the process's streams.
func (p *Process) Stdio() Stdio { return p.stdio }

// CloseStdin ends the process's input (containerd's CloseIO): with a stdin
// FIFO, after what was written to it has been delivered.
func (p *Process) CloseStdin(ctx context.Context) error {
	if p.io.closeStdin() {
		return nil
	}
	return p.guest().CloseStdin(ctx, p.c.id, p.execID)
}

// ResizePty sets the size of the process's terminal.
func (p *Process) ResizePty(ctx context.Context, width, height uint32) error {
	return p.guest().ResizePty(ctx, p.c.id, p.execID, width, height)
}

func (p *Process) Delete(ctx context.Context) error {
	return p.transition(ctx, "delete", state.delete, p.doDelete, nil)
}

func (p *Process) Pause(ctx context.Context) error {
	return p.transition(ctx, "pause", state.pause, func(ctx context.Context) error {
		return p.guest().Pause(ctx, p.c.id)
	}, nil)
}

func (p *Process) Resume(ctx context.Context) error {
	return p.transition(ctx, "resume", state.resume, func(ctx context.Context) error {
		return p.guest().Resume(ctx, p.c.id)
	}, nil)
}

// Kill signals the process (with all, every process of the container). A
// VM that is gone took the process with it: the kill has happened, and the
// exit follows.
func (p *Process) Kill(ctx context.Context, sig uint32, all bool) error {
	if err := p.check(state.kill); err != nil {
		return err
	}
	err := p.guest().Signal(ctx, p.c.id, p.execID, sig, all)
	switch {
	case err == nil, errors.Is(err, vm.ErrStopped):
		return nil
	case errdefs.IsNotFound(err):
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
	return err
}

func (p *Process) Update(ctx context.Context, resources []byte) error {
	if err := p.check(state.update); err != nil {
		return err
	}
	return p.guest().Update(ctx, p.c.id, resources)
}

func (p *Process) CanExec() error { return p.check(state.canExec) }

// SetExited records the exit and, under the same lock, lets exited queue
// the exit event. A start still in progress finishes first, so that its
// event comes before the exit's.
func (p *Process) SetExited(status uint32, exited func(at time.Time)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.busy == "start" {
		p.idle.Wait()
	}
	select {
	case <-p.exited:
		return
	default:
	}
	p.markExited(status)
	p.state = p.state.exited()
	exited(p.exitedAt)
}

// Status is the state's name, which containerd's State call maps.
func (p *Process) Status() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.name()
}

// Wait blocks until the process has exited.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Process) ExitStatus() (uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitStatus, p.exitedAt
}

// markExited needs the lock.
func (p *Process) markExited(status uint32) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.exitStatus = status
	p.exitedAt = time.Now()
	close(p.exited)
}

// What the operations do in the guest; none holds the lock.

func (p *Process) doStart(ctx context.Context) error {
	g := p.guest()
	if p.execID == "" {
		start := time.Now()
		_, err := g.StartProcess(ctx, p.c.id, "")
		if err == nil {
			d := time.Since(start)
			p.c.sb.metrics.Phase("start", d)
			log.G(ctx).WithField("container", p.c.id).WithField("start", d.Round(time.Microsecond).String()).Info("container started")
		}
		return err
	}
	pid, err := g.StartProcess(ctx, p.c.id, p.execID)
	if err != nil {
		// containerd's client waits for the streams to end: close them.
		p.io.close()
		return fmt.Errorf("OCI runtime exec failed: %w", err)
	}
	p.mu.Lock()
	p.guestPid = pid
	p.mu.Unlock()
	p.io.copy(p.c.sb.ctx, g, p.c.id, p.execID)
	go p.c.sb.watchExit(p)
	return nil
}

func (p *Process) doDelete(ctx context.Context) error {
	if p.execID == "" {
		return p.c.destroy(ctx)
	}
	p.io.close()
	p.mu.Lock()
	if p.guestPid == 0 {
		// Never started: nobody will see it exit, so release the waiters.
		p.markExited(255)
	}
	p.mu.Unlock()
	err := p.guest().DeleteProcess(ctx, p.c.id, p.execID)
	if err != nil && !errdefs.IsNotFound(err) && !errors.Is(err, vm.ErrStopped) {
		return err
	}
	return nil
}

func (p *Process) started() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.guestPid != 0
}
