package agent

import (
	"context"
	"time"
	"unsafe"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// A VM restored from a template wakes with the template's CRNG state and
// wall clock: every VM from one template would draw the same "random"
// numbers and believe it is the time the template was saved. takeIdentity
// mixes the host's fresh entropy into the input pool, credited, forces the
// CRNG to reseed from it, and steps the clock, before any call but the
// host's first Health is served (afterIdentity).
// On a cold boot it costs little and sets the clock more precisely than
// the RTC's seconds.

// The random driver's ioctls (linux/random.h).
const (
	rndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG = 0x5207     // _IO('R', 0x07)
)

// healthMethod is the one call answered before the VM has its identity:
// the host's first, which tells it the agent is up.
const healthMethod = "/podvm.agent.v1.Agent/Health"

// afterIdentity holds every call but Health until identified is closed,
// i.e. the VM has taken the identity of its boot record: the guest reseeds
// its CRNG and steps its clock (~25 ms under TCG) while the host reads the
// first answer, and no container, exec or network change comes before.
func afterIdentity(identified <-chan struct{}) ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, um ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
		if info.FullMethod != healthMethod {
			select {
			case <-identified:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return m(ctx, um)
	}
}

func takeIdentity(rec agentapi.BootRecord) {
	start := time.Now()
	if err := reseed(rec.Entropy); err != nil {
		logf(levelWarn, "reseed the CRNG: %v", err)
	}
	reseeded := time.Now()
	if rec.RealtimeNs > 0 {
		ts := unix.NsecToTimespec(rec.RealtimeNs)
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
			logf(levelWarn, "set the clock: %v", err)
		}
	}
	logf(levelDebug, "identity taken: CRNG reseeded (%v), clock set (%v)", reseeded.Sub(start), time.Since(reseeded))
}

func reseed(entropy []byte) error {
	f, err := unix.Open("/dev/urandom", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(f)
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(entropy))
	*(*int32)(unsafe.Pointer(&info[0])) = int32(8 * len(entropy))
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(entropy))
	copy(info[8:], entropy)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(f), rndAddEntropy, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return e
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(f), rndReseedCRNG, 0); e != 0 {
		return e
	}
	return nil
}
