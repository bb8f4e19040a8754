package agent

import (
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper collects the orphans the kernel re-parents to PID 1 (such as the
// intermediate processes libcontainer forks), but never a process that
// libcontainer itself waits for: reaping those would steal their exit
// status. Processes are started under Start, which holds off reaping until
// their PIDs are registered as owned.
type reaper struct {
	mu    sync.Mutex
	owned map[int]bool
}

func newReaper() *reaper {
	r := &reaper{owned: make(map[int]bool)}
	sig := make(chan os.Signal, 32)
	signal.Notify(sig, unix.SIGCHLD)
	go func() {
		defer recoverPanic("reaper")
		for range sig {
			r.reap()
		}
	}()
	return r
}

// Start runs start, which starts a process and returns its PID, while no
// reaping happens, and registers the PID as owned by its caller.
func (r *reaper) Start(start func() (int, error)) (int, error) {
	r.mu.Lock()
	pid, err := start()
	if err == nil {
		r.owned[pid] = true
	}
	r.mu.Unlock()
	// A child that exited while reaping was held off sent its SIGCHLD then.
	r.reap()
	return pid, err
}

// Release hands a PID back once its owner has waited for it.
func (r *reaper) Release(pid int) {
	r.mu.Lock()
	delete(r.owned, pid)
	r.mu.Unlock()
}

// reap waits for every zombie child of PID 1 that nobody owns.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pid := range zombieChildren() {
		if r.owned[pid] {
			continue
		}
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if err != unix.EINTR {
				break
			}
		}
	}
}

// zombieChildren lists this process's children that have exited but not
// been waited for. wait4(-1) cannot be used: it would reap owned ones too.
func zombieChildren() []int {
	self := strconv.Itoa(os.Getpid())
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == self {
			pids = append(pids, pid)
		}
	}
	return pids
}
