package sandbox

import (
	"errors"
	"fmt"

	"github.com/containerd/containerd/errdefs"
)

// state is where a process is in its life, after containerd's runc shim
// (pkg/process/init_state.go and exec_state.go): an init process and an
// exec process go through different states. Each operation says whether
// it is allowed now, with the error runc's shim gives when it is not, and
// for those that move the process on, the state it is in once the guest
// has done it. The states only decide; Process runs the operation in the
// guest without holding its lock.
type state interface {
	name() string
	start() (state, error)
	delete() (state, error)
	kill() error
	pause() (state, error)
	resume() (state, error)
	update() error
	canExec() error
	// exited is the state once the process has exited.
	exited() state
}

type createdState struct{}

func (createdState) name() string           { return "created" }
func (createdState) start() (state, error)  { return runningState{}, nil }
func (createdState) delete() (state, error) { return deletedState{}, nil }
func (createdState) kill() error            { return nil }
func (createdState) update() error          { return nil }
func (createdState) exited() state          { return stoppedState{} }
func (createdState) pause() (state, error) {
	return nil, errors.New("cannot pause task in created state")
}
func (createdState) resume() (state, error) {
	return nil, errors.New("cannot resume task in created state")
}
func (createdState) canExec() error { return errors.New("cannot exec in a created state") }

type runningState struct{}

func (runningState) name() string          { return "running" }
func (runningState) start() (state, error) { return nil, errors.New("cannot start a running process") }
func (runningState) delete() (state, error) {
	return nil, errors.New("cannot delete a running process")
}
func (runningState) kill() error           { return nil }
func (runningState) pause() (state, error) { return pausedState{}, nil }
func (runningState) resume() (state, error) {
	return nil, errors.New("cannot resume a running process")
}
func (runningState) update() error  { return nil }
func (runningState) canExec() error { return nil }
func (runningState) exited() state  { return stoppedState{} }

type pausedState struct{}

func (pausedState) name() string           { return "paused" }
func (pausedState) start() (state, error)  { return nil, errors.New("cannot start a paused process") }
func (pausedState) delete() (state, error) { return nil, errors.New("cannot delete a paused process") }
func (pausedState) kill() error            { return nil }
func (pausedState) pause() (state, error)  { return nil, errors.New("cannot pause a paused container") }
func (pausedState) resume() (state, error) { return runningState{}, nil }
func (pausedState) update() error          { return nil }
func (pausedState) canExec() error         { return errors.New("cannot exec in a paused state") }
func (pausedState) exited() state          { return stoppedState{} }

type stoppedState struct{}

func (stoppedState) name() string           { return "stopped" }
func (stoppedState) start() (state, error)  { return nil, errors.New("cannot start a stopped process") }
func (stoppedState) delete() (state, error) { return deletedState{}, nil }
func (stoppedState) kill() error {
	return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
}
func (stoppedState) pause() (state, error) {
	return nil, errors.New("cannot pause a stopped container")
}
func (stoppedState) resume() (state, error) {
	return nil, errors.New("cannot resume a stopped container")
}
func (stoppedState) update() error   { return errors.New("cannot update a stopped container") }
func (stoppedState) canExec() error  { return errors.New("cannot exec in a stopped state") }
func (s stoppedState) exited() state { return s }

type deletedState struct{}

func (deletedState) name() string { return "deleted" }
func (deletedState) start() (state, error) {
	return nil, errors.New("cannot start a deleted process")
}
func (deletedState) delete() (state, error) {
	return nil, fmt.Errorf("cannot delete a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) kill() error {
	return fmt.Errorf("cannot kill a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) pause() (state, error) { return nil, errors.New("cannot pause a deleted process") }
func (deletedState) resume() (state, error) {
	return nil, errors.New("cannot resume a deleted process")
}
func (deletedState) update() error   { return errors.New("cannot update a deleted process") }
func (deletedState) canExec() error  { return errors.New("cannot exec in a deleted state") }
func (s deletedState) exited() state { return s }
