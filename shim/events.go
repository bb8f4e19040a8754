package shim

import (
	"context"
	"fmt"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
)

// events publishes task events in the order they are queued, on one
// goroutine: publishing dials containerd and can block for seconds, which
// must never hold up the task API.
type events struct {
	queue     chan any
	done      chan struct{}
	publisher shim.Publisher
}

func newEvents(ctx context.Context, publisher shim.Publisher) *events {
	e := &events{queue: make(chan any, 512), done: make(chan struct{}), publisher: publisher}
	go func() {
		defer close(e.done)
		for ev := range e.queue {
			topic, err := topicOf(ev)
			if err != nil {
				log.G(ctx).WithError(err).Error("drop event")
				continue
			}
			if err := publisher.Publish(ctx, topic, ev); err != nil {
				log.G(ctx).WithError(err).WithField("topic", topic).Error("publish event")
			}
		}
	}()
	return e
}

func (e *events) send(ev any) { e.queue <- ev }

// Exited is sandbox.Events: a process's exit, published as containerd's
// TaskExit, whose ID is the exec's, or the container's for its init.
func (e *events) Exited(containerID, execID string, pid, status uint32, at time.Time) {
	id := execID
	if id == "" {
		id = containerID
	}
	e.send(&eventstypes.TaskExit{
		ContainerID: containerID, ID: id, Pid: pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	})
}

// OOM is sandbox.Events: an OOM kill in a container.
func (e *events) OOM(containerID string) { e.send(&eventstypes.TaskOOM{ContainerID: containerID}) }

// close stops publishing after the queued events are out; the shim exits
// once the publisher is closed.
func (e *events) close() {
	close(e.queue)
	<-e.done
	e.publisher.Close()
}

func topicOf(ev any) (string, error) {
	switch ev.(type) {
	case *eventstypes.TaskCreate:
		return runtime.TaskCreateEventTopic, nil
	case *eventstypes.TaskStart:
		return runtime.TaskStartEventTopic, nil
	case *eventstypes.TaskOOM:
		return runtime.TaskOOMEventTopic, nil
	case *eventstypes.TaskExit:
		return runtime.TaskExitEventTopic, nil
	case *eventstypes.TaskDelete:
		return runtime.TaskDeleteEventTopic, nil
	case *eventstypes.TaskExecAdded:
		return runtime.TaskExecAddedEventTopic, nil
	case *eventstypes.TaskExecStarted:
		return runtime.TaskExecStartedEventTopic, nil
	case *eventstypes.TaskPaused:
		return runtime.TaskPausedEventTopic, nil
	case *eventstypes.TaskResumed:
		return runtime.TaskResumedEventTopic, nil
	case *eventstypes.TaskCheckpointed:
		return runtime.TaskCheckpointedEventTopic, nil
	}
	return "", fmt.Errorf("no topic for event %T", ev)
}
