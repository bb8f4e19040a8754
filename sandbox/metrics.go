package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"github.com/podvm/podvm/metrics"
)

// serveMetrics starts the sandbox's metrics socket in its state directory
// (`containerd-shim-podvm-v2 metrics` gathers them all). A shim without
// metrics still runs pods: a failure is logged, not returned.
func (sb *Pod) serveMetrics() {
	sb.metrics = metrics.NewShim(sb.id, sb)
	if err := os.MkdirAll(sb.dir, 0o700); err != nil {
		log.G(sb.ctx).WithError(err).Warn("no metrics socket")
		return
	}
	srv, err := sb.metrics.Serve(filepath.Join(sb.dir, metrics.SocketName))
	if err != nil {
		log.G(sb.ctx).WithError(err).Warn("no metrics socket")
		return
	}
	sb.metricsServer = srv
}

// QEMUPid is for the metrics: the running VM's QEMU, or 0.
func (sb *Pod) QEMUPid() int {
	if g := sb.running.Load(); g != nil {
		return g.VM.PID()
	}
	return 0
}

// Containers is for the metrics.
func (sb *Pod) Containers() int {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return len(sb.containers)
}

// GuestMemory is for the metrics: the guest's own account.
func (sb *Pod) GuestMemory(ctx context.Context) (total, available uint64, err error) {
	g := sb.running.Load()
	if g == nil {
		return 0, 0, fmt.Errorf("no VM")
	}
	h, err := g.Health(ctx)
	if err != nil {
		return 0, 0, err
	}
	return h.MemoryTotal, h.MemoryAvailable, nil
}

// agentInterceptor times every RPC to the agent for the metrics.
func (sb *Pod) agentInterceptor(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, info *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
	start := time.Now()
	err := invoke(ctx, req, resp)
	// "/podvm.agent.v1.Containers/CreateContainer" -> "Containers/CreateContainer"
	method := info.FullMethod
	if i := strings.LastIndex(method, "."); i >= 0 {
		method = method[i+1:]
	}
	sb.metrics.AgentCall(method, time.Since(start), err)
	return err
}
