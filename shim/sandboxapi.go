package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	goruntime "runtime"
	"sync"
	"syscall"
	"time"

	sandboxAPI "github.com/containerd/containerd/api/runtime/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/podvm/podvm/sandbox"
	"github.com/podvm/podvm/vmconfig"
)

// sandboxService is containerd's Sandbox API (a runtime with sandboxer =
// "shim", containerd 2.0 and later) for the shim's pod: CreateSandbox takes
// the pod's configuration, StartSandbox boots its VM before any container,
// which then come through the task API as into a pause container's pod;
// StopSandbox ends the VM and ShutdownSandbox the shim.
type sandboxService struct {
	s *service

	mu sync.Mutex
	// created is the pod CreateSandbox described, for StartSandbox.
	created *sandbox.PodConfig
}

var _ sandboxAPI.TTRPCSandboxService = (*sandboxService)(nil)

// checkSandbox refuses a request for another sandbox than the shim's.
func (ss *sandboxService) checkSandbox(id string) error {
	if id != ss.s.pod.ID() {
		return errdefs.ToGRPCf(errdefs.ErrNotFound, "sandbox %q: this shim serves sandbox %s", truncate(id, 100), ss.s.pod.ID())
	}
	return nil
}

// invalid is a bad request's error for containerd: its message once,
// with its kind.
func invalid(err error) error {
	if !errdefs.IsInvalidArgument(err) {
		err = fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return errdefs.ToGRPC(fmt.Errorf("podvm: %w", err))
}

// startResponseSpec is StartSandboxResponse's spec (containerd 2.x reads
// it; the API module podvm builds on predates the field): set as an
// unknown field, which protobuf marshals as any other.
const startResponseSpec = 3

func withSpec(resp *sandboxAPI.StartSandboxResponse, spec typeurl.Any) error {
	b, err := proto.Marshal(&anypb.Any{TypeUrl: spec.GetTypeUrl(), Value: spec.GetValue()})
	if err != nil {
		return err
	}
	field := protowire.AppendTag(nil, startResponseSpec, protowire.BytesType)
	resp.ProtoReflect().SetUnknown(protowire.AppendBytes(field, b))
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (ss *sandboxService) CreateSandbox(ctx context.Context, r *sandboxAPI.CreateSandboxRequest) (*sandboxAPI.CreateSandboxResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	pc, err := podConfigOf(r.Options, r.NetnsPath, r.Annotations)
	if err == nil {
		err = pc.Check()
	}
	if err == nil {
		var cfg *vmconfig.Config
		if cfg, err = withRuntimeOptions(ss.s.pod.Config(), ss.s.startOptions); err == nil {
			err = ss.s.pod.Configure(cfg, pc.Annotations)
		}
	}
	if err != nil {
		log.G(ctx).WithError(err).Error("create sandbox")
		return nil, invalid(err)
	}
	// Before anything is made: `delete` finds it all from here.
	if r.BundlePath != "" {
		if err := sandbox.WriteRecord(r.BundlePath, sandbox.Record{SandboxID: ss.s.pod.ID(), SandboxDir: ss.s.pod.StateDir()}); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	}
	ss.mu.Lock()
	ss.created = &pc
	ss.mu.Unlock()
	return &sandboxAPI.CreateSandboxResponse{}, nil
}

func (ss *sandboxService) StartSandbox(ctx context.Context, r *sandboxAPI.StartSandboxRequest) (*sandboxAPI.StartSandboxResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	ss.mu.Lock()
	pc := ss.created
	ss.mu.Unlock()
	if pc == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "sandbox %s was not created: call CreateSandbox first", r.SandboxID)
	}
	if err := ss.s.pod.Start(ctx, *pc); err != nil {
		log.G(ctx).WithError(err).Error("start sandbox")
		return nil, errdefs.ToGRPC(err)
	}
	st := ss.s.pod.Status()
	spec, err := typeurl.MarshalAny(pc.Spec(r.SandboxID))
	if err != nil {
		return nil, fmt.Errorf("sandbox spec: %w", err)
	}
	resp := &sandboxAPI.StartSandboxResponse{Pid: uint32(st.Pid), CreatedAt: protobuf.ToTimestamp(st.StartedAt)}
	if err := withSpec(resp, spec); err != nil {
		return nil, err
	}
	return resp, nil
}

func (ss *sandboxService) Platform(ctx context.Context, r *sandboxAPI.PlatformRequest) (*sandboxAPI.PlatformResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	// The guest runs the host's architecture: QEMU emulates no other.
	return &sandboxAPI.PlatformResponse{Platform: &types.Platform{OS: "linux", Architecture: goruntime.GOARCH}}, nil
}

