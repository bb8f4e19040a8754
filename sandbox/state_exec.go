package sandbox

import (
	"errors"
	"fmt"

	"github.com/containerd/containerd/errdefs"
)

// An exec process's states (runc shim's exec_state.go): it runs in its
// container's cgroup, so it is never paused, resumed or updated on its
// own, and nothing execs into it.

var errExecPause = fmt.Errorf("cannot pause or resume an exec process: %w", errdefs.ErrNotImplemented)

type execCreatedState struct{}

func (execCreatedState) name() string           { return "created" }
func (execCreatedState) start() (state, error)  { return execRunningState{}, nil }
func (execCreatedState) delete() (state, error) { return deletedState{}, nil }
func (execCreatedState) kill() error            { return nil }
func (execCreatedState) pause() (state, error)  { return nil, errExecPause }
func (execCreatedState) resume() (state, error) { return nil, errExecPause }
func (execCreatedState) update() error          { return errors.New("cannot update an exec process") }
func (execCreatedState) canExec() error         { return errors.New("cannot exec in an exec process") }
func (execCreatedState) exited() state          { return execStoppedState{} }

type execRunningState struct{}

func (execRunningState) name() string { return "running" }
func (execRunningState) start() (state, error) {
	return nil, errors.New("cannot start a running process")
}
func (execRunningState) delete() (state, error) {
	return nil, errors.New("cannot delete a running process")
}
func (execRunningState) kill() error            { return nil }
func (execRunningState) pause() (state, error)  { return nil, errExecPause }
func (execRunningState) resume() (state, error) { return nil, errExecPause }
func (execRunningState) update() error          { return errors.New("cannot update an exec process") }
func (execRunningState) canExec() error         { return errors.New("cannot exec in an exec process") }
func (execRunningState) exited() state          { return execStoppedState{} }

type execStoppedState struct{}

func (execStoppedState) name() string { return "stopped" }
func (execStoppedState) start() (state, error) {
	return nil, errors.New("cannot start a stopped process")
}
func (execStoppedState) delete() (state, error) { return deletedState{}, nil }
func (execStoppedState) kill() error {
	return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
}
func (execStoppedState) pause() (state, error)  { return nil, errExecPause }
func (execStoppedState) resume() (state, error) { return nil, errExecPause }
func (execStoppedState) update() error          { return errors.New("cannot update an exec process") }
func (execStoppedState) canExec() error         { return errors.New("cannot exec in an exec process") }
func (s execStoppedState) exited() state        { return s }
