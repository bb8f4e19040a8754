package shim

import (
	"context"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	ptypes "github.com/containerd/containerd/protobuf/types"

	"github.com/podvm/podvm/metrics"
)

// observed is the task service as containerd reaches it: every call timed
// and every failure counted for the shim's metrics.
type observed struct {
	s *service
	m *metrics.Shim
}

func observe[R any](m *metrics.Shim, method string, call func() (R, error)) (R, error) {
	start := time.Now()
	r, err := call()
	m.TaskCall(method, time.Since(start), err)
	return r, err
}

func (o observed) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return observe(o.m, "Create", func() (*taskAPI.CreateTaskResponse, error) { return o.s.Create(ctx, r) })
}

func (o observed) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return observe(o.m, "Start", func() (*taskAPI.StartResponse, error) { return o.s.Start(ctx, r) })
}

func (o observed) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return observe(o.m, "Delete", func() (*taskAPI.DeleteResponse, error) { return o.s.Delete(ctx, r) })
}

func (o observed) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	return observe(o.m, "Exec", func() (*ptypes.Empty, error) { return o.s.Exec(ctx, r) })
}

func (o observed) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	return observe(o.m, "ResizePty", func() (*ptypes.Empty, error) { return o.s.ResizePty(ctx, r) })
}

func (o observed) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return observe(o.m, "State", func() (*taskAPI.StateResponse, error) { return o.s.State(ctx, r) })
}

func (o observed) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return observe(o.m, "Pause", func() (*ptypes.Empty, error) { return o.s.Pause(ctx, r) })
}

func (o observed) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return observe(o.m, "Resume", func() (*ptypes.Empty, error) { return o.s.Resume(ctx, r) })
}

func (o observed) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	return observe(o.m, "Kill", func() (*ptypes.Empty, error) { return o.s.Kill(ctx, r) })
}

func (o observed) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return observe(o.m, "Pids", func() (*taskAPI.PidsResponse, error) { return o.s.Pids(ctx, r) })
}

func (o observed) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	return observe(o.m, "CloseIO", func() (*ptypes.Empty, error) { return o.s.CloseIO(ctx, r) })
}

func (o observed) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return observe(o.m, "Checkpoint", func() (*ptypes.Empty, error) { return o.s.Checkpoint(ctx, r) })
}

func (o observed) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return observe(o.m, "Update", func() (*ptypes.Empty, error) { return o.s.Update(ctx, r) })
}

func (o observed) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return observe(o.m, "Wait", func() (*taskAPI.WaitResponse, error) { return o.s.Wait(ctx, r) })
}

func (o observed) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return observe(o.m, "Stats", func() (*taskAPI.StatsResponse, error) { return o.s.Stats(ctx, r) })
}

func (o observed) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return observe(o.m, "Connect", func() (*taskAPI.ConnectResponse, error) { return o.s.Connect(ctx, r) })
}

func (o observed) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	return observe(o.m, "Shutdown", func() (*ptypes.Empty, error) { return o.s.Shutdown(ctx, r) })
}
