package agent

import (
	"fmt"
	"path/filepath"
	"unsafe"

	"github.com/opencontainers/cgroups/fscommon"
	"golang.org/x/sys/unix"
)

// notifyOOM reports each OOM kill in the cgroup at dir (a rise of
// memory.events' oom_kill) until the cgroup empties, for containers
// libcontainer made and cinit's alike. It returns the count it started
// from; what it sends is the count since then.
//
// The kernel rate-limits a cgroup file's notifications (one per 20 ms,
// later ones deferred by a timer), and the two files' limits are separate:
// the OOM kill's own memory.events notification can come after
// cgroup.events reports the cgroup empty, since the victim dies at once.
// So the count is read once more when the cgroup empties (libcontainer's
// NotifyOOM stops there and loses such kills: the host then reports a
// plain exit 137, "Error", where runc's is "OOMKilled").
func notifyOOM(dir string) (base uint64, kills <-chan uint64, err error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return 0, nil, fmt.Errorf("inotify: %w", err)
	}
	evWD, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "memory.events"), unix.IN_MODIFY)
	if err != nil {
		unix.Close(fd)
		return 0, nil, fmt.Errorf("watch memory.events: %w", err)
	}
	// cgroupfs sends no IN_DELETE: an emptied cgroup.events ends the watch.
	cgWD, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "cgroup.events"), unix.IN_MODIFY)
	if err != nil {
		unix.Close(fd)
		return 0, nil, fmt.Errorf("watch cgroup.events: %w", err)
	}
	base = oomKills(dir, 0)
	last := base
	ch := make(chan uint64)
	// rose reports the kills since the last look.
	rose := func() {
		if n := oomKills(dir, 0); n > last {
			last = n
			ch <- n - base
		}
	}
	go func() {
		defer recoverPanic("oom watch")
		defer close(ch)
		defer unix.Close(fd)
		var buf [unix.SizeofInotifyEvent + unix.PathMax + 1]byte
		for {
			n, err := unix.Read(fd, buf[:])
			if err == unix.EINTR {
				continue
			}
			if err != nil || n < unix.SizeofInotifyEvent {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				off += unix.SizeofInotifyEvent + int(ev.Len)
				switch int(ev.Wd) {
				case evWD:
					rose()
				case cgWD:
					if pop, err := fscommon.GetValueByKey(dir, "cgroup.events", "populated"); err != nil || pop == 0 {
						rose()
						return
					}
				}
			}
		}
	}()
	return base, ch, nil
}

// oomKills is the count of OOM kills in the cgroup at dir since it stood
// at base (0 when the cgroup is gone).
func oomKills(dir string, base uint64) uint64 {
	n, err := fscommon.GetValueByKey(dir, "memory.events", "oom_kill")
	if err != nil || n < base {
		return 0
	}
	return n - base
}
