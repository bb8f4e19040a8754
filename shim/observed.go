package shim

import (
	"context"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/log"

	"github.com/podvm/podvm/metrics"
)

// observed is the task service as containerd reaches it: every call timed
// and every failure counted for the shim's metrics.
type observed struct {
	s *service
	m *metrics.Shim
}

// observe makes the call with the IDs it concerns in the context's logger
// (every log line of a request names its sandbox and container), and
// records it in the metrics.
func observe[R any](ctx context.Context, o observed, method string, req any, call func(context.Context) (R, error)) (R, error) {
	fields := log.Fields{"sandbox": o.s.pod.ID()}
	if r, ok := req.(interface{ GetID() string }); ok && r.GetID() != "" {
		fields["container"] = r.GetID()
	}
	if r, ok := req.(interface{ GetExecID() string }); ok && r.GetExecID() != "" {
		fields["exec"] = r.GetExecID()
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(fields))
	start := time.Now()
	r, err := call(ctx)
	o.m.TaskCall(method, time.Since(start), err)
	return r, err
}

func (o observed) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return observe(ctx, o, "Create", r, func(ctx context.Context) (*taskAPI.CreateTaskResponse, error) { return o.s.Create(ctx, r) })
}

func (o observed) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return observe(ctx, o, "Start", r, func(ctx context.Context) (*taskAPI.StartResponse, error) { return o.s.Start(ctx, r) })
}

func (o observed) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return observe(ctx, o, "Delete", r, func(ctx context.Context) (*taskAPI.DeleteResponse, error) { return o.s.Delete(ctx, r) })
}

func (o observed) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "Exec", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.Exec(ctx, r) })
}

func (o observed) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "ResizePty", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.ResizePty(ctx, r) })
}

func (o observed) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return observe(ctx, o, "State", r, func(ctx context.Context) (*taskAPI.StateResponse, error) { return o.s.State(ctx, r) })
}

func (o observed) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "Pause", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.Pause(ctx, r) })
}

func (o observed) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "Resume", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.Resume(ctx, r) })
}

func (o observed) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "Kill", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.Kill(ctx, r) })
}

func (o observed) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return observe(ctx, o, "Pids", r, func(ctx context.Context) (*taskAPI.PidsResponse, error) { return o.s.Pids(ctx, r) })
}

func (o observed) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "CloseIO", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.CloseIO(ctx, r) })
}

func (o observed) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "Checkpoint", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.Checkpoint(ctx, r) })
}

func (o observed) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "Update", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.Update(ctx, r) })
}

func (o observed) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return observe(ctx, o, "Wait", r, func(ctx context.Context) (*taskAPI.WaitResponse, error) { return o.s.Wait(ctx, r) })
}

func (o observed) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return observe(ctx, o, "Stats", r, func(ctx context.Context) (*taskAPI.StatsResponse, error) { return o.s.Stats(ctx, r) })
}

func (o observed) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return observe(ctx, o, "Connect", r, func(ctx context.Context) (*taskAPI.ConnectResponse, error) { return o.s.Connect(ctx, r) })
}

func (o observed) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	return observe(ctx, o, "Shutdown", r, func(ctx context.Context) (*ptypes.Empty, error) { return o.s.Shutdown(ctx, r) })
}
