package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/system"

	"github.com/podvm/podvm/agent/cinit"
)

// createTimeout bounds a container init's set-up (mounts, pivot) before it
// answers ready.
const createTimeout = 60 * time.Second

// cinitUnsupported says why a container must go through libcontainer's
// runc init, or nil when cinit can create it.
func cinitUnsupported(cfg *configs.Config, lp *libcontainer.Process) error {
	if err := cinitProcessUnsupported(lp); err != nil {
		return err
	}
	return cinit.Unsupported(cfg)
}

// cinitProcessUnsupported says why a container's process (its init or an
// exec'd one) needs libcontainer, or nil.
func cinitProcessUnsupported(lp *libcontainer.Process) error {
	if lp.Scheduler != nil || lp.IOPriority != nil || lp.CPUAffinity != nil {
		return errors.New("scheduler, I/O priority or CPU affinity")
	}
	return nil
}

// setOOMScoreAdj gives a container's process the spec's oom_score_adj, as
// runc's nsexec does for an init and an exec alike.
func setOOMScoreAdj(pid int, adj *int) error {
	if adj == nil {
		return nil
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(strconv.Itoa(*adj)), 0); err != nil {
		return fmt.Errorf("set oom_score_adj: %w", err)
	}
	return nil
}

// createWithCinit creates a container through cinit: its cgroup is made
// and configured here, and its init (the spare, when it fits) set up by
// cinit.c, waiting for start.
func (s *containerService) createWithCinit(id string, cfg *configs.Config, lp *libcontainer.Process) (_ *cinitRuntime, retErr error) {
	// Made before a template is saved, or after a cold boot's first answer.
	<-s.prep.start(false)
	parent := s.prep.devices.adopt(id, cfg)
	std := parent != nil
	sp := s.prep.spare.take(cfg, parent)
	defer s.prep.spare.fill()
	var init *cinit.Init
	born := false // init is in the container's cgroup already
	if sp != nil {
		logf(levelDebug, "container %s: the spare init", id)
		init = sp.init
		if std && sp.parent == parent.path {
			cfg.Cgroups.Path, born = sp.cgroup, true
		}
	}
	mgr, err := manager.New(cfg.Cgroups)
	if err == nil && !born {
		if std {
			if err = os.Mkdir(mgr.Path(""), 0o755); errors.Is(err, fs.ErrExist) {
				err = nil
			}
		} else {
			err = mgr.Apply(-1)
		}
	}
	if err != nil {
		if init != nil {
			init.Kill()
			sp.removeCgroup()
		}
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	defer func() {
		if retErr == nil {
			return
		}
		if init != nil {
			init.Kill()
		}
		if sp != nil && !born {
			sp.removeCgroup()
		}
		_ = mgr.Destroy()
	}()
	if needsSet(cfg.Cgroups.Resources) {
		if err := mgr.Set(cfg.Cgroups.Resources); err != nil {
			return nil, fmt.Errorf("set cgroup resources: %w", err)
		}
	}
	if init == nil {
		var dir *os.File
		if std {
			// Born in its cgroup: no move into it below.
			if dir, err = os.Open(mgr.Path("")); err == nil {
				defer dir.Close()
				born = true
			}
		}
		if init, err = cinit.Spawn(cinit.Flags(cfg), dir, s.reaper.Start, s.reaper.Release); err != nil {
			return nil, err
		}
	}
	if !born {
		if err := cgroups.WriteCgroupProc(mgr.Path(""), init.Pid()); err != nil {
			return nil, fmt.Errorf("join cgroup: %w", err)
		}
		if sp != nil {
			sp.removeCgroup()
		}
	}
	if err := setOOMScoreAdj(init.Pid(), cfg.OomScoreAdj); err != nil {
		return nil, err
	}
	if err := init.Create(id, cfg, cinitProcess(cfg, lp), createTimeout); err != nil {
		init = nil // killed by Create
		return nil, err
	}
	return &cinitRuntime{id: id, init: init.Process(), mgr: mgr, pending: init, cfg: cfg}, nil
}

// needsSet reports whether r asks anything of a fresh cgroup: a container
// without limits (ctr run's default) skips Set, whose first run in a
// restored VM costs tens of ms under TCG even when it writes nothing.
func needsSet(r *cgroups.Resources) bool {
	if r == nil {
		return false
	}
	v := reflect.ValueOf(*r)
	for i := 0; i < v.NumField(); i++ {
		switch name := v.Type().Field(i).Name; {
		case name == "SkipDevices", name == "Devices" && r.SkipDevices:
			continue
		}
		f := v.Field(i)
		if k := f.Kind(); k == reflect.Slice || k == reflect.Map {
			if f.Len() > 0 {
				return true
			}
		} else if !f.IsZero() {
			return true
		}
	}
	return false
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
