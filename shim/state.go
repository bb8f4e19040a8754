package shim

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd/errdefs"
)

// state is where a process is in its life, after containerd's runc shim
// (pkg/process/init_state.go): each state either performs an operation,
// moving the process on, or refuses it with the error runc's shim gives.
// Operations run with the process's lock held.
type state interface {
	name() string
	start(ctx context.Context) error
	delete(ctx context.Context) error
	kill(ctx context.Context, sig uint32, all bool) error
	pause(ctx context.Context) error
	resume(ctx context.Context) error
	update(ctx context.Context, resources []byte) error
	canExec() error
	setExited(status uint32)
}

type createdState struct{ p *process }

func (s createdState) name() string { return "created" }
func (s createdState) start(ctx context.Context) error {
	if err := s.p.doStart(ctx); err != nil {
		return err
	}
	s.p.state = runningState(s)
	return nil
}
func (s createdState) delete(ctx context.Context) error {
	if err := s.p.doDelete(ctx); err != nil {
		return err
	}
	s.p.state = deletedState{}
	return nil
}
func (s createdState) kill(ctx context.Context, sig uint32, all bool) error {
	return s.p.doKill(ctx, sig, all)
}
func (s createdState) pause(context.Context) error {
	return errors.New("cannot pause task in created state")
}
func (s createdState) resume(context.Context) error {
	return errors.New("cannot resume task in created state")
}
func (s createdState) update(ctx context.Context, r []byte) error { return s.p.doUpdate(ctx, r) }
func (s createdState) canExec() error {
	return errors.New("cannot exec in a created state")
}
func (s createdState) setExited(status uint32) {
	s.p.markExited(status)
	s.p.state = stoppedState(s)
}

type runningState struct{ p *process }

func (s runningState) name() string { return "running" }
func (s runningState) start(context.Context) error {
	return errors.New("cannot start a running process")
}
func (s runningState) delete(context.Context) error {
	return errors.New("cannot delete a running process")
}
func (s runningState) kill(ctx context.Context, sig uint32, all bool) error {
	return s.p.doKill(ctx, sig, all)
}
func (s runningState) pause(ctx context.Context) error {
	if s.p.execID != "" {
		return fmt.Errorf("cannot pause an exec process: %w", errdefs.ErrNotImplemented)
	}
	if err := s.p.doPause(ctx); err != nil {
		return err
	}
	s.p.state = pausedState(s)
	return nil
}
func (s runningState) resume(context.Context) error {
	return errors.New("cannot resume a running process")
}
func (s runningState) update(ctx context.Context, r []byte) error { return s.p.doUpdate(ctx, r) }
func (s runningState) canExec() error                             { return nil }
func (s runningState) setExited(status uint32) {
	s.p.markExited(status)
	s.p.state = stoppedState(s)
}

type pausedState struct{ p *process }

func (s pausedState) name() string { return "paused" }
func (s pausedState) start(context.Context) error {
	return errors.New("cannot start a paused process")
}
func (s pausedState) delete(context.Context) error {
	return errors.New("cannot delete a paused process")
}
func (s pausedState) kill(ctx context.Context, sig uint32, all bool) error {
	return s.p.doKill(ctx, sig, all)
}
func (s pausedState) pause(context.Context) error {
	return errors.New("cannot pause a paused container")
}
func (s pausedState) resume(ctx context.Context) error {
	if err := s.p.doResume(ctx); err != nil {
		return err
	}
	s.p.state = runningState(s)
	return nil
}
func (s pausedState) update(ctx context.Context, r []byte) error { return s.p.doUpdate(ctx, r) }
func (s pausedState) canExec() error {
	return errors.New("cannot exec in a paused state")
}
func (s pausedState) setExited(status uint32) {
	s.p.markExited(status)
	s.p.state = stoppedState(s)
}

type stoppedState struct{ p *process }

func (s stoppedState) name() string { return "stopped" }
func (s stoppedState) start(context.Context) error {
	return errors.New("cannot start a stopped process")
}
func (s stoppedState) delete(ctx context.Context) error {
	if err := s.p.doDelete(ctx); err != nil {
		return err
	}
	s.p.state = deletedState{}
	return nil
}
func (s stoppedState) kill(context.Context, uint32, bool) error {
	return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
}
func (s stoppedState) pause(context.Context) error {
	return errors.New("cannot pause a stopped container")
}
func (s stoppedState) resume(context.Context) error {
	return errors.New("cannot resume a stopped container")
}
func (s stoppedState) update(context.Context, []byte) error {
	return errors.New("cannot update a stopped container")
}
func (s stoppedState) canExec() error {
	return errors.New("cannot exec in a stopped state")
}
func (s stoppedState) setExited(uint32) {}

type deletedState struct{}

func (deletedState) name() string { return "deleted" }
func (deletedState) start(context.Context) error {
	return errors.New("cannot start a deleted process")
}
func (deletedState) delete(context.Context) error {
	return fmt.Errorf("cannot delete a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) kill(context.Context, uint32, bool) error {
	return fmt.Errorf("cannot kill a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) pause(context.Context) error {
	return errors.New("cannot pause a deleted process")
}
func (deletedState) resume(context.Context) error {
	return errors.New("cannot resume a deleted process")
}
func (deletedState) update(context.Context, []byte) error {
	return errors.New("cannot update a deleted process")
}
func (deletedState) canExec() error {
	return errors.New("cannot exec in a deleted state")
}
func (deletedState) setExited(uint32) {}
