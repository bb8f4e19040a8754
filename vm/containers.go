package vm

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// Streams says which standard streams a process has, as containerd gave
// them.
type Streams struct {
	Terminal, Stdin, Stdout, Stderr bool
}

func (s Streams) config() *agentapi.StdioConfig {
	return &agentapi.StdioConfig{Terminal: s.Terminal, Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr}
}

// Storage is a filesystem the guest mounts before a container needs it:
// the sandbox's share, the pod's /dev/shm.
type Storage struct {
	Source, Target, Type string
	Options              []string
}

func storages(ss []Storage) []*agentapi.Storage {
	out := make([]*agentapi.Storage, len(ss))
	for i, s := range ss {
		out[i] = &agentapi.Storage{Source: s.Source, Target: s.Target, Fstype: s.Type, Options: s.Options}
	}
	return out
}

// Container is a container to create in the guest: its OCI spec, already
// translated for the guest (JSON), its streams and what it needs mounted.
type Container struct {
	ID       string
	Spec     []byte
	Streams  Streams
	Storages []Storage
	// Phases, if set, receives the guest's account of the create.
	Phases func(name string, d time.Duration)
}

// ProcessInfo is a process of a container as the guest lists it.
type ProcessInfo struct {
	Pid    uint32
	ExecID string
}

// CreateContainer creates a container and its init process, stopped before
// the user's program (runc create); it returns the init's guest PID.
func (g *Guest) CreateContainer(ctx context.Context, c Container) (uint32, error) {
	var pid uint32
	err := g.call(ctx, request, "create container "+c.ID+" in the guest", func(ctx context.Context) error {
		r, err := g.containers.CreateContainer(ctx, &agentapi.CreateContainerRequest{
			ContainerId: c.ID, Spec: c.Spec, Stdio: c.Streams.config(), Storages: storages(c.Storages),
		})
		if err != nil {
			return err
		}
		pid, err = checkPid(r.Pid)
		if err == nil && c.Phases != nil {
			// The guest's word, for the log and metrics only: bounded.
			for _, p := range []struct {
				name string
				ns   uint64
			}{{"guest_mounts", r.MountsNs}, {"guest_runc_create", r.CreateNs}, {"guest_stdio", r.StdioNs}} {
				c.Phases(p.name, time.Duration(min(p.ns, uint64(g.requestTimeout))))
			}
		}
		return err
	})
	return pid, err
}

// StartProcess starts a container's init process (execID "") or an exec
// process ExecProcess registered, and returns its guest PID.
func (g *Guest) StartProcess(ctx context.Context, containerID, execID string) (uint32, error) {
	var pid uint32
	err := g.call(ctx, request, "start "+processName(containerID, execID), func(ctx context.Context) error {
		r, err := g.containers.StartProcess(ctx, &agentapi.ProcessRequest{ContainerId: containerID, ExecId: execID})
		if err != nil {
			return err
		}
		pid, err = checkPid(r.Pid)
		return err
	})
	return pid, err
}

// ExecProcess registers an exec process (its OCI process as JSON);
// StartProcess runs it.
func (g *Guest) ExecProcess(ctx context.Context, containerID, execID string, process []byte, s Streams) error {
	return g.call(ctx, request, "exec "+processName(containerID, execID), func(ctx context.Context) error {
		_, err := g.containers.ExecProcess(ctx, &agentapi.ExecProcessRequest{
			ContainerId: containerID, ExecId: execID, Process: process, Stdio: s.config(),
		})
		return err
	})
}

// Signal sends sig to a process, or with all to every process of the
// container.
func (g *Guest) Signal(ctx context.Context, containerID, execID string, sig uint32, all bool) error {
	return g.call(ctx, request, fmt.Sprintf("signal %d to %s", sig, processName(containerID, execID)), func(ctx context.Context) error {
		_, err := g.containers.SignalProcess(ctx, &agentapi.SignalProcessRequest{
			ContainerId: containerID, ExecId: execID, Signal: sig, All: all,
		})
		return err
	})
}

// Exit is how a process ended.
type Exit struct {
	Status uint32
	// OOMKills is its container's count of OOM kills when it exited (see
	// OOMKill): a kill that ended it is in it.
	OOMKills uint64
}

// Wait returns how a process exited once it has, polling for as long as it
// runs. It fails with ErrStopped when the VM goes first: the process went
// with it.
func (g *Guest) Wait(ctx context.Context, containerID, execID string) (Exit, error) {
	var exit Exit
	err := g.pollUntil(ctx, "wait for "+processName(containerID, execID), func(ctx context.Context) error {
		r, err := g.containers.WaitProcess(ctx, &agentapi.ProcessRequest{ContainerId: containerID, ExecId: execID})
		if err != nil {
			return err
		}
		if r.ExitStatus > 255 {
			return fmt.Errorf("exit status %d: %w", r.ExitStatus, ErrBadReply)
		}
		exit = Exit{Status: r.ExitStatus, OOMKills: r.OomKills}
		return nil
	})
	return exit, err
}

