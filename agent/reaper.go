package agent

import (
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// Exit is a child that ended: its PID and wait status.
type Exit struct {
	Pid    int
	Status unix.WaitStatus
}

// reaper collects every child of PID 1, including orphans the kernel
// re-parents to it, and tells subscribers which PIDs exited. Code that
// starts processes learns of their exit from here instead of calling wait
// itself, which would race with the reaper.
type reaper struct {
	mu   sync.Mutex
	subs map[chan Exit]struct{}
}

func newReaper() *reaper {
	r := &reaper{subs: make(map[chan Exit]struct{})}
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

// Subscribe returns a channel that receives every exit from now on.
func (r *reaper) Subscribe() chan Exit {
	c := make(chan Exit, 64)
	r.mu.Lock()
	r.subs[c] = struct{}{}
	r.mu.Unlock()
	return c
}

// Unsubscribe stops deliveries to c.
func (r *reaper) Unsubscribe(c chan Exit) {
	r.mu.Lock()
	delete(r.subs, c)
	r.mu.Unlock()
}

func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.mu.Lock()
		for c := range r.subs {
			// A subscriber that stopped reading must not stall PID 1.
			select {
			case c <- Exit{Pid: pid, Status: ws}:
			default:
				logf(levelWarn, "reaper: subscriber full, dropped exit of pid %d", pid)
			}
		}
		r.mu.Unlock()
	}
}
