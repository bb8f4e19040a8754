package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/podvm/podvm/vmconfig"
)

// service is containerd's task API (v2) for one sandbox. Each call maps
// onto a container and one of its processes; the processes' states decide
// what is allowed.
type service struct {
	sb       *sandbox
	events   *events
	shutdown shutdown.Service
	// deleting is held (read) by each Delete, so that a Shutdown that
	// containerd sends after one container's Delete cannot end the shim
	// while another's (the one stopping the VM) has yet to answer.
	deleting sync.RWMutex
}

var (
	_     taskAPI.TaskService = (*service)(nil)
	empty                     = &ptypes.Empty{}
)

// NewTaskService is the shim's ttrpc task service for sandbox id.
func NewTaskService(ctx context.Context, id string, publisher shim.Publisher, sd shutdown.Service) (taskAPI.TaskService, error) {
	if err := checkID("sandbox ID", id); err != nil {
		return nil, err
	}
	cfg, err := vmconfig.Load()
	if err != nil {
		return nil, err
	}
	ns, _ := namespaceOf(ctx)
	ev := newEvents(ctx, publisher)
	s := &service{events: ev, shutdown: sd}
	s.sb = newSandbox(ctx, id, ns, cfg, ev)
	s.sb.serveMetrics()
	sd.RegisterCallback(func(ctx context.Context) error {
		err := s.sb.stop(ctx)
		ev.close()
		return err
	})
	if address, err := shim.ReadAddress("address"); err == nil {
		sd.RegisterCallback(func(context.Context) error { return shim.RemoveSocket(address) })
	}
	return s, nil
}

// RegisterTTRPC makes the service a containerd shim TTRPC plugin: task API
// v2 for containerd 1.6 to 2.2, v3 for 2.3 and later.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	o := observed{s: s, m: s.sb.metrics}
	taskAPI.RegisterTaskService(server, o)
	taskv3.RegisterTTRPCTaskService(server, taskV3{v2: o})
	return nil
}

func (s *service) container(id string) (*container, error) {
	c, ok := s.sb.get(id)
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "container %s not found", id)
	}
	return c, nil
}

func (s *service) process(id, execID string) (*container, *process, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.process(execID)
	if err != nil {
		return nil, nil, errdefs.ToGRPC(err)
	}
	return c, p, nil
}

func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	if err := checkID("container ID", r.ID); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if _, ok := s.sb.get(r.ID); ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "container %s", r.ID)
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "read the spec of %s: %v", r.ID, err)
	}
	if err := checkSpec(r.ID, spec, len(r.Rootfs)); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	// Before anything is made: `delete` finds it all from here.
	if err := writeBundleRecord(r.Bundle, bundleRecord{SandboxID: s.sb.id, SandboxDir: s.sb.dir}); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if err := s.sb.configure(r.Options, spec.Annotations); err != nil {
		log.G(ctx).WithError(err).Error("configuration")
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "podvm: %v", err)
	}
	if err := s.sb.ensureVM(ctx, spec); err != nil {
		log.G(ctx).WithError(err).Error("boot VM")
		return nil, errdefs.ToGRPC(fmt.Errorf("podvm: boot the VM for %s: %w", r.ID, err))
	}
	c, err := s.sb.createContainer(ctx, r)
	if err != nil {
		log.G(ctx).WithError(err).Error("create container")
		if s.sb.empty() {
			// Nothing else needs the VM just booted for it.
			_ = s.sb.stop(ctx)
		}
		return nil, errdefs.ToGRPC(err)
	}
	s.sb.add(c)
	s.events.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         c.init.pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: c.init.pid}, nil
}

