package agent

import (
	"os"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/agent/cinit"
)

// prepared is what the agent readies for containers before any is asked
// for: the device parents and spare inits. A VM that is to become a
// template makes them before it is saved, so every VM restored from it has
// them; a VM that boots cold makes them once it has answered its first
// request: on the guest's one vCPU they took ~50-80 ms from that answer
// under TCG, and only a create needs them (it starts them itself if it
// comes first).
type prepared struct {
	once    sync.Once
	done    chan struct{}
	devices deviceParents
	spare   *spare
}

func newPrepared(r *reaper) *prepared {
	return &prepared{done: make(chan struct{}), spare: &spare{reaper: r, inits: map[spareKey]*spareInit{}, filling: map[spareKey]bool{}}}
}

// start begins the preparations (once): the device parents, and with
// spares every spare init (a cold VM's are made by the refill after its
// first create instead). The channel is closed when they are made.
func (p *prepared) start(spares bool) <-chan struct{} {
	p.once.Do(func() {
		go func() {
			defer recoverPanic("prepare")
			defer close(p.done)
			t0 := time.Now()
			dp, err := newDeviceParents()
			if err != nil {
				logf(levelWarn, "containers get device programs of their own: %v", err)
			}
			p.devices, p.spare.devices = dp, dp
			t1 := time.Now()
			if !spares {
				logf(levelDebug, "device parents set up in %v", t1.Sub(t0))
				return
			}
			for _, k := range p.spare.keys(false) {
				p.spare.spawn(k)
			}
			logf(levelDebug, "device parents set up in %v, spare inits spawned in %v", t1.Sub(t0), time.Since(t1))
		}()
	})
	return p.done
}

// spare keeps container inits spawned ahead of need, one for each of
// cinit.SpareFlags in each device parent's cgroup, so that a create skips
// the exec, the namespaces' making, the cgroup's making and the move into
// it. The template VM holds them already, and every VM restored from it.
//
// A taken spare is made again only once the VM has had no create for
// refillDelay: made at once, it took the guest's one vCPU from the
// container just created (~100 ms of its start under TCG), and a lower
// scheduling priority would not do, as the spawn holds the reaper's lock.
// Spares that make a network namespace are not made again: a VM holds one
// pod, and only its first container (the sandbox, or ctr's container)
// makes the pod's network.
type spare struct {
	reaper  *reaper
	devices deviceParents // where spares are born

	mu      sync.Mutex
	inits   map[spareKey]*spareInit
	filling map[spareKey]bool
	refill  *time.Timer
}

// spareKey is a spare's namespaces and device parent ("" for none).
type spareKey struct {
	flags  uintptr
	parent string
}

// spareInit is a spare and the cgroup it was born in (see
// deviceParent.spareCgroup), if any.
type spareInit struct {
	init   *cinit.Init
	parent string // its device parent's path
	cgroup string // libcontainer's path
	dir    string
}

// removeCgroup removes the spare's own cgroup once its init has left it
// (moved to its container's, or killed).
func (sp *spareInit) removeCgroup() {
	if sp.dir != "" {
		_ = os.Remove(sp.dir)
		sp.dir = ""
	}
}

const refillDelay = time.Second

// keys are the spares there should be; refill leaves out those that make
// a network namespace.
func (s *spare) keys(refill bool) []spareKey {
	parents := []string{""}
	if len(s.devices) > 0 {
		parents = parents[:0]
		for _, d := range s.devices {
			parents = append(parents, d.path)
		}
	}
	var keys []spareKey
	for _, f := range cinit.SpareFlags {
		if refill && f&unix.CLONE_NEWNET != 0 {
			continue
		}
		for _, p := range parents {
			keys = append(keys, spareKey{f, p})
		}
	}
	return keys
}

// take hands out a spare init cfg can use: born in parent's cgroup if
// there is one such.
func (s *spare) take(cfg *configs.Config, parent *deviceParent) *spareInit {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fits []spareKey
	for k := range s.inits {
		if cinit.Fits(k.flags, cfg) {
			if parent != nil && k.parent == parent.path {
				fits = append([]spareKey{k}, fits...)
			} else {
				fits = append(fits, k)
			}
		}
	}
	for _, k := range fits {
		sp := s.inits[k]
		delete(s.inits, k)
		select {
		case <-sp.init.Exited():
			sp.init.Close()
			sp.removeCgroup()
		default:
			return sp
		}
	}
	return nil
}

// fill makes the spares there are not, refillDelay after the last call.
func (s *spare) fill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refill != nil {
		s.refill.Reset(refillDelay)
		return
	}
	s.refill = time.AfterFunc(refillDelay, func() {
		defer recoverPanic("spare init")
		s.mu.Lock()
		var missing []spareKey
		for _, k := range s.keys(true) {
			if s.inits[k] == nil && !s.filling[k] {
				s.filling[k] = true
				missing = append(missing, k)
			}
		}
		s.mu.Unlock()
		for _, k := range missing {
			s.spawn(k)
		}
	})
}

// spawn makes the spare k now.
func (s *spare) spawn(k spareKey) {
	sp := &spareInit{}
	var cg *os.File
	if d := s.devices.byPath(k.parent); d != nil {
		var err error
		if sp.cgroup, cg, err = d.spareCgroup(); err != nil {
			logf(levelWarn, "%v", err)
		} else {
			sp.parent, sp.dir = d.path, cg.Name()
			defer cg.Close()
		}
	}
	i, err := cinit.Spawn(k.flags, cg, s.reaper.Start, s.reaper.Release)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filling[k] = false
	if err != nil {
		sp.removeCgroup()
		logf(levelWarn, "spawn a spare container init: %v", err)
		return
	}
	sp.init = i
	s.inits[k] = sp
}
