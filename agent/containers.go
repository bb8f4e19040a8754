package agent

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// stateRoot is where libcontainer keeps its container state in the guest.
const stateRoot = "/run/podvm/libcontainer"

// containerService implements agentapi.ContainersService and
// agentapi.StdioService.
type containerService struct {
	reaper   *reaper
	prep     *prepared
	storages storages
	oom      chan *agentapi.OOMEvent
	output   *stdioPort

	mu         sync.Mutex
	containers map[string]*container

	// consoles finds the debug service's consoles, whose terminals the
	// Stdio calls also carry (container ID agentapi.DebugConsoleID).
	consoles func(id string) (*process, error)
}

type container struct {
	id   string
	rt   backend
	init *process
	// memMu serializes changes to the cgroup's memory limit (Update, the
	// memory guard).
	memMu sync.Mutex
	// watched is closed once the OOM watch and guard are set up.
	watched chan struct{}
	guard   *memGuard
	// oomBase is the cgroup's OOM kill count when the watch began, if
	// it began (oomWatched).
	oomBase    uint64
	oomWatched bool

	mu    sync.Mutex
	execs map[string]*process
}

var (
	_ agentapi.ContainersService = (*containerService)(nil)
	_ agentapi.StdioService      = (*containerService)(nil)
)

func newContainerService(r *reaper, prep *prepared, out *stdioPort) *containerService {
	return &containerService{reaper: r, prep: prep, output: out, containers: make(map[string]*container), oom: make(chan *agentapi.OOMEvent, 64)}
}

// validID says whether id may name a container or an exec process in the
// guest: 1 to 128 of [A-Za-z0-9_+.-]. Code, not a regexp: compiling the
// {1,128} repetition took 1,700 allocations and 8 ms of every cold boot
// under TCG.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '+', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

func (s *containerService) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %s not found", id)
	}
	return c, nil
}

func (c *container) process(execID string) (*process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "process %s of container %s not found", execID, c.id)
	}
	return p, nil
}

// stdioProcess finds the process whose streams a Stdio or ResizePty call
// names: a container's, or a debug console's.
func (s *containerService) stdioProcess(containerID, execID string) (*process, error) {
	if containerID == agentapi.DebugConsoleID && s.consoles != nil {
		return s.consoles(execID)
	}
	_, p, err := s.getProcess(containerID, execID)
	return p, err
}

func (s *containerService) getProcess(containerID, execID string) (*container, *process, error) {
	c, err := s.get(containerID)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.process(execID)
	return c, p, err
}

