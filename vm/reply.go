package vm

import (
	"fmt"
	"time"

	"github.com/containerd/containerd/identifiers"
)

// maxPid is the kernel's PID_MAX_LIMIT: no guest PID can be larger.
const maxPid = 1 << 22

// checkPid accepts a PID the guest could really have.
func checkPid(pid uint32) (uint32, error) {
	if pid == 0 || pid > maxPid {
		return 0, fmt.Errorf("PID %d: %w", pid, ErrBadReply)
	}
	return pid, nil
}

// validContainerID and validExecID accept what containerd accepts as an
// identifier: anything else from the guest cannot name one of ours.
func validContainerID(id string) bool { return identifiers.Validate(id) == nil }

func validExecID(id string) bool { return identifiers.Validate(id) == nil }

// early reports whether a poll that brought no news came back well before
// its deadline, which a healthy agent never does.
func early(start time.Time) bool { return time.Since(start) < pollWindow/2 }
