package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/system"

	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/agent/cinit"
)

// createTimeout bounds a container init's set-up (mounts, pivot) before it
// answers ready.
const createTimeout = 60 * time.Second

// cinitUnsupported says why a container must go through libcontainer's
// runc init, or nil when cinit can create it.
func cinitUnsupported(cfg *configs.Config, lp *libcontainer.Process) error {
	if lp.Scheduler != nil || lp.IOPriority != nil || lp.CPUAffinity != nil {
		return errors.New("scheduler, I/O priority or CPU affinity")
	}
	return cinit.Unsupported(cfg)
}

// createWithCinit creates a container through cinit: its cgroup is made
// and configured here, and its init (the spare, when it fits) set up by
// cinit.c, waiting for start.
func (s *containerService) createWithCinit(id string, cfg *configs.Config, lp *libcontainer.Process) (_ *cinitRuntime, retErr error) {
	// Made at boot, concurrently with the first requests.
	<-s.prep.done
	std := s.prep.devices.adopt(id, cfg)
	if std {
		logf(levelDebug, "container %s: the usual device rules, under %s", id, stdDeviceCgroup)
	}
	mgr, err := manager.New(cfg.Cgroups)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if std {
		if err = os.Mkdir(mgr.Path(""), 0o755); errors.Is(err, fs.ErrExist) {
			err = nil
		}
	} else {
		err = mgr.Apply(-1)
	}
	if err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	var init *cinit.Init
	defer func() {
		if retErr == nil {
			return
		}
		if init != nil {
			init.Kill()
		}
		_ = mgr.Destroy()
	}()
	if err := mgr.Set(cfg.Cgroups.Resources); err != nil {
		return nil, fmt.Errorf("set cgroup resources: %w", err)
	}
	init = s.prep.spare.take(cfg)
	if init != nil {
		logf(levelDebug, "container %s: the spare init", id)
	} else {
		if init, err = cinit.Spawn(cinit.Flags(cfg), s.reaper.Start, s.reaper.Release); err != nil {
			return nil, err
		}
	}
	defer s.prep.spare.fill()
	if err := cgroups.WriteCgroupProc(mgr.Path(""), init.Pid()); err != nil {
		return nil, fmt.Errorf("join cgroup: %w", err)
	}
	if cfg.OomScoreAdj != nil {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", init.Pid()), []byte(strconv.Itoa(*cfg.OomScoreAdj)), 0); err != nil {
			return nil, fmt.Errorf("set oom_score_adj: %w", err)
		}
	}
	if err := init.Create(id, cfg, cinitProcess(cfg, lp), createTimeout); err != nil {
		init = nil // killed by Create
		return nil, err
	}
	return &cinitRuntime{id: id, init: init.Process(), mgr: mgr, pending: init, cfg: cfg}, nil
}

// prepared is what the agent readies for containers before any is asked
// for: the usual device rules' cgroup and spare inits.
type prepared struct {
	done    chan struct{}
	devices *deviceParent
	spare   *spare
}

// prepare starts the preparations; done is closed once they are made.
func prepare(r *reaper) *prepared {
	p := &prepared{done: make(chan struct{}), spare: &spare{reaper: r, inits: map[uintptr]*cinit.Init{}, filling: map[uintptr]bool{}}}
	go func() {
		defer recoverPanic("prepare")
		defer close(p.done)
		t0 := time.Now()
		dp, err := newDeviceParent()
		if err != nil {
			logf(levelWarn, "containers get device programs of their own: %v", err)
		}
		p.devices = dp
		t1 := time.Now()
		for _, f := range cinit.SpareFlags {
			p.spare.spawn(f)
		}
		logf(levelDebug, "usual device rules attached in %v, spare inits spawned in %v", t1.Sub(t0), time.Since(t1))
	}()
	return p
}

// spare keeps container inits spawned ahead of need, one of each of
// cinit.SpareFlags, so that a create skips the exec and the namespaces'
// making. The template VM holds them already, and every VM restored from it.
//
// A taken spare is made again only once the VM has had no create for
// refillDelay: made at once, it took the guest's one vCPU from the
// container just created (~100 ms of its start under TCG), and a lower
// scheduling priority would not do, as the spawn holds the reaper's lock.
// The spare that makes a network namespace is not made again: a VM holds
// one pod, and only its first container (the sandbox, or ctr's container)
// makes the pod's network.
type spare struct {
	reaper *reaper

	mu      sync.Mutex
	inits   map[uintptr]*cinit.Init
	filling map[uintptr]bool
	refill  *time.Timer
}

const refillDelay = time.Second

// take hands out a spare init cfg can use.
func (s *spare) take(cfg *configs.Config) *cinit.Init {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range cinit.SpareFlags {
		i := s.inits[f]
		if i == nil || !cinit.Fits(f, cfg) {
			continue
		}
		delete(s.inits, f)
		select {
		case <-i.Exited():
			i.Close()
			return nil
		default:
			return i
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
		var missing []uintptr
		for _, f := range cinit.SpareFlags {
			if s.inits[f] == nil && !s.filling[f] && f&unix.CLONE_NEWNET == 0 {
				s.filling[f] = true
				missing = append(missing, f)
			}
		}
		s.mu.Unlock()
		for _, f := range missing {
			s.spawn(f)
		}
	})
}

// spawn makes the spare of flags now.
func (s *spare) spawn(flags uintptr) {
	i, err := cinit.Spawn(flags, s.reaper.Start, s.reaper.Release)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filling[flags] = false
	if err != nil {
		logf(levelWarn, "spawn a spare container init: %v", err)
		return
	}
	s.inits[flags] = i
}

// cinitProcess is the container's process as cinit takes it.
func cinitProcess(cfg *configs.Config, lp *libcontainer.Process) *cinit.Process {
	p := &cinit.Process{
		Args: lp.Args, Env: lp.Env, UID: uint32(lp.UID), GID: uint32(lp.GID),
		Cwd: lp.Cwd, Capabilities: lp.Capabilities, Rlimits: lp.Rlimits,
		NoNewPrivileges: cfg.NoNewPrivileges,
		ConsoleWidth:    lp.ConsoleWidth, ConsoleHeight: lp.ConsoleHeight,
		ConsoleSocket: lp.ConsoleSocket,
	}
	if lp.NoNewPrivileges != nil {
		p.NoNewPrivileges = *lp.NoNewPrivileges
	}
	for _, g := range lp.AdditionalGroups {
		p.Groups = append(p.Groups, uint32(g))
	}
	p.Stdin, _ = lp.Stdin.(*os.File)
	p.Stdout, _ = lp.Stdout.(*os.File)
	p.Stderr, _ = lp.Stderr.(*os.File)
	return p
}

// writeState records a cinit-made container the way libcontainer records
// its own, so that libcontainer.Load takes it up (to exec into it).
func writeState(dir, id string, pid int, cfg *configs.Config, cgroupPaths map[string]string) error {
	proc, err := system.Stat(pid)
	if err != nil {
		return fmt.Errorf("container init: %w", err)
	}
	st := libcontainer.State{
		BaseState: libcontainer.BaseState{
			ID: id, InitProcessPid: pid, InitProcessStartTime: proc.StartTime,
			Created: time.Now().UTC(), Config: *cfg,
		},
		CgroupPaths:    cgroupPaths,
		NamespacePaths: map[configs.NamespaceType]string{},
	}
	for _, ns := range cfg.Namespaces {
		st.NamespacePaths[ns.Type] = ns.GetPath(pid)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode container state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("container state: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600); err != nil {
		return fmt.Errorf("container state: %w", err)
	}
	return nil
}
