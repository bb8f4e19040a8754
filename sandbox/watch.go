package sandbox

import (
	"errors"
	"time"

	"github.com/containerd/log"

	"github.com/podvm/podvm/vm"
)

// How long an exit event waits for the process's last output to be copied
// out. A background child holding stdout open would otherwise delay it
// forever.
const (
	initOutputGrace = 10 * time.Second
	execOutputGrace = 2 * time.Second
)

// killedStatus is what a process that went with its VM exited with, as if
// SIGKILLed: the VM was its whole world.
const killedStatus = 128 + 9

// watchExit waits in the guest for the process to end, then publishes its
// exit once its output is out (and, for an init process, once its exec
// processes have exited, as containerd expects). A process whose VM went
// away is reported killed.
func (sb *Pod) watchExit(p *Process) {
	logger := p.logger(sb.ctx)
	exit, err := p.guest().Wait(sb.ctx, p.c.id, p.execID)
	status := exit.Status
	switch {
	case err == nil:
		// An OOM kill that ended the process is reported before its
		// exit, as runc's shim does, whichever of the guest's answers
		// came first.
		sb.noteOOM(p.c, exit.OOMKills)
	case sb.ctx.Err() != nil:
		return
	case errors.Is(err, vm.ErrStopped):
		status = killedStatus
		logger.WithError(err).Info("the process went with its VM; reporting it killed")
	default:
		status = killedStatus
		logger.WithError(err).Warn("lost the process in the guest; reporting it killed")
	}
	grace := execOutputGrace
	if p.execID == "" {
		grace = initOutputGrace
	}
	if !p.io.waitOutput(grace) {
		logger.Warnf("output still open %v after exit (a background process holds it?)", grace)
	}
	if p.execID == "" {
		deadline := time.After(5 * time.Second)
		for _, e := range p.c.runningExecs() {
			select {
			case <-e.exited:
			case <-deadline:
			}
		}
	}
	p.SetExited(status, func(at time.Time) {
		sb.events.Exited(p.c.id, p.execID, p.pid, status, at)
	})
	logger.WithField("status", status).Info("process exited")
}

// watchOOM publishes the guest's OOM kills of the sandbox's containers.
// The guest names the container; one the sandbox does not know is not
// passed on.
func (sb *Pod) watchOOM(g *vm.Guest) {
	var backoff time.Duration
	for sb.ctx.Err() == nil && g.Alive() {
		kill, err := g.WaitOOM(sb.ctx)
		if err != nil {
			if errors.Is(err, vm.ErrStopped) {
				return
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			log.G(sb.ctx).WithError(err).Debug("wait for OOM kills")
			select {
			case <-time.After(backoff):
			case <-g.Done():
			case <-sb.ctx.Done():
			}
			continue
		}
		backoff = 0
		c, ok := sb.Container(kill.ContainerID)
		if !ok {
			// A container deleted since: its exit reported the kill.
			log.G(sb.ctx).WithField("container", kill.ContainerID).Debug("an OOM kill of a container this sandbox does not have (any more); ignored")
			continue
		}
		sb.noteOOM(c, kill.Kills)
	}
}

// noteOOM publishes an OOM kill in c if its count of kills (from the
// guest's OOM watch or a process's exit) rose since the last report.
func (sb *Pod) noteOOM(c *Container, kills uint64) {
	c.mu.Lock()
	rose := kills > c.oomKills
	if rose {
		c.oomKills = kills
	}
	c.mu.Unlock()
	if rose {
		log.G(sb.ctx).WithField("container", c.id).Warn("OOM kill in the guest")
		sb.events.OOM(c.id)
	}
}

// watchVM notes a VM that ended without being asked to; its processes'
// watchers report them killed.
func (sb *Pod) watchVM(g *vm.Guest) {
	<-g.Done()
	sb.mu.Lock()
	unexpected := sb.phase == phaseRunning
	if unexpected {
		_ = sb.setPhase(phaseExited)
	}
	sb.mu.Unlock()
	if unexpected {
		log.G(sb.ctx).WithError(g.VM.Err()).Error("the VM exited unexpectedly; its containers are gone")
		sb.end(killedStatus)
	}
}