// DeleteProcess forgets an exited (or never started) exec process.
func (g *Guest) DeleteProcess(ctx context.Context, containerID, execID string) error {
	return g.call(ctx, request, "delete "+processName(containerID, execID), func(ctx context.Context) error {
		_, err := g.containers.DeleteProcess(ctx, &agentapi.ProcessRequest{ContainerId: containerID, ExecId: execID})
		return err
	})
}

// DeleteContainer kills what is left of a container and removes it.
func (g *Guest) DeleteContainer(ctx context.Context, id string) error {
	return g.call(ctx, request, "delete container "+id+" in the guest", func(ctx context.Context) error {
		_, err := g.containers.DeleteContainer(ctx, &agentapi.ContainerRequest{ContainerId: id})
		return err
	})
}

// maxPids bounds a process listing: more than the guest's pid_max could
// hold is a lie.
const maxPids = 1 << 16

// Pids lists a container's processes. Entries a guest could not truthfully
// send (PIDs out of range, malformed exec IDs) are dropped.
func (g *Guest) Pids(ctx context.Context, id string) ([]ProcessInfo, error) {
	var out []ProcessInfo
	err := g.call(ctx, request, "list the processes of "+id, func(ctx context.Context) error {
		r, err := g.containers.Pids(ctx, &agentapi.ContainerRequest{ContainerId: id})
		if err != nil {
			return err
		}
		if len(r.Processes) > maxPids {
			return fmt.Errorf("%d processes: %w", len(r.Processes), ErrBadReply)
		}
		for _, p := range r.Processes {
			if _, err := checkPid(p.Pid); err != nil {
				continue
			}
			if p.ExecId != "" && !validExecID(p.ExecId) {
				p.ExecId = ""
			}
			out = append(out, ProcessInfo{Pid: p.Pid, ExecID: p.ExecId})
		}
		return nil
	})
	return out, err
}

// Pause freezes a container; Resume thaws it.
func (g *Guest) Pause(ctx context.Context, id string) error {
	return g.call(ctx, request, "pause "+id, func(ctx context.Context) error {
		_, err := g.containers.PauseContainer(ctx, &agentapi.ContainerRequest{ContainerId: id})
		return err
	})
}

func (g *Guest) Resume(ctx context.Context, id string) error {
	return g.call(ctx, request, "resume "+id, func(ctx context.Context) error {
		_, err := g.containers.ResumeContainer(ctx, &agentapi.ContainerRequest{ContainerId: id})
		return err
	})
}

// Update applies new linux resources (OCI JSON) to a container's cgroup in
// the guest.
func (g *Guest) Update(ctx context.Context, id string, resources []byte) error {
	return g.call(ctx, request, "update "+id, func(ctx context.Context) error {
		_, err := g.containers.UpdateContainer(ctx, &agentapi.UpdateContainerRequest{ContainerId: id, Resources: resources})
		return err
	})
}

// ResizePty sets the size of a process's terminal.
func (g *Guest) ResizePty(ctx context.Context, containerID, execID string, width, height uint32) error {
	return g.call(ctx, request, "resize the terminal of "+processName(containerID, execID), func(ctx context.Context) error {
		_, err := g.containers.ResizePty(ctx, &agentapi.ResizePtyRequest{ContainerId: containerID, ExecId: execID, Width: width, Height: height})
		return err
	})
}

// OOMKill is an OOM kill in a container of the guest.
type OOMKill struct {
	ContainerID string
	// Kills counts the container's OOM kills since it was created, this
	// one included. The guest reports a kill here and in the exit of the
	// process it ended, in either order: a caller reports each rise once.
	Kills uint64
}

// WaitOOM returns the next OOM kill in the guest, polling until there is
// one. The ID is only well-formed: the caller must still check that it
// names one of its containers.
func (g *Guest) WaitOOM(ctx context.Context) (OOMKill, error) {
	var kill OOMKill
	err := g.pollUntil(ctx, "wait for OOM kills", func(ctx context.Context) error {
		ev, err := g.containers.WaitOOM(ctx, &emptypb.Empty{})
		if err != nil {
			return err
		}
		if !validContainerID(ev.ContainerId) {
			return fmt.Errorf("OOM kill of %q: %w", Printable(ev.ContainerId, 80), ErrBadReply)
		}
		kill = OOMKill{ContainerID: ev.ContainerId, Kills: ev.Kills}
		return nil
	})
	return kill, err
}

func processName(containerID, execID string) string {
	if execID == "" {
		return "the init process of " + containerID
	}
	return "exec process " + execID + " of " + containerID
}
