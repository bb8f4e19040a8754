package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// statsResponse maps libcontainer's cgroup v2 figures onto the protocol.
// CPU times come in nanoseconds and leave in microseconds, the unit of
// cpu.stat and of containerd's cgroup v2 metrics.
func statsResponse(st *libcontainer.Stats, cgroupDir string) *agentapi.StatsResponse {
	r := &agentapi.StatsResponse{}
	if st == nil || st.CgroupStats == nil {
		return r
	}
	cs := st.CgroupStats
	cpu := cs.CpuStats
	r.CpuUsageUsec = cpu.CpuUsage.TotalUsage / 1000
	r.CpuUserUsec = cpu.CpuUsage.UsageInUsermode / 1000
	r.CpuSystemUsec = cpu.CpuUsage.UsageInKernelmode / 1000
	r.CpuNrPeriods = cpu.ThrottlingData.Periods
	r.CpuNrThrottled = cpu.ThrottlingData.ThrottledPeriods
	r.CpuThrottledUsec = cpu.ThrottlingData.ThrottledTime / 1000

	mem := cs.MemoryStats
	r.MemoryUsage = mem.Usage.Usage
	r.MemoryLimit = mem.Usage.Limit
	r.MemoryMaxUsage = mem.Usage.MaxUsage
	r.MemorySwapUsage = mem.SwapUsage.Usage
	r.MemorySwapLimit = mem.SwapUsage.Limit
	m := mem.Stats
	r.MemoryAnon = m["anon"]
	r.MemoryFile = m["file"]
	r.MemoryKernelStack = m["kernel_stack"]
	r.MemorySlab = m["slab"]
	r.MemorySock = m["sock"]
	r.MemoryShmem = m["shmem"]
	r.MemoryFileMapped = m["file_mapped"]
	r.MemoryFileDirty = m["file_dirty"]
	r.MemoryFileWriteback = m["file_writeback"]
	r.MemoryPgfault = m["pgfault"]
	r.MemoryPgmajfault = m["pgmajfault"]
	r.MemoryInactiveAnon = m["inactive_anon"]
	r.MemoryActiveAnon = m["active_anon"]
	r.MemoryInactiveFile = m["inactive_file"]
	r.MemoryActiveFile = m["active_file"]
	r.MemoryUnevictable = m["unevictable"]
	events := readKeyed(filepath.Join(cgroupDir, "memory.events"))
	r.MemoryOom = events["oom"]
	r.MemoryOomKill = events["oom_kill"]

	r.PidsCurrent = cs.PidsStats.Current
	r.PidsLimit = cs.PidsStats.Limit
	for _, e := range cs.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			r.IoReadBytes += e.Value
		case "write":
			r.IoWriteBytes += e.Value
		}
	}
	for _, e := range cs.BlkioStats.IoServicedRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			r.IoReadIos += e.Value
		case "write":
			r.IoWriteIos += e.Value
		}
	}
	return r
}

// readKeyed reads a cgroup file of "key value" lines.
func readKeyed(path string) map[string]uint64 {
	m := map[string]uint64{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			m[k] = n
		}
	}
	return m
}

// updateResources applies OCI LinuxResources to a running container, as
// `runc update` does.
func updateResources(rt backend, resources []byte) error {
	var r specs.LinuxResources
	if err := json.Unmarshal(resources, &r); err != nil {
		return fmt.Errorf("decode resources: %w", err)
	}
	return rt.update(func(cfg *configs.Config) (*cgroups.Resources, error) {
		spec := &specs.Spec{Linux: &specs.Linux{Resources: &r, CgroupsPath: cfg.Cgroups.Path}}
		cg, err := specconv.CreateCgroupConfig(&specconv.CreateOpts{CgroupName: cfg.Cgroups.Name, Spec: spec}, nil)
		if err != nil {
			return nil, err
		}
		return mergeResources(cfg.Cgroups.Resources, cg.Resources, &r), nil
	})
}

// mergeResources keeps what the update does not mention, as runc update
// does: only the limits given change.
func mergeResources(old, upd *cgroups.Resources, r *specs.LinuxResources) *cgroups.Resources {
	if old == nil {
		return upd
	}
	res := *old
	if r.Memory != nil {
		res.Memory, res.MemoryReservation, res.MemorySwap = upd.Memory, upd.MemoryReservation, upd.MemorySwap
	}
	if r.CPU != nil {
		res.CpuShares, res.CpuQuota, res.CpuPeriod, res.CpuWeight = upd.CpuShares, upd.CpuQuota, upd.CpuPeriod, upd.CpuWeight
		res.CpusetCpus, res.CpusetMems = upd.CpusetCpus, upd.CpusetMems
		res.CpuBurst = upd.CpuBurst
	}
	if r.Pids != nil {
		res.PidsLimit = upd.PidsLimit
	}
	if r.BlockIO != nil {
		res.BlkioWeight = upd.BlkioWeight
	}
	if len(r.Unified) > 0 {
		res.Unified = upd.Unified
	}
	return &res
}
