package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A container at its memory limit can thrash instead of being OOM-killed.
// The kernel gives up on reclaim only when it frees nothing, and in the
// guest a container's file pages (its binaries, mapped over 9p) are
// charged to its own cgroup: reclaim keeps evicting them, the container
// keeps faulting them back in, every attempt "makes progress", and the
// container spins in reclaim for minutes. (On a runc host those pages are
// usually charged to whoever read them first, so reclaim finds nothing and
// the OOM killer runs at once.)
//
// The guard watches each container's memory pressure (a PSI trigger) and,
// when the container stalls on memory while at its limit, squeezes the
// limit below its usage for a moment. The kernel then reclaims with a
// bounded number of retries and OOM-kills as it would have: its victim
// choice, its memory.events, its exit status 137, and so the host's TaskOOM
// event. The limit is then put back.

// thrashTrigger fires when some task of the container is stalled on memory
// for 1 s within a 2 s window. "full" (all tasks stalled at once) proved
// too strict: with a few processes faulting their binaries back in turn,
// one of them often runs, and the guard fired a minute late or not at all.
// At the limit (check), a stall that long is thrashing.
const thrashTrigger = "some 1000000 2000000"

// memGuard watches one container's cgroup.
type memGuard struct {
	dir  string
	mu   *sync.Mutex // the container's cgroup writers (Update)
	stop int         // eventfd: written to end the guard
	once sync.Once
}

// guardMemory starts a guard on cgroup directory dir; mu is held while the
// guard changes memory.max.
func guardMemory(id, dir string, mu *sync.Mutex) *memGuard {
	pressure, err := unix.Open(filepath.Join(dir, "memory.pressure"), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		logf(levelWarn, "container %s: no memory guard: %v", id, err)
		return nil
	}
	if _, err := unix.Write(pressure, []byte(thrashTrigger+"\x00")); err != nil {
		unix.Close(pressure)
		logf(levelWarn, "container %s: no memory guard (PSI trigger): %v", id, err)
		return nil
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(pressure)
		return nil
	}
	g := &memGuard{dir: dir, mu: mu, stop: stop}
	go g.run(id, pressure)
	return g
}

// close ends the guard.
func (g *memGuard) close() {
	if g == nil {
		return
	}
	g.once.Do(func() {
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(g.stop, one[:])
	})
}

func (g *memGuard) run(id string, pressure int) {
	defer recoverPanic("memory guard")
	defer unix.Close(pressure)
	defer unix.Close(g.stop)
	fds := []unix.PollFd{{Fd: int32(pressure), Events: unix.POLLPRI}, {Fd: int32(g.stop), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			logf(levelWarn, "container %s: memory guard: %v", id, err)
			return
		}
		if fds[1].Revents != 0 || fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			// Stopped, or the cgroup went away.
			return
		}
		if fds[0].Revents&unix.POLLPRI != 0 {
			g.check(id)
		}
	}
}

// check acts on a stall: only one at the limit is the container's own.
func (g *memGuard) check(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	limit, ok := readCgroupInt(g.dir, "memory.max")
	if !ok {
		return // no limit
	}
	usage, _ := readCgroupInt(g.dir, "memory.current")
	if usage < limit-limit/20 {
		return
	}
	// Below usage by a quarter: with anonymous memory that cannot be
	// reclaimed, the kernel must OOM-kill to meet it.
	squeeze := max(usage-usage/4, 1<<20)
	logf(levelWarn, "container %s thrashes at its memory limit (%d of %d bytes): squeezing the limit so that the kernel OOM-kills", id, usage, limit)
	if err := os.WriteFile(filepath.Join(g.dir, "memory.max"), []byte(strconv.FormatInt(squeeze, 10)), 0); err != nil {
		logf(levelWarn, "container %s: squeeze memory.max: %v", id, err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "memory.max"), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		logf(levelWarn, "container %s: restore memory.max to %d: %v", id, limit, err)
	}
}

// readCgroupInt reads a cgroup file holding one number; "max" or a
// missing file is no number.
func readCgroupInt(dir, file string) (int64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}