func (s *containerService) CreateContainer(ctx context.Context, req *agentapi.CreateContainerRequest) (_ *agentapi.CreateContainerResponse, retErr error) {
	id := req.ContainerId
	if !validID(id) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid container ID %q", id)
	}
	s.mu.Lock()
	if _, ok := s.containers[id]; ok {
		s.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "container %s already exists", id)
	}
	// Reserve the ID while creating.
	s.containers[id] = nil
	s.mu.Unlock()
	defer func() {
		if retErr != nil {
			s.mu.Lock()
			delete(s.containers, id)
			s.mu.Unlock()
		}
	}()

	t0 := time.Now()
	for _, st := range req.Storages {
		if err := s.storages.mount(st); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	spec, err := decodeSpec(req.Spec)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	cfg, err := libcontainerConfig(id, spec)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", id, err)
	}
	lp, err := newProcess(spec.Process, true)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", id, err)
	}
	pio, err := setupIO(req.Stdio, lp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "container %s stdio: %v", id, err)
	}
	t1 := time.Now()
	p := &process{lp: lp, io: pio, exited: make(chan struct{})}
	var rt backend
	if why := cinitUnsupported(cfg, lp); why == nil {
		cr, err := s.createWithCinit(id, cfg, lp)
		if err != nil {
			pio.close()
			return nil, status.Errorf(codes.Internal, "create container %s: %v", id, err)
		}
		p.pid, p.cinit, rt = cr.init.Pid, cr.pending, cr
	} else {
		logf(levelDebug, "container %s is created by runc init: cinit does not do its %v", id, why)
		lc, err := libcontainer.Create(stateRoot, id, cfg)
		if err != nil {
			pio.close()
			return nil, status.Errorf(codes.Internal, "create container %s: %v", id, err)
		}
		pid, err := s.reaper.Start(func() (int, error) {
			if err := lc.Start(lp); err != nil {
				return 0, err
			}
			return lp.Pid()
		})
		if err != nil {
			pio.close()
			_ = lc.Destroy()
			return nil, status.Errorf(codes.Internal, "start container %s: %v", id, err)
		}
		p.pid, rt = pid, lcRuntime{lc}
	}
	pid := p.pid
	t2 := time.Now()
	if !ownPIDNamespace(cfg) {
		// As runc's shim does: with a PID namespace it shares (or none),
		// the init's exit does not end the rest of the container, which
		// would hold its output open; they go with the init.
		dir := rt.cgroupDir()
		p.onExit = func() { killCgroup(dir) }
	}
	go p.wait(s.reaper)
	if err := pio.started(); err != nil {
		_ = rt.signalInit(syscall.SIGKILL)
		<-p.exited
		pio.close()
		_ = rt.destroy()
		return nil, status.Errorf(codes.Internal, "container %s console: %v", id, err)
	}
	c := &container{id: id, rt: rt, init: p, execs: make(map[string]*process), watched: make(chan struct{})}
	// The watches are set while the answer goes to the host and the start
	// comes back, the guest idle; start waits for them.
	go func() {
		defer close(c.watched)
		s.watchOOM(c)
		c.guard = guardMemory(id, c.cgroupDir(), &c.memMu)
	}()
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	logf(levelDebug, "created container %s, init pid %d (storage+config %v, create+start %v, stdio %v)", id, pid, t1.Sub(t0), t2.Sub(t1), time.Since(t2))

	return &agentapi.CreateContainerResponse{Pid: uint32(pid),
		MountsNs: uint64(t1.Sub(t0)), CreateNs: uint64(t2.Sub(t1)), StdioNs: uint64(time.Since(t2))}, nil
}

func (s *containerService) StartProcess(ctx context.Context, req *agentapi.ProcessRequest) (*agentapi.StartProcessResponse, error) {
	c, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if req.ExecId == "" {
		<-c.watched
		if err := c.rt.start(answerBy(ctx)); err != nil {
			return nil, status.Errorf(codes.Internal, "start container %s: %v", c.id, err)
		}
		return &agentapi.StartProcessResponse{Pid: uint32(p.pid)}, nil
	}
	if p.pid != 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "process %s already started", req.ExecId)
	}
	pid, err := s.startExec(c, p, answerBy(ctx))
	if err != nil {
		p.io.close()
		close(p.exited)
		// runc's words for a missing binary: "exec: \"x\": executable
		// file not found in $PATH".
		return nil, status.Errorf(codes.Internal, "exec process %s in container %s: %v", req.ExecId, c.id, err)
	}
	p.pid = pid
	go p.wait(s.reaper)
	if err := p.io.started(); err != nil {
		_ = p.signal(syscall.SIGKILL)
		return nil, status.Errorf(codes.Internal, "exec process %s console: %v", req.ExecId, err)
	}
	return &agentapi.StartProcessResponse{Pid: uint32(pid)}, nil
}

