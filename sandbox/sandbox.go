// Package sandbox is the pod: its VM and the containers in it, their
// files in the VM's share, the pod's network, cgroup, sizing and debug
// console. Its lifecycle is an explicit state machine (lifecycle.go); the
// shim maps containerd's task and sandbox APIs onto it, and nothing here
// knows those APIs.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/podvm/podvm/metrics"
	"github.com/podvm/podvm/network"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

// CRI's annotations that group a pod's containers.
const (
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	AnnotationSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// Events receives what happens in the pod on its own: process exits (once
// their output is out, and an init's after its execs') and OOM kills. The
// shim publishes them as containerd's task events.
type Events interface {
	Exited(containerID, execID string, pid, status uint32, at time.Time)
	OOM(containerID string)
}

// Pod is one shim's VM and the containers in it: a pod, or the single
// container of a plain `ctr run`. mu guards the fields below it and is
// never held across a call to the guest or a boot.
type Pod struct {
	id        string
	ctx       context.Context // the shim's lifetime
	namespace string
	events    Events
	dir       string // <state_dir>/sandboxes/<id>
	shareDir  string // dir/shared, the guest's /run/podvm/shared

	mu         sync.Mutex
	phase      phase
	cfg        *vmconfig.Config
	configured bool          // runtime options and annotations applied
	guest      *vm.Guest     // the VM, from boot to stop
	booting    chan struct{} // closed when the boot in progress ends
	bootCancel context.CancelFunc
	stopped    chan struct{} // closed once Stop is done
	// held is set when containerd's Sandbox API owns the pod: its VM then
	// lives from Start to Stop, not from the first container to the last.
	held       *held
	containers map[string]*Container
	// ended is closed when the pod ends (end); exitStatus and exitedAt
	// say how.
	ended      chan struct{}
	endOnce    sync.Once
	exitStatus uint32
	exitedAt   time.Time

	// The pod's network, owned by the boot (and then by Start's rescan and
	// stop, which never run alongside it).
	netMu sync.Mutex
	pod   *network.Pod
	// loopback takes the port-forward connections to localhost in the
	// pod's network namespace (CRI pods).
	loopback *network.Loopback
	// cgroup is the pod's host cgroup the shim and QEMU run in; set by the
	// boot, left by stop.
	cgroup *podCgroup

	// running is guest for readers that must not take mu (the metrics).
	running       atomic.Pointer[vm.Guest]
	metrics       *metrics.Shim
	metricsServer *metrics.Server
	console       *consoleServer // nil unless debug_console is on

	// resizeMu guards demands, each container's limits; grow serializes
	// hot-plugs (see fit).
	resizeMu sync.Mutex
	demands  map[string]demand
	grow     chan struct{}
}

// New is the pod of sandbox id in containerd namespace ns, configured by
// cfg (the node's configuration) until Configure refines it.
func New(ctx context.Context, id, ns string, cfg *vmconfig.Config, ev Events) *Pod {
	dir := Dir(cfg, id)
	sb := &Pod{
		id: id, ctx: ctx, namespace: ns, cfg: cfg, events: ev,
		dir: dir, shareDir: filepath.Join(dir, "shared"),
		containers: map[string]*Container{}, demands: map[string]demand{},
		grow: make(chan struct{}, 1), stopped: make(chan struct{}), ended: make(chan struct{}),
	}
	sb.serveMetrics()
	return sb
}

// Metrics is the shim's metrics, which the pod serves from its
// state directory.
func (sb *Pod) Metrics() *metrics.Shim { return sb.metrics }

// Dir is where a sandbox keeps its state: the share, its records.
func Dir(cfg *vmconfig.Config, id string) string {
	return filepath.Join(cfg.StateDir, "sandboxes", id)
}

// ID is the sandbox's ID.
func (sb *Pod) ID() string { return sb.id }

// StateDir is the sandbox's state directory.
func (sb *Pod) StateDir() string { return sb.dir }

// config is the pod's configuration as it stands.
func (sb *Pod) config() *vmconfig.Config {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.cfg
}

// Configure settles the pod's configuration once, before the VM exists:
// cfg (the node's configuration refined by the runtime handler's options)
// with the pod's io.podvm.config.* annotations applied. Later calls, and
// calls once the VM boots, change nothing.
func (sb *Pod) Configure(cfg *vmconfig.Config, annotations map[string]string) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.phase != phaseNew || sb.configured {
		return nil
	}
	c, err := cfg.WithAnnotations(annotations)
	if err != nil {
		return fmt.Errorf("pod annotations: %w", err)
	}
	sb.cfg, sb.configured = c, true
	return nil
}

