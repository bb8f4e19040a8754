package sandbox

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"
)

// A pod the Sandbox API holds lives from Start to Stop, with or without
// containers; the task API's pods live from their first container to their
// last. Both are the same Pod, VM and lifecycle. A held pod that was
// stopped, or whose VM died, ends with killedStatus, as a pause container
// does when a stop kills it.

// held is what a pod the Sandbox API started keeps; sb.mu guards it.
type held struct {
	config    PodConfig
	files     []string // the pod's files each container binds
	infraPid  uint32   // the infra process's guest PID
	vmPid     int
	startedAt time.Time
	cgroup    string // the pod's host cgroup, if it has one
}

// Start is the Sandbox API's start of the pod: its files, its VM sized by
// the pod's limits in the pod's network and cgroup, and its infra process.
// A pod that is already started is left as it is; on failure the VM goes
// and the pod is stopped.
func (sb *Pod) Start(ctx context.Context, pc PodConfig) (retErr error) {
	if err := pc.Check(); err != nil {
		return err
	}
	netSysctls, nsSysctls, _ := splitSysctls("the pod", pc.Sysctls)
	files, err := pc.podFiles()
	if err != nil {
		return err
	}
	sb.mu.Lock()
	switch {
	case sb.held != nil && sb.held.startedAt.IsZero():
		sb.mu.Unlock()
		return fmt.Errorf("sandbox %s is starting: %w", sb.id, errdefs.ErrFailedPrecondition)
	case sb.held != nil:
		sb.mu.Unlock()
		return nil
	case sb.phase != phaseNew || len(sb.containers) > 0:
		sb.mu.Unlock()
		return fmt.Errorf("sandbox %s is %v: it cannot start again: %w", sb.id, sb.phase, errdefs.ErrFailedPrecondition)
	}
	h := &held{config: pc}
	sb.held = h
	sb.mu.Unlock()
	defer func() {
		if retErr != nil {
			if err := sb.Stop(context.WithoutCancel(ctx)); err != nil {
				log.G(ctx).WithError(err).Error("stop the sandbox after its failed start")
			}
		}
	}()

	if err := os.MkdirAll(sb.shareDir, 0o700); err != nil {
		return fmt.Errorf("create shared directory: %w", err)
	}
	if err := sb.writePodFiles(files); err != nil {
		return err
	}
	if err := sb.Boot(ctx, pc.Spec(sb.id)); err != nil {
		return fmt.Errorf("boot the VM of sandbox %s: %w", sb.id, err)
	}
	g := sb.Guest()
	if g == nil {
		return fmt.Errorf("the VM of sandbox %s exited as it booted: %w", sb.id, errdefs.ErrUnavailable)
	}
	if err := g.SetSysctls(ctx, netSysctls); err != nil {
		return err
	}
	pid, err := sb.startInfra(ctx, g, &pc, nsSysctls)
	if err != nil {
		return err
	}
	sb.mu.Lock()
	for p := range files {
		h.files = append(h.files, p)
	}
	slices.Sort(h.files)
	h.infraPid, h.vmPid, h.startedAt = pid, g.VM.PID(), time.Now()
	if cg := sb.cgroup; cg != nil {
		h.cgroup = cg.Path
	}
	sb.mu.Unlock()
	log.G(ctx).WithField("guest_pid", pid).Info("sandbox started")
	return nil
}

// Held reports whether the Sandbox API owns the pod, whose VM then
// outlives its containers.
func (sb *Pod) Held() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.held != nil
}

// heldFiles are the pod files a container of a held pod binds (none for a
// pod of the task API).
func (sb *Pod) heldFiles() []string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.held == nil {
		return nil
	}
	return sb.held.files
}

// end records the end of the pod, once: its VM exited or was stopped, or
// its infra process exited.
func (sb *Pod) end(status uint32) {
	sb.endOnce.Do(func() {
		sb.mu.Lock()
		sb.exitStatus, sb.exitedAt = status, time.Now()
		sb.mu.Unlock()
		close(sb.ended)
	})
}

// Wait returns the pod's exit status once it has ended.
func (sb *Pod) Wait(ctx context.Context) (uint32, time.Time, error) {
	select {
	case <-sb.ended:
	case <-ctx.Done():
		return 0, time.Time{}, ctx.Err()
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.exitStatus, sb.exitedAt, nil
}

// Status is a pod as the Sandbox API reports it.
type Status struct {
	// Ready: started, and neither stopped nor ended.
	Ready bool
	Phase string
	// Pid is QEMU's: the host process that is the pod.
	Pid                 int
	StartedAt, ExitedAt time.Time
	ExitStatus          uint32
}

// Status reports where the pod is.
func (sb *Pod) Status() Status {
	ended := false
	select {
	case <-sb.ended:
		ended = true
	default:
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	st := Status{Phase: sb.phase.String(), ExitedAt: sb.exitedAt, ExitStatus: sb.exitStatus}
	if h := sb.held; h != nil {
		st.Pid, st.StartedAt = h.vmPid, h.startedAt
		st.Ready = !ended && sb.phase == phaseRunning && !h.startedAt.IsZero()
	}
	return st
}

// HostStats are the host's accounting of a held pod's cgroup: what the
// whole VM costs.
func (sb *Pod) HostStats() (any, error) {
	sb.mu.Lock()
	var path string
	if sb.held != nil {
		path = sb.held.cgroup
	}
	sb.mu.Unlock()
	if path == "" {
		return nil, fmt.Errorf("sandbox %s has no cgroup of its own (its pod config names no cgroup parent): %w", sb.id, errdefs.ErrNotFound)
	}
	return cgroupStats(path)
}

// All are the pod's containers.
func (sb *Pod) All() []*Container {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	out := make([]*Container, 0, len(sb.containers))
	for _, c := range sb.containers {
		out = append(out, c)
	}
	return out
}