func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" && c.id == s.sb.id {
		// CNI may have added interfaces since Create (ctr run --cni):
		// the workload must find them configured.
		if err := s.sb.rescanNetwork(ctx, c.guest); err != nil {
			log.G(ctx).WithError(err).Error("pod network")
			return nil, errdefs.ToGRPC(err)
		}
	}
	err = p.Start(ctx, func() {
		if r.ExecID == "" {
			s.events.send(&eventstypes.TaskStart{ContainerID: c.id, Pid: p.pid})
		} else {
			s.events.send(&eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: r.ExecID, Pid: p.pid})
		}
	})
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.deleting.RLock()
	defer s.deleting.RUnlock()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.Delete(ctx); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	status, at := p.ExitStatus()
	if r.ExecID != "" {
		c.removeExec(r.ExecID)
	} else {
		if s.sb.remove(c.id) {
			// The last container is gone: so is the reason for the VM.
			if err := s.sb.stop(ctx); err != nil {
				log.G(ctx).WithError(err).Error("stop VM")
			}
		}
		s.events.send(&eventstypes.TaskDelete{
			ContainerID: c.id, Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
		})
	}
	return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if err := checkID("exec ID", r.ExecID); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if _, err := c.exec(ctx, r); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.events.send(&eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return empty, nil
}

func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	c, _, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := c.guest.ResizePty(ctx, c.id, r.ExecID, r.Width, r.Height); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return empty, nil
}

func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := task.Status_UNKNOWN
	switch p.Status() {
	case "created":
		st = task.Status_CREATED
	case "running":
		st = task.Status_RUNNING
	case "stopped", "deleted":
		st = task.Status_STOPPED
	case "paused":
		st = task.Status_PAUSED
	}
	status, at := p.ExitStatus()
	id := r.ExecID
	if id == "" {
		id = c.id
	}
	return &taskAPI.StateResponse{
		ID: id, Bundle: c.bundle, Pid: p.pid, Status: st,
		Stdin: p.stdio.stdin, Stdout: p.stdio.stdout, Stderr: p.stdio.stderr, Terminal: p.stdio.terminal,
		ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	}, nil
}

func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.init.Pause(ctx); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.events.send(&eventstypes.TaskPaused{ContainerID: c.id})
	return empty, nil
}

func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.init.Resume(ctx); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.events.send(&eventstypes.TaskResumed{ContainerID: c.id})
	return empty, nil
}

func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.Kill(ctx, r.Signal, r.All); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return empty, nil
}

func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	procs, err := c.guest.Pids(ctx, c.id)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	var out []*task.ProcessInfo
	for _, pi := range procs {
		info := &task.ProcessInfo{Pid: pi.Pid}
		if _, err := c.process(pi.ExecID); pi.ExecID != "" && err == nil {
			a, err := protobuf.MarshalAnyToProto(&options.ProcessDetails{ExecID: pi.ExecID})
			if err != nil {
				return nil, err
			}
			info.Info = a
		}
		out = append(out, info)
	}
	return &taskAPI.PidsResponse{Processes: out}, nil
}

func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		p.io.closeStdin()
		if err := c.guest.CloseStdin(ctx, c.id, r.ExecID); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	}
	return empty, nil
}

func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint is not supported by podvm")
}

func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "update of %s without resources", r.ID)
	}
	v, err := typeurl.UnmarshalAny(r.Resources)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "resources of %s: %v", r.ID, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "resources of %s: %v", r.ID, err)
	}
	// The VM first: limits it cannot give are refused before the
	// container's cgroup changes.
	prev := s.sb.demand(c.id)
	if err := s.sb.fit(ctx, c.id, prev.updated(&res), true); err != nil {
		log.G(ctx).WithError(err).Warn("update")
		return nil, errdefs.ToGRPC(fmt.Errorf("podvm: update %s: %w", r.ID, err))
	}
	if err := c.init.Update(ctx, b); err != nil {
		s.sb.setDemand(c.id, prev)
		return nil, errdefs.ToGRPC(err)
	}
	return empty, nil
}

func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.Wait(ctx); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	status, at := p.ExitStatus()
	return &taskAPI.WaitResponse{ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	m, err := c.guest.Stats(ctx, c.id)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	a, err := typeurl.MarshalAny(m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(a)}, nil
}

func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	if c, ok := s.sb.get(r.ID); ok {
		pid = c.init.pid
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.deleting.Lock()
	defer s.deleting.Unlock()
	if !s.sb.empty() {
		return empty, nil
	}
	// The shutdown callbacks stop the VM and publish what is queued.
	s.shutdown.Shutdown()
	return empty, nil
}
