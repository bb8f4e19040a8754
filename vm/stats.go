package vm

import (
	"context"

	cgroupstats "github.com/containerd/cgroups/v3/cgroup2/stats"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// Stats returns a container's cgroup figures in the form runc's shim gives
// on cgroup v2 hosts, which containerd and CRI decode.
func (g *Guest) Stats(ctx context.Context, id string) (*cgroupstats.Metrics, error) {
	var m *cgroupstats.Metrics
	err := g.call(ctx, request, "stats of "+id, func(ctx context.Context) error {
		r, err := g.containers.Stats(ctx, &agentapi.ContainerRequest{ContainerId: id})
		if err != nil {
			return err
		}
		m = cgroupMetrics(r)
		return nil
	})
	return m, err
}

func cgroupMetrics(s *agentapi.StatsResponse) *cgroupstats.Metrics {
	return &cgroupstats.Metrics{
		Pids: &cgroupstats.PidsStat{Current: s.PidsCurrent, Limit: s.PidsLimit},
		CPU: &cgroupstats.CPUStat{
			UsageUsec: s.CpuUsageUsec, UserUsec: s.CpuUserUsec, SystemUsec: s.CpuSystemUsec,
			NrPeriods: s.CpuNrPeriods, NrThrottled: s.CpuNrThrottled, ThrottledUsec: s.CpuThrottledUsec,
		},
		Memory: &cgroupstats.MemoryStat{
			Usage: s.MemoryUsage, UsageLimit: s.MemoryLimit, MaxUsage: s.MemoryMaxUsage,
			SwapUsage: s.MemorySwapUsage, SwapLimit: s.MemorySwapLimit,
			Anon: s.MemoryAnon, File: s.MemoryFile, KernelStack: s.MemoryKernelStack, Slab: s.MemorySlab,
			Sock: s.MemorySock, Shmem: s.MemoryShmem, FileMapped: s.MemoryFileMapped, FileDirty: s.MemoryFileDirty,
			FileWriteback: s.MemoryFileWriteback, Pgfault: s.MemoryPgfault, Pgmajfault: s.MemoryPgmajfault,
			InactiveAnon: s.MemoryInactiveAnon, ActiveAnon: s.MemoryActiveAnon, InactiveFile: s.MemoryInactiveFile,
			ActiveFile: s.MemoryActiveFile, Unevictable: s.MemoryUnevictable,
		},
		MemoryEvents: &cgroupstats.MemoryEvents{Oom: s.MemoryOom, OomKill: s.MemoryOomKill},
		Io: &cgroupstats.IOStat{Usage: []*cgroupstats.IOEntry{{
			Rbytes: s.IoReadBytes, Wbytes: s.IoWriteBytes, Rios: s.IoReadIos, Wios: s.IoWriteIos,
		}}},
	}
}