// Config is the pod's configuration before Configure, for the shim to
// refine with the runtime handler's options.
func (sb *Pod) Config() *vmconfig.Config { return sb.config() }

// Guest is the VM while it runs, else nil.
func (sb *Pod) Guest() *vm.Guest {
	if g := sb.running.Load(); g != nil && g.Alive() {
		return g
	}
	return nil
}

// setPhase moves the lifecycle on; sb.mu must be held.
func (sb *Pod) setPhase(next phase) error {
	p, err := sb.phase.to(next)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w: %w", sb.id, err, errdefs.ErrFailedPrecondition)
	}
	log.G(sb.ctx).WithField("phase", p).Debug("sandbox lifecycle")
	sb.phase = p
	return nil
}

// podPid is the guest PID of the pod's sandbox container (or of a held
// pod's infra process), whose namespaces the pod's other containers join.
func (sb *Pod) podPid(id string, annotations map[string]string) uint32 {
	if annotations[AnnotationContainerType] != "container" {
		return 0
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sandboxID := annotations[AnnotationSandboxID]
	if c, ok := sb.containers[sandboxID]; ok && c.id != id {
		return c.init.guestPid
	}
	if sandboxID == sb.id && sb.held != nil {
		return sb.held.infraPid
	}
	return 0
}

// Container finds a container of the pod.
func (sb *Pod) Container(id string) (*Container, bool) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	c, ok := sb.containers[id]
	return c, ok
}

func (sb *Pod) add(c *Container) {
	sb.mu.Lock()
	sb.containers[c.id] = c
	sb.mu.Unlock()
}

// alone reports whether id is the pod's last container and no Sandbox API
// holds the pod: its removal ends the pod.
func (sb *Pod) alone(id string) bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	_, ok := sb.containers[id]
	return ok && len(sb.containers) == 1 && sb.held == nil
}

// Remove forgets a deleted container and reports whether it was the last;
// the caller then stops the pod unless the Sandbox API holds it.
func (sb *Pod) Remove(id string) bool {
	sb.mu.Lock()
	delete(sb.containers, id)
	last := len(sb.containers) == 0
	sb.mu.Unlock()
	sb.forget(id)
	return last
}

// Empty reports whether the pod has no containers.
func (sb *Pod) Empty() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return len(sb.containers) == 0
}

// Stop shuts the VM down and removes the sandbox's directory. A boot in
// progress is cancelled first. It is idempotent, and bounded: a guest that
// does not answer is killed.
func (sb *Pod) Stop(ctx context.Context) error {
	sb.mu.Lock()
	if sb.bootCancel != nil {
		sb.bootCancel()
	}
	booting := sb.booting
	sb.mu.Unlock()
	if booting != nil {
		<-booting
	}
	sb.mu.Lock()
	if sb.phase == phaseStopping || sb.phase == phaseStopped {
		// Asked again: done once the first stop is.
		sb.mu.Unlock()
		select {
		case <-sb.stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	_ = sb.setPhase(phaseStopping)
	g, console, metricsServer := sb.guest, sb.console, sb.metricsServer
	sb.console, sb.metricsServer = nil, nil
	sb.mu.Unlock()

	var errs []error
	if console != nil {
		// Before the VM goes: each open console is closed in the guest.
		console.close()
	}
	sb.running.Store(nil)
	if metricsServer != nil {
		metricsServer.Close()
	}
	ph := newPhases(nil)
	if cg := sb.cgroup; cg != nil {
		go cg.goHome()
	}
	if g != nil {
		if err := g.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		ph.mark("vm_stop")
	}
	if err := sb.leaveCgroup(); err != nil {
		errs = append(errs, err)
	}
	ph.mark("cgroup_leave")
	if err := sb.closeNetwork(); err != nil {
		errs = append(errs, err)
	}
	ph.mark("network_down")
	if err := unmountTree(sb.dir, "."); err != nil {
		errs = append(errs, err)
	}
	ph.mark("unmount")
	log.G(sb.ctx).WithFields(ph.fields).Info("pod stopped")
	sb.mu.Lock()
	_ = sb.setPhase(phaseStopped)
	close(sb.stopped)
	sb.mu.Unlock()
	sb.end(killedStatus)
	return errors.Join(errs...)
}
