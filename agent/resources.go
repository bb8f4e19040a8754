package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// OnlineResources onlines what the host hot-plugged. A CPU appears
// offline once ACPI has told the kernel about it, and nothing else in the
// guest (no udev) would online it; memory blocks are onlined by the kernel
// itself (MEMORY_HOTPLUG_DEFAULT_ONLINE), or here if that was turned off.
func (s *service) OnlineResources(ctx context.Context, req *agentapi.OnlineResourcesRequest) (*agentapi.OnlineResourcesResponse, error) {
	for {
		setAll("/sys/devices/system/cpu/cpu*/online", "0", "1")
		setAll("/sys/devices/system/memory/memory*/state", "offline", "online")
		cpus := onlineCPUs()
		total, _ := meminfo()
		if uint32(cpus) >= req.Cpus && total >= req.MemoryTotalBytes {
			logf(levelInfo, "online: %d CPUs, %d MiB", cpus, total>>20)
			return &agentapi.OnlineResourcesResponse{CpusOnline: uint32(cpus), MemoryTotalBytes: total}, nil
		}
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded, "the guest has %d CPUs online and %d MiB, not yet %d and %d MiB", cpus, total>>20, req.Cpus, req.MemoryTotalBytes>>20)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// setAll writes to every file matching pattern that holds from.
func setAll(pattern, from, to string) {
	files, _ := filepath.Glob(pattern)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(b)) != from {
			continue
		}
		if err := os.WriteFile(f, []byte(to), 0); err != nil {
			logf(levelInfo, "%s: %v", f, err)
		}
	}
}

// onlineCPUs counts the CPUs the guest kernel runs on now, hot-plugged
// ones included once online (the Go runtime's count is from its start).
func onlineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0
	}
	n := 0
	// A list of ranges: "0-3,5".
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		z := a
		if ok {
			if z, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		n += z - a + 1
	}
	return n
}
