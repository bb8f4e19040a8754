package agent

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/version"
)

// service implements agentapi.AgentService: the guest as a whole.
type service struct {
	readyNs  atomic.Int64 // CLOCK_BOOTTIME when the agent started serving
	stopping atomic.Bool
	shutdown func(grace time.Duration)
	// answered runs once, at the first Health.
	answered func()
	once     sync.Once
	// quiet reports whether no process but the agent's own spare inits
	// can be left in the guest: none in a container, no debug console.
	quiet func() bool
}

// prepareDelay lets a cold boot's first answer reach the host before the
// preparations for containers take the guest's vCPU.
const prepareDelay = 5 * time.Millisecond

var _ agentapi.AgentService = (*service)(nil)

func (s *service) Health(ctx context.Context, _ *agentapi.HealthRequest) (*agentapi.HealthResponse, error) {
	st := agentapi.HealthResponse_SERVING
	if s.stopping.Load() {
		st = agentapi.HealthResponse_STOPPING
	}
	if s.answered != nil {
		s.once.Do(s.answered)
	}
	total, avail := meminfo()
	return &agentapi.HealthResponse{Status: st, UptimeNs: bootTime(), AgentReadyNs: s.readyNs.Load(),
		MemoryTotalBytes: total, MemoryAvailableBytes: avail, CpusOnline: uint32(onlineCPUs())}, nil
}

func (s *service) Version(ctx context.Context, _ *agentapi.VersionRequest) (*agentapi.VersionResponse, error) {
	var u unix.Utsname
	_ = unix.Uname(&u)
	var si unix.Sysinfo_t
	_ = unix.Sysinfo(&si)
	return &agentapi.VersionResponse{
		AgentVersion:  version.Version,
		ApiVersion:    version.APIVersion,
		KernelRelease: unix.ByteSliceToString(u.Release[:]),
		KernelVersion: unix.ByteSliceToString(u.Version[:]),
		GoVersion:     runtime.Version(),
		Cpus:          uint32(runtime.NumCPU()),
		MemoryBytes:   uint64(si.Totalram) * uint64(si.Unit),
	}, nil
}

func (s *service) Shutdown(ctx context.Context, req *agentapi.ShutdownRequest) (*agentapi.ShutdownResponse, error) {
	if !s.stopping.CompareAndSwap(false, true) {
		return &agentapi.ShutdownResponse{}, nil
	}
	grace := time.Duration(req.GraceNs)
	if grace > 0 {
		go s.shutdown(grace)
		return &agentapi.ShutdownResponse{}, nil
	}
	// Nothing to wait for: with the processes gone and their writes
	// synced before the answer, the host ends the VM at once instead of
	// waiting for the reset (~50 ms under TCG).
	if s.quiet != nil && s.quiet() {
		// No container has a process left; the spare inits write
		// nothing. Signalling them took 15-30 ms under TCG, on the clock
		// of every pod's stop.
		unix.Sync()
	} else {
		endProcesses(0)
	}
	go s.shutdown(0)
	return &agentapi.ShutdownResponse{Synced: true}, nil
}

func bootTime() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}