func (s *containerService) SignalProcess(ctx context.Context, req *agentapi.SignalProcessRequest) (*emptypb.Empty, error) {
	c, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	sig := syscall.Signal(req.Signal)
	if req.All && req.ExecId == "" {
		pids, err := c.rt.processes()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "list processes of %s: %v", c.id, err)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
		}
		return &emptypb.Empty{}, nil
	}
	if p.pid == 0 || p.hasExited() {
		return nil, status.Errorf(codes.NotFound, "process %s of container %s is not running", req.ExecId, c.id)
	}
	if req.ExecId == "" {
		err = c.rt.signalInit(sig)
	} else {
		err = p.signal(sig)
	}
	if err != nil {
		if errors.Is(err, errNotRunning) || errors.Is(err, libcontainer.ErrNotRunning) || errors.Is(err, os.ErrProcessDone) {
			return nil, status.Errorf(codes.NotFound, "process %s of container %s is not running", req.ExecId, c.id)
		}
		return nil, status.Errorf(codes.Internal, "signal %v: %v", sig, err)
	}
	return &emptypb.Empty{}, nil
}

func (s *containerService) WaitProcess(ctx context.Context, req *agentapi.ProcessRequest) (*agentapi.WaitProcessResponse, error) {
	c, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	pctx, cancel := pollContext(ctx)
	defer cancel()
	select {
	case <-p.exited:
		return &agentapi.WaitProcessResponse{ExitStatus: uint32(p.status), ExitedAt: timestamppb.New(p.exitedAt), OomKills: c.oomKills()}, nil
	case <-pctx.Done():
		return nil, notYet(pctx)
	}
}

func (s *containerService) DeleteContainer(ctx context.Context, req *agentapi.ContainerRequest) (*emptypb.Empty, error) {
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if !c.init.hasExited() {
		_ = c.rt.signalInit(syscall.SIGKILL)
		<-c.init.exited
	}
	c.mu.Lock()
	for _, p := range c.execs {
		if p.pid != 0 && !p.hasExited() {
			_ = p.signal(syscall.SIGKILL)
		}
		p.io.close()
	}
	c.mu.Unlock()
	c.init.io.close()
	<-c.watched
	c.guard.close()
	if err := c.rt.destroy(); err != nil {
		logf(levelWarn, "destroy container %s: %v", c.id, err)
	}
	s.mu.Lock()
	delete(s.containers, c.id)
	s.mu.Unlock()
	logf(levelDebug, "deleted container %s", c.id)
	return &emptypb.Empty{}, nil
}

func (s *containerService) Pids(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.PidsResponse, error) {
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	pids, err := c.rt.processes()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "list processes of %s: %v", c.id, err)
	}
	execOf := map[int]string{}
	c.mu.Lock()
	for id, p := range c.execs {
		execOf[p.pid] = id
	}
	c.mu.Unlock()
	resp := &agentapi.PidsResponse{}
	for _, pid := range pids {
		resp.Processes = append(resp.Processes, &agentapi.ProcessInfo{Pid: uint32(pid), ExecId: execOf[pid]})
	}
	return resp, nil
}

func (s *containerService) PauseContainer(ctx context.Context, req *agentapi.ContainerRequest) (*emptypb.Empty, error) {
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.rt.pause(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "pause %s: %v", c.id, err)
	}
	return &emptypb.Empty{}, nil
}

func (s *containerService) ResumeContainer(ctx context.Context, req *agentapi.ContainerRequest) (*emptypb.Empty, error) {
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.rt.resume(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "resume %s: %v", c.id, err)
	}
	return &emptypb.Empty{}, nil
}

func (s *containerService) ResizePty(ctx context.Context, req *agentapi.ResizePtyRequest) (*emptypb.Empty, error) {
	p, err := s.stdioProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if err := p.io.resize(req.Width, req.Height); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "resize: %v", err)
	}
	return &emptypb.Empty{}, nil
}

func (s *containerService) WaitOOM(ctx context.Context, _ *emptypb.Empty) (*agentapi.OOMEvent, error) {
	pctx, cancel := pollContext(ctx)
	defer cancel()
	select {
	case ev := <-s.oom:
		return ev, nil
	case <-pctx.Done():
		return nil, notYet(pctx)
	}
}