// StopSandbox asks the pod's containers that still run to stop (SIGTERM),
// gives them the timeout, then ends the VM. CRI has stopped them itself
// by then; another client may not have.
func (ss *sandboxService) StopSandbox(ctx context.Context, r *sandboxAPI.StopSandboxRequest) (*sandboxAPI.StopSandboxResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	if r.TimeoutSecs > 0 {
		ss.stopContainers(ctx, time.Duration(r.TimeoutSecs)*time.Second)
	}
	if err := ss.s.pod.Stop(ctx); err != nil {
		log.G(ctx).WithError(err).Error("stop sandbox")
		return nil, errdefs.ToGRPC(err)
	}
	return &sandboxAPI.StopSandboxResponse{}, nil
}

// stopContainers sends SIGTERM to the init of each running container and
// waits for them, at most timeout.
func (ss *sandboxService) stopContainers(ctx context.Context, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range ss.s.pod.All() {
		p := c.Init()
		if p.Status() != "running" {
			continue
		}
		if err := p.Kill(ctx, uint32(syscall.SIGTERM), false); err != nil {
			log.G(ctx).WithError(err).WithField("container", c.ID()).Warn("stop container")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Wait(ctx)
		}()
	}
	wg.Wait()
}

func (ss *sandboxService) WaitSandbox(ctx context.Context, r *sandboxAPI.WaitSandboxRequest) (*sandboxAPI.WaitSandboxResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	status, at, err := ss.s.pod.Wait(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &sandboxAPI.WaitSandboxResponse{ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// sandboxInfo is the verbose status under info.podvm of `crictl
// inspectp`. CRI keeps only the fields it knows of info.info (the pid).
type sandboxInfo struct {
	Pid        int    `json:"qemuPid"`
	Phase      string `json:"phase"`
	StateDir   string `json:"stateDir"`
	ShimPid    int    `json:"shimPid"`
	Containers int    `json:"containers"`
}

func (ss *sandboxService) SandboxStatus(ctx context.Context, r *sandboxAPI.SandboxStatusRequest) (*sandboxAPI.SandboxStatusResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	st := ss.s.pod.Status()
	state := "SANDBOX_NOTREADY"
	if st.Ready {
		state = "SANDBOX_READY"
	}
	resp := &sandboxAPI.SandboxStatusResponse{SandboxID: r.SandboxID, Pid: uint32(st.Pid), State: state}
	if !st.StartedAt.IsZero() {
		resp.CreatedAt = protobuf.ToTimestamp(st.StartedAt)
	}
	if !st.ExitedAt.IsZero() {
		resp.ExitedAt = protobuf.ToTimestamp(st.ExitedAt)
	}
	if r.Verbose {
		b, err := json.Marshal(sandboxInfo{Pid: st.Pid, Phase: st.Phase, StateDir: ss.s.pod.StateDir(), ShimPid: os.Getpid(), Containers: len(ss.s.pod.All())})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": fmt.Sprintf(`{"pid":%d}`, st.Pid), "podvm": string(b)}
	}
	return resp, nil
}

// PingSandbox answers while the shim lives, and fails while the VM runs
// but its agent does not answer.
func (ss *sandboxService) PingSandbox(ctx context.Context, r *sandboxAPI.PingRequest) (*sandboxAPI.PingResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	if g := ss.s.pod.Guest(); g != nil {
		if _, err := g.Health(ctx); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrUnavailable, "the guest of sandbox %s does not answer: %v", r.SandboxID, err)
		}
	}
	return &sandboxAPI.PingResponse{}, nil
}

// shutdownGrace is how long the shim lives on after answering
// ShutdownSandbox: the shim library exits as soon as shutdown begins, and
// containerd (unlike for the task API's Shutdown) fails a removal whose
// ShutdownSandbox gets no answer.
const shutdownGrace = 500 * time.Millisecond

// ShutdownSandbox stops the pod if it still runs, answers, and then ends
// the shim once its last events are out. Asking again changes nothing.
func (ss *sandboxService) ShutdownSandbox(ctx context.Context, r *sandboxAPI.ShutdownSandboxRequest) (*sandboxAPI.ShutdownSandboxResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	if err := ss.s.pod.Stop(ctx); err != nil {
		log.G(ctx).WithError(err).Error("stop sandbox")
	}
	time.AfterFunc(shutdownGrace, ss.s.shutdown.Shutdown)
	return &sandboxAPI.ShutdownSandboxResponse{}, nil
}

func (ss *sandboxService) SandboxMetrics(ctx context.Context, r *sandboxAPI.SandboxMetricsRequest) (*sandboxAPI.SandboxMetricsResponse, error) {
	if err := ss.checkSandbox(r.SandboxID); err != nil {
		return nil, err
	}
	stats, err := ss.s.pod.HostStats()
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	data, err := typeurl.MarshalAny(stats)
	if err != nil {
		return nil, fmt.Errorf("sandbox metrics: %w", err)
	}
	return &sandboxAPI.SandboxMetricsResponse{Metrics: &types.Metric{
		Timestamp: protobuf.ToTimestamp(time.Now()), ID: r.SandboxID, Data: protobuf.FromAny(data),
	}}, nil
}
