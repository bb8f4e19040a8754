package shim

import (
	"context"
	"encoding/json"
	"os"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	sandboxAPI "github.com/containerd/containerd/api/runtime/sandbox/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/podvm/podvm/sandbox"
	"github.com/podvm/podvm/vmconfig"
)

// service is containerd's task API (v2; v3 through taskV3) for one
// sandbox: each call maps onto the pod (package sandbox), a container or
// one of its processes, whose states decide what is allowed.
type service struct {
	pod      *sandbox.Pod
	events   *events
	shutdown shutdown.Service
	// startOptions are the runtime handler's options containerd gave
	// `start`, for the Sandbox API's pod (a task's come with its Create).
	startOptions *anypb.Any
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
	if err := sandbox.CheckID("sandbox ID", id); err != nil {
		return nil, err
	}
	cfg, err := vmconfig.Load()
	if err != nil {
		return nil, err
	}
	ns, _ := namespaceOf(ctx)
	// The shim runs in the bundle it was started for.
	opts, err := loadRuntimeOptions(".")
	if err != nil {
		log.G(ctx).WithError(err).Warn("the runtime options saved by start; going on without them")
	}
	ev := newEvents(ctx, publisher)
	s := &service{events: ev, shutdown: sd, startOptions: opts}
	s.pod = sandbox.New(ctx, id, ns, cfg, ev)
	sd.RegisterCallback(func(ctx context.Context) error {
		err := s.pod.Stop(ctx)
		ev.close()
		return err
	})
	if address, err := shim.ReadAddress("address"); err == nil {
		sd.RegisterCallback(func(context.Context) error { return shim.RemoveSocket(address) })
	}
	return s, nil
}

// RegisterTTRPC makes the service a containerd shim TTRPC plugin: task API
// v2 for containerd 1.6 to 2.2, v3 for 2.3 and later, and the Sandbox API
// for containerd 2.x's sandboxer = "shim".
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	o := observed{s: s, m: s.pod.Metrics()}
	taskAPI.RegisterTaskService(server, o)
	taskv3.RegisterTTRPCTaskService(server, taskV3{v2: o})
	sandboxAPI.RegisterTTRPCSandboxService(server, &sandboxService{s: s})
	return nil
}

func (s *service) container(id string) (*sandbox.Container, error) {
	c, ok := s.pod.Container(id)
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "container %s not found", id)
	}
	return c, nil
}

func (s *service) process(id, execID string) (*sandbox.Container, *sandbox.Process, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Process(execID)
	if err != nil {
		return nil, nil, errdefs.ToGRPC(err)
	}
	return c, p, nil
}

func stdioOf(stdin, stdout, stderr string, terminal bool) sandbox.Stdio {
	return sandbox.Stdio{Stdin: stdin, Stdout: stdout, Stderr: stderr, Terminal: terminal}
}

func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	if r.Checkpoint != "" {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "restore from checkpoint is not supported by podvm")
	}
	spec, err := sandbox.ReadSpec(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "read the spec of %s: %v", r.ID, err)
	}
	cfg, err := withRuntimeOptions(s.pod.Config(), r.Options)
	if err == nil {
		err = s.pod.Configure(cfg, spec.Annotations)
	}
	if err != nil {
		log.G(ctx).WithError(err).Error("configuration")
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "podvm: %v", err)
	}
	var rootfs []mount.Mount
	for _, m := range r.Rootfs {
		rootfs = append(rootfs, mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	c, err := s.pod.Create(ctx, sandbox.CreateRequest{
		ID: r.ID, Bundle: r.Bundle, Spec: spec, Rootfs: rootfs,
		Stdio: stdioOf(r.Stdin, r.Stdout, r.Stderr, r.Terminal),
	})
	if err != nil {
		log.G(ctx).WithError(err).Error("create container")
		return nil, errdefs.ToGRPC(err)
	}
	pid := c.Init().Pid()
	s.events.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: pid}, nil
}

func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	err = p.Start(ctx, func() {
		if r.ExecID == "" {
			s.events.send(&eventstypes.TaskStart{ContainerID: c.ID(), Pid: p.Pid()})
		} else {
			s.events.send(&eventstypes.TaskExecStarted{ContainerID: c.ID(), ExecID: r.ExecID, Pid: p.Pid()})
		}
	})
	if err != nil {
		log.G(ctx).WithError(err).Error("start")
		return nil, errdefs.ToGRPC(err)
	}
	return &taskAPI.StartResponse{Pid: p.Pid()}, nil
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
		c.RemoveExec(r.ExecID)
	} else {
		if s.pod.Remove(c.ID()) && !s.pod.Held() {
			// The last container is gone: so is the reason for the VM
			// (unless the Sandbox API holds the pod).
			if err := s.pod.Stop(ctx); err != nil {
				log.G(ctx).WithError(err).Error("stop VM")
			}
		}
		s.events.send(&eventstypes.TaskDelete{
			ContainerID: c.ID(), Pid: p.Pid(), ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
		})
	}
	return &taskAPI.DeleteResponse{Pid: p.Pid(), ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	req := sandbox.ExecRequest{ID: r.ExecID, Stdio: stdioOf(r.Stdin, r.Stdout, r.Stderr, r.Terminal)}
	if r.Spec != nil {
		req.Process = r.Spec.Value
	}
	if _, err := c.Exec(ctx, req); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.events.send(&eventstypes.TaskExecAdded{ContainerID: c.ID(), ExecID: r.ExecID})
	return empty, nil
}

func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.ResizePty(ctx, r.Width, r.Height); err != nil {
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
		id = c.ID()
	}
	io := p.Stdio()
	return &taskAPI.StateResponse{
		ID: id, Bundle: c.Bundle(), Pid: p.Pid(), Status: st,
		Stdin: io.Stdin, Stdout: io.Stdout, Stderr: io.Stderr, Terminal: io.Terminal,
		ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	}, nil
}

func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.Init().Pause(ctx); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.events.send(&eventstypes.TaskPaused{ContainerID: c.ID()})
	return empty, nil
}

func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.Init().Resume(ctx); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.events.send(&eventstypes.TaskResumed{ContainerID: c.ID()})
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
	procs, err := c.Pids(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	var out []*task.ProcessInfo
	for _, pi := range procs {
		info := &task.ProcessInfo{Pid: pi.Pid}
		if pi.ExecID != "" {
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
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		if err := p.CloseStdin(ctx); err != nil {
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
	if err := c.Update(ctx, &res); err != nil {
		log.G(ctx).WithError(err).Warn("update")
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
	m, err := c.Guest().Stats(ctx, c.ID())
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
	if c, ok := s.pod.Container(r.ID); ok {
		pid = c.Init().Pid()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.deleting.Lock()
	defer s.deleting.Unlock()
	if !s.pod.Empty() || s.pod.Held() {
		return empty, nil
	}
	// The shutdown callbacks stop the VM and publish what is queued.
	s.shutdown.Shutdown()
	return empty, nil
}