// watchOOM forwards the container's OOM kills to WaitOOM.
func (s *containerService) watchOOM(c *container) {
	base, ch, err := notifyOOM(c.rt.cgroupDir())
	if err != nil {
		logf(levelWarn, "container %s: no OOM notifications: %v", c.id, err)
		return
	}
	c.oomBase, c.oomWatched = base, true
	go func() {
		defer recoverPanic("oom")
		for n := range ch {
			select {
			case s.oom <- &agentapi.OOMEvent{ContainerId: c.id, Kills: n}:
			default:
			}
		}
	}()
}

// oomKills is the container's count of OOM kills since it was created (as
// far as the watch saw it begin).
func (c *container) oomKills() uint64 {
	<-c.watched
	if !c.oomWatched {
		return 0
	}
	return oomKills(c.rt.cgroupDir(), c.oomBase)
}

func (s *containerService) UpdateContainer(ctx context.Context, req *agentapi.UpdateContainerRequest) (*emptypb.Empty, error) {
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	c.memMu.Lock()
	err = updateResources(c.rt, req.Resources)
	c.memMu.Unlock()
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "update %s: %v", c.id, err)
	}
	return &emptypb.Empty{}, nil
}

func (s *containerService) CloseStdin(ctx context.Context, req *agentapi.ProcessRequest) (*emptypb.Empty, error) {
	p, err := s.stdioProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	p.io.closeStdin()
	return &emptypb.Empty{}, nil
}

// AttachInput starts taking a process's stdin from the stdio port.
func (s *containerService) AttachInput(ctx context.Context, req *agentapi.AttachInputRequest) (*emptypb.Empty, error) {
	if req.Id == 0 || req.Window == 0 || req.Window > agentapi.MaxWindow {
		return nil, status.Errorf(codes.InvalidArgument, "stdin stream id %d with window %d", req.Id, req.Window)
	}
	p, err := s.stdioProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if err := s.output.ready(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	if !p.io.attachInput() {
		return nil, status.Errorf(codes.AlreadyExists, "the stdin of process %q of %s is already attached", req.ExecId, req.ContainerId)
	}
	st, ok := s.output.attachInput(req.Id, req.Window)
	if !ok {
		return nil, status.Errorf(codes.AlreadyExists, "stream id %d is taken", req.Id)
	}
	go s.output.pull(req.Id, st, p.io, p.io.releasedCh())
	return &emptypb.Empty{}, nil
}

// AttachOutput starts sending a stream's output on the stdio port.
func (s *containerService) AttachOutput(ctx context.Context, req *agentapi.AttachOutputRequest) (*emptypb.Empty, error) {
	if req.Id == 0 || req.Window == 0 || req.Window > agentapi.MaxWindow {
		return nil, status.Errorf(codes.InvalidArgument, "output stream id %d with window %d", req.Id, req.Window)
	}
	p, err := s.stdioProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if err := s.output.ready(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	f, ok := p.io.output(req.Stream)
	if !ok {
		return nil, status.Errorf(codes.AlreadyExists, "the %v of process %q of %s is already attached", req.Stream, req.ExecId, req.ContainerId)
	}
	st, ok := s.output.attach(req.Id, req.Window)
	if !ok {
		return nil, status.Errorf(codes.AlreadyExists, "stream id %d is taken", req.Id)
	}
	go s.output.push(req.Id, st, f, p.io.terminal, p.io.releasedCh())
	return &emptypb.Empty{}, nil
}

func (s *containerService) Stats(ctx context.Context, req *agentapi.ContainerRequest) (*agentapi.StatsResponse, error) {
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	st, err := c.rt.stats()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "stats of %s: %v", c.id, err)
	}
	return statsResponse(st, c.cgroupDir()), nil
}

// cgroupDir is the container's cgroup in the guest.
func (c *container) cgroupDir() string {
	return c.rt.cgroupDir()
}
