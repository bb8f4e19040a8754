package agent

import (
	"os"
	"os/signal"
	"strconv"
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
	// A child that exited while reaping was held off sent its SIGCHLD
	// then: the reaping goroutine took it and waits for the lock. No scan
	// here (each reads every process's stat: milliseconds under TCG, and
	// an exec starts two processes).
	return pid, err
}

// Release hands a PID back once its owner has waited for it.
func (r *reaper) Release(pid int) {
	r.mu.Lock()
	delete(r.owned, pid)
	r.mu.Unlock()
}

// reap waits for every zombie child of PID 1 that nobody owns. wait4(-1)
// cannot be used: it would reap owned ones too. So each process is tried
// by PID with WNOHANG: for a process that is not a child, or still runs,
// that is one quick system call, where reading each one's stat to find
// the zombies took milliseconds under TCG.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, pid := range processes() {
		if r.owned[pid] || pid == 1 {
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

// processes lists the PIDs in /proc.
func processes() []int {
	f, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
