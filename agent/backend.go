package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/podvm/podvm/agent/cinit"
)

// backend is what holds a running container: libcontainer's Container, or
// the cgroup and init of a container cinit made, which needs libcontainer
// only to exec into it.
type backend interface {
	// start lets the created init exec the container's program, waiting
	// for it until by (zero: createTimeout).
	start(by time.Time) error
	signalInit(sig syscall.Signal) error
	processes() ([]int, error)
	pause() error
	resume() error
	stats() (*libcontainer.Stats, error)
	// update applies resources merged into the container's own (see
	// updateResources).
	update(func(*configs.Config) (*cgroups.Resources, error)) error
	// exec starts an exec'd process in the container.
	exec(lp *libcontainer.Process) error
	destroy() error
	cgroupDir() string
}

// errNotRunning is what signalInit returns once the init has exited.
var errNotRunning = errors.New("container not running")

// lcRuntime is a container libcontainer created.
type lcRuntime struct{ lc *libcontainer.Container }

func (r lcRuntime) signalInit(sig syscall.Signal) error {
	err := r.lc.Signal(sig)
	if errors.Is(err, libcontainer.ErrNotRunning) || errors.Is(err, os.ErrProcessDone) {
		return errNotRunning
	}
	return err
}
func (r lcRuntime) start(time.Time) error               { return r.lc.Exec() }
func (r lcRuntime) processes() ([]int, error)           { return r.lc.Processes() }
func (r lcRuntime) pause() error                        { return r.lc.Pause() }
func (r lcRuntime) resume() error                       { return r.lc.Resume() }
func (r lcRuntime) stats() (*libcontainer.Stats, error) { return r.lc.Stats() }
func (r lcRuntime) exec(lp *libcontainer.Process) error { return r.lc.Run(lp) }
func (r lcRuntime) destroy() error                      { return r.lc.Destroy() }
func (r lcRuntime) cgroupDir() string {
	return filepath.Join("/sys/fs/cgroup", r.lc.Config().Cgroups.Path)
}
func (r lcRuntime) update(merge func(*configs.Config) (*cgroups.Resources, error)) error {
	cfg := r.lc.Config()
	res, err := merge(&cfg)
	if err != nil {
		return err
	}
	cfg.Cgroups.Resources = res
	return r.lc.Set(cfg)
}

// cinitRuntime is a container cinit made: its cgroup is driven here
// directly, and libcontainer takes it up (from a state file written for
// it) only when a process is exec'd into it.
type cinitRuntime struct {
	id   string
	init *os.Process
	mgr  cgroups.Manager

	mu sync.Mutex
	// pending is the init until it is started.
	pending *cinit.Init
	cfg     *configs.Config
	lc      *libcontainer.Container
}

func (r *cinitRuntime) start(by time.Time) error {
	r.mu.Lock()
	pending := r.pending
	r.pending = nil
	r.mu.Unlock()
	if pending == nil {
		return errors.New("container already started")
	}
	if by.IsZero() {
		by = time.Now().Add(createTimeout)
	}
	return pending.Start(by)
}

func (r *cinitRuntime) signalInit(sig syscall.Signal) error {
	// Through the pidfd os.Process holds: never a recycled PID.
	err := r.init.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return errNotRunning
	}
	return err
}

func (r *cinitRuntime) processes() ([]int, error) { return r.mgr.GetAllPids() }
func (r *cinitRuntime) pause() error              { return r.mgr.Freeze(cgroups.Frozen) }
func (r *cinitRuntime) resume() error             { return r.mgr.Freeze(cgroups.Thawed) }
func (r *cinitRuntime) cgroupDir() string         { return r.mgr.Path("") }

func (r *cinitRuntime) stats() (*libcontainer.Stats, error) {
	st, err := r.mgr.GetStats()
	if err != nil {
		return nil, err
	}
	return &libcontainer.Stats{CgroupStats: st}, nil
}

func (r *cinitRuntime) update(merge func(*configs.Config) (*cgroups.Resources, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := merge(r.cfg)
	if err != nil {
		return err
	}
	if r.lc != nil {
		// Once loaded, libcontainer sets the cgroup and keeps its state
		// file the same. It starts no process in a container whose
		// config skips the device rules: those of a container under a
		// device parent are the parent's, set again on its own cgroup.
		cfg := r.lc.Config()
		lcRes := *res
		lcRes.SkipDevices = false
		cfg.Cgroups.Resources = &lcRes
		err = r.lc.Set(cfg)
	} else {
		err = r.mgr.Set(res)
	}
	if err == nil {
		r.cfg.Cgroups.Resources = res
	}
	return err
}

func (r *cinitRuntime) exec(lp *libcontainer.Process) error {
	r.mu.Lock()
	if r.lc == nil {
		if err := writeState(filepath.Join(stateRoot, r.id), r.id, r.init.Pid, r.cfg, r.mgr.GetPaths()); err != nil {
			r.mu.Unlock()
			return err
		}
		lc, err := libcontainer.Load(stateRoot, r.id)
		if err != nil {
			r.mu.Unlock()
			return fmt.Errorf("load container state: %w", err)
		}
		r.lc = lc
	}
	lc := r.lc
	r.mu.Unlock()
	return lc.Run(lp)
}

// destroy kills what is left in the cgroup and removes it, as
// libcontainer's Destroy does.
func (r *cinitRuntime) destroy() error {
	r.mu.Lock()
	if r.pending != nil {
		r.pending.Close()
		r.pending = nil
	}
	r.mu.Unlock()
	killCgroup(r.mgr.Path(""))
	err := r.mgr.Destroy()
	if rerr := os.RemoveAll(filepath.Join(stateRoot, r.id)); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// killCgroup kills every process in the cgroup at dir (and below it).
func killCgroup(dir string) {
	if err := cgroups.WriteFile(dir, "cgroup.kill", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		pids, _ := cgroups.GetAllPids(dir)
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// ownPIDNamespace reports whether cfg gives the container a PID namespace
// of its own, whose members the kernel ends with its init.
func ownPIDNamespace(cfg *configs.Config) bool {
	return cfg.Namespaces.Contains(configs.NEWPID) && cfg.Namespaces.PathOf(configs.NEWPID) == ""
}
