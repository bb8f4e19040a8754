package shim

import (
	"context"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"google.golang.org/protobuf/proto"
)

// Task API v3 is task API v2 under another service name (containerd 2.x
// speaks it to shims whose bootstrap result says version 3): the same
// messages, field for field. taskV3 serves it by translating each request
// for the v2 service and the answer back, through the wire format.
type taskV3 struct{ v2 taskv2.TaskService }

var _ taskv3.TTRPCTaskService = taskV3{}

// via calls a v2 method with a v3 request.
func via[Req2, Resp2, Resp3 any, PReq2 interface {
	*Req2
	proto.Message
}, PResp2 interface {
	*Resp2
	proto.Message
}, PResp3 interface {
	*Resp3
	proto.Message
}](ctx context.Context, in proto.Message, call func(context.Context, PReq2) (PResp2, error)) (PResp3, error) {
	req := PReq2(new(Req2))
	if err := recode(in, req); err != nil {
		return nil, err
	}
	resp, err := call(ctx, req)
	if err != nil {
		return nil, err
	}
	out := PResp3(new(Resp3))
	if err := recode(resp, out); err != nil {
		return nil, err
	}
	return out, nil
}

func recode(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, to)
}

func (t taskV3) State(ctx context.Context, r *taskv3.StateRequest) (*taskv3.StateResponse, error) {
	return via[taskv2.StateRequest, taskv2.StateResponse, taskv3.StateResponse](ctx, r, t.v2.State)
}

func (t taskV3) Create(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, error) {
	return via[taskv2.CreateTaskRequest, taskv2.CreateTaskResponse, taskv3.CreateTaskResponse](ctx, r, t.v2.Create)
}

func (t taskV3) Start(ctx context.Context, r *taskv3.StartRequest) (*taskv3.StartResponse, error) {
	return via[taskv2.StartRequest, taskv2.StartResponse, taskv3.StartResponse](ctx, r, t.v2.Start)
}

func (t taskV3) Delete(ctx context.Context, r *taskv3.DeleteRequest) (*taskv3.DeleteResponse, error) {
	return via[taskv2.DeleteRequest, taskv2.DeleteResponse, taskv3.DeleteResponse](ctx, r, t.v2.Delete)
}

func (t taskV3) Pids(ctx context.Context, r *taskv3.PidsRequest) (*taskv3.PidsResponse, error) {
	return via[taskv2.PidsRequest, taskv2.PidsResponse, taskv3.PidsResponse](ctx, r, t.v2.Pids)
}

func (t taskV3) Pause(ctx context.Context, r *taskv3.PauseRequest) (*ptypes.Empty, error) {
	return via[taskv2.PauseRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.Pause)
}

func (t taskV3) Resume(ctx context.Context, r *taskv3.ResumeRequest) (*ptypes.Empty, error) {
	return via[taskv2.ResumeRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.Resume)
}

func (t taskV3) Checkpoint(ctx context.Context, r *taskv3.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return via[taskv2.CheckpointTaskRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.Checkpoint)
}

func (t taskV3) Kill(ctx context.Context, r *taskv3.KillRequest) (*ptypes.Empty, error) {
	return via[taskv2.KillRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.Kill)
}

func (t taskV3) Exec(ctx context.Context, r *taskv3.ExecProcessRequest) (*ptypes.Empty, error) {
	return via[taskv2.ExecProcessRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.Exec)
}

func (t taskV3) ResizePty(ctx context.Context, r *taskv3.ResizePtyRequest) (*ptypes.Empty, error) {
	return via[taskv2.ResizePtyRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.ResizePty)
}

func (t taskV3) CloseIO(ctx context.Context, r *taskv3.CloseIORequest) (*ptypes.Empty, error) {
	return via[taskv2.CloseIORequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.CloseIO)
}

func (t taskV3) Update(ctx context.Context, r *taskv3.UpdateTaskRequest) (*ptypes.Empty, error) {
	return via[taskv2.UpdateTaskRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.Update)
}

func (t taskV3) Wait(ctx context.Context, r *taskv3.WaitRequest) (*taskv3.WaitResponse, error) {
	return via[taskv2.WaitRequest, taskv2.WaitResponse, taskv3.WaitResponse](ctx, r, t.v2.Wait)
}

func (t taskV3) Stats(ctx context.Context, r *taskv3.StatsRequest) (*taskv3.StatsResponse, error) {
	return via[taskv2.StatsRequest, taskv2.StatsResponse, taskv3.StatsResponse](ctx, r, t.v2.Stats)
}

func (t taskV3) Connect(ctx context.Context, r *taskv3.ConnectRequest) (*taskv3.ConnectResponse, error) {
	return via[taskv2.ConnectRequest, taskv2.ConnectResponse, taskv3.ConnectResponse](ctx, r, t.v2.Connect)
}

func (t taskV3) Shutdown(ctx context.Context, r *taskv3.ShutdownRequest) (*ptypes.Empty, error) {
	return via[taskv2.ShutdownRequest, ptypes.Empty, ptypes.Empty](ctx, r, t.v2.Shutdown)
}
