package shim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// process is a container's init process or one of its exec processes, as
// the shim tracks it: the guest runs the real process; this holds what
// containerd asks about it and the host end of its stdio.
type process struct {
	mu     sync.Mutex
	c      *container
	execID string
	stdio  stdioPaths
	// spec is the OCI process of an exec (JSON).
	spec []byte
	// pid is the PID containerd sees: QEMU's, so that /proc/<pid>/ns/net
	// is the pod's network namespace. guestPid is the process's own.
	pid      uint32
	guestPid uint32

	state      state
	exitStatus uint32
	exitedAt   time.Time
	exited     chan struct{} // closed when the exit is known

	io *hostIO
}

func newProcess(c *container, execID string, stdio stdioPaths) *process {
	p := &process{c: c, execID: execID, stdio: stdio, exited: make(chan struct{})}
	p.state = createdState{p}
	return p
}

func (p *process) ref() *agentapi.ProcessRequest {
	return &agentapi.ProcessRequest{ContainerId: p.c.id, ExecId: p.execID}
}

func (p *process) logger(ctx context.Context) *log.Entry {
	l := log.G(ctx).WithField("container", p.c.id)
	if p.execID != "" {
		l = l.WithField("exec", p.execID)
	}
	return l
}

// The operations containerd asks for go through the state.

// Start starts the process; started runs under the process's lock once it
// has, so the start event it queues always precedes the exit event (which
// is queued under the same lock).
func (p *process) Start(ctx context.Context, started func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.state.start(ctx); err != nil {
		return err
	}
	started()
	return nil
}

func (p *process) Delete(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.delete(ctx)
}

func (p *process) Kill(ctx context.Context, sig uint32, all bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.kill(ctx, sig, all)
}

func (p *process) Pause(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.pause(ctx)
}

func (p *process) Resume(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.resume(ctx)
}

func (p *process) Update(ctx context.Context, resources []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.update(ctx, resources)
}

func (p *process) CanExec() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.canExec()
}

// SetExited records the exit and, under the same lock, lets exited queue
// the exit event.
func (p *process) SetExited(status uint32, exited func(at time.Time)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return
	default:
	}
	p.state.setExited(status)
	exited(p.exitedAt)
}

// Status is the state's name, which containerd's State call maps.
func (p *process) Status() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.name()
}

// Wait blocks until the process has exited.
func (p *process) Wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *process) ExitStatus() (uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitStatus, p.exitedAt
}

func (p *process) markExited(status uint32) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.exitStatus = status
	p.exitedAt = time.Now()
	close(p.exited)
}

// What the states do, in the guest.

func (p *process) doStart(ctx context.Context) error {
	agent := p.c.sb.guest
	if p.execID == "" {
		if _, err := agent.Containers.StartProcess(ctx, p.ref()); err != nil {
			return errdefs.FromGRPC(err)
		}
		return nil
	}
	resp, err := agent.Containers.StartProcess(ctx, p.ref())
	if err != nil {
		// containerd's client waits for the streams to end: close them.
		p.io.close()
		return fmt.Errorf("OCI runtime exec failed: %w", errdefs.FromGRPC(err))
	}
	p.guestPid = resp.Pid
	p.io.copyOutput(p.c.sb.ctx, agent.Stdio, p.c.id, p.execID)
	go p.c.sb.watchExit(p)
	return nil
}

func (p *process) doKill(ctx context.Context, sig uint32, all bool) error {
	_, err := p.c.sb.guest.Containers.SignalProcess(ctx, &agentapi.SignalProcessRequest{
		ContainerId: p.c.id, ExecId: p.execID, Signal: sig, All: all,
	})
	if err != nil {
		err = errdefs.FromGRPC(err)
		if errdefs.IsNotFound(err) {
			return errdefs.ToGRPCf(errdefs.ErrNotFound, "process already finished")
		}
		return err
	}
	return nil
}

func (p *process) doDelete(ctx context.Context) error {
	if p.execID == "" {
		return p.c.destroy(ctx)
	}
	p.io.close()
	if p.guestPid == 0 {
		// Never started: nobody will see it exit, so release the waiters.
		p.markExited(255)
	}
	if _, err := p.c.sb.guest.Containers.DeleteProcess(ctx, p.ref()); err != nil && !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		return errdefs.FromGRPC(err)
	}
	return nil
}

func (p *process) doPause(ctx context.Context) error {
	_, err := p.c.sb.guest.Containers.PauseContainer(ctx, &agentapi.ContainerRequest{ContainerId: p.c.id})
	return errdefs.FromGRPC(err)
}

func (p *process) doResume(ctx context.Context) error {
	_, err := p.c.sb.guest.Containers.ResumeContainer(ctx, &agentapi.ContainerRequest{ContainerId: p.c.id})
	return errdefs.FromGRPC(err)
}

func (p *process) doUpdate(ctx context.Context, resources []byte) error {
	_, err := p.c.sb.guest.Containers.UpdateContainer(ctx, &agentapi.UpdateContainerRequest{ContainerId: p.c.id, Resources: resources})
	return errdefs.FromGRPC(err)
}
