package agent

// Processes exec'd into running containers.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/podvm/podvm/agent/cinit"
	agentapi "github.com/podvm/podvm/api/agent/v1"
)

func (s *containerService) ExecProcess(ctx context.Context, req *agentapi.ExecProcessRequest) (*emptypb.Empty, error) {
	c, err := s.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if !validID(req.ExecId) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid exec ID %q", req.ExecId)
	}
	spec, err := decodeProcess(req.Process)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	lp, err := newProcess(spec, false)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	pio, err := setupIO(req.Stdio, lp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "exec %s stdio: %v", req.ExecId, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[req.ExecId]; ok {
		pio.close()
		return nil, status.Errorf(codes.AlreadyExists, "process %s already exists in container %s", req.ExecId, c.id)
	}
	c.execs[req.ExecId] = &process{execID: req.ExecId, lp: lp, io: pio, exited: make(chan struct{})}
	return &emptypb.Empty{}, nil
}

func (s *containerService) DeleteProcess(ctx context.Context, req *agentapi.ProcessRequest) (*emptypb.Empty, error) {
	c, p, err := s.getProcess(req.ContainerId, req.ExecId)
	if err != nil {
		return nil, err
	}
	if req.ExecId == "" {
		return nil, status.Errorf(codes.InvalidArgument, "the init process goes with DeleteContainer")
	}
	if p.pid != 0 && !p.hasExited() {
		return nil, status.Errorf(codes.FailedPrecondition, "process %s is still running", req.ExecId)
	}
	p.io.close()
	c.mu.Lock()
	delete(c.execs, req.ExecId)
	c.mu.Unlock()
	return &emptypb.Empty{}, nil
}

// startExec starts an exec'd process: through cinit in a container cinit
// made, unless the process asks for what only libcontainer does.
func (s *containerService) startExec(c *container, p *process, by time.Time) (int, error) {
	if cr, ok := c.rt.(*cinitRuntime); ok {
		why := cr.cinitExecUnsupported(p.lp)
		if why == nil {
			if c.init.hasExited() {
				return 0, errors.New("cannot exec in a stopped container")
			}
			init, err := cr.execCinit(p.lp, s.reaper, by)
			if err != nil {
				return 0, err
			}
			p.cinit = init
			return init.Pid(), nil
		}
		logf(levelDebug, "exec %s in container %s through libcontainer: %v", p.execID, c.id, why)
	}
	return s.reaper.Start(func() (int, error) {
		if err := c.rt.exec(p.lp); err != nil {
			return 0, err
		}
		return p.lp.Pid()
	})
}

// cinitExecUnsupported says why a process exec'd into the container must
// go through libcontainer, or nil when cinit can start it.
func (r *cinitRuntime) cinitExecUnsupported(lp *libcontainer.Process) error {
	if err := cinitProcessUnsupported(lp); err != nil {
		return err
	}
	switch {
	case r.cfg.ExecCPUAffinity != nil:
		return errors.New("exec CPU affinity")
	case len(lp.ExtraFiles) > 0 || lp.LogLevel != "" || lp.PidfdSocket != nil:
		return errors.New("extra files, log level or pidfd socket")
	}
	return nil
}

// execCinit starts lp in the running container through cinit: born in the
// container's cgroup, it joins the init's namespaces in C and execs, with
// no Go runtime started in between (libcontainer's runc init starts one,
// most of an exec's time under TCG). It returns once the program runs, or
// the error that kept it from running.
func (r *cinitRuntime) execCinit(lp *libcontainer.Process, rp *reaper, by time.Time) (*cinit.Init, error) {
	if st, err := r.mgr.GetFreezerState(); err == nil && st == cgroups.Frozen {
		// runc's words, and for the same reason: the process would
		// freeze before it ran.
		return nil, errors.New("cannot exec in a paused container")
	}
	dir, err := os.Open(r.mgr.Path(""))
	if err != nil {
		return nil, fmt.Errorf("container cgroup: %w", err)
	}
	defer dir.Close()
	init, err := cinit.Spawn(0, dir, rp.Start, rp.Release)
	if err != nil {
		return nil, err
	}
	// Fields an update does not change; the container's own settings
	// where the process has none, as libcontainer's exec does.
	cfg := r.cfg
	p := cinitProcess(cfg, lp)
	if p.Capabilities == nil {
		p.Capabilities = cfg.Capabilities
	}
	if err := setOOMScoreAdj(init.Pid(), cfg.OomScoreAdj); err != nil {
		init.Kill()
		return nil, err
	}
	if err := init.Exec(r.id, r.init.Pid, cfg, p, createTimeout); err != nil {
		return nil, err
	}
	if err := init.Start(by); err != nil {
		init.Kill()
		return nil, err
	}
	return init, nil
}
