package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/metrics"
	"github.com/podvm/podvm/network"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

// CRI's annotations that group a pod's containers.
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// sandbox is the VM of one shim, and the containers in it: a pod, or the
// single container of a plain `ctr run`.
//
// Its VM goes through three phases: none (guest nil), booting (booting
// open), running (guest set), and once stopping is set it never boots
// again. mu guards these fields and is never held across a call to the
// guest or a boot.
type sandbox struct {
	id        string
	ctx       context.Context // the shim's lifetime
	namespace string
	events    *events
	dir       string // <state_dir>/sandboxes/<id>
	shareDir  string // dir/shared, the guest's /run/podvm/shared

	mu         sync.Mutex
	cfg        *vmconfig.Config
	configured bool          // runtime options applied
	guest      *vm.Guest     // the running VM, once booted
	booting    chan struct{} // closed when the boot in progress ends
	bootCancel context.CancelFunc
	stopping   bool
	containers map[string]*container

	// The pod's network, owned by the boot (and then by Start's rescan and
	// stop, which never run alongside it).
	netMu sync.Mutex
	pod   *network.Pod
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

func newSandbox(ctx context.Context, id, namespace string, cfg *vmconfig.Config, ev *events) *sandbox {
	dir := sandboxDir(cfg, id)
	return &sandbox{
		id: id, ctx: ctx, namespace: namespace, cfg: cfg, events: ev,
		dir: dir, shareDir: filepath.Join(dir, "shared"),
		containers: map[string]*container{}, demands: map[string]demand{},
		grow: make(chan struct{}, 1),
	}
}

func sandboxDir(cfg *vmconfig.Config, id string) string {
	return filepath.Join(cfg.StateDir, "sandboxes", id)
}

// config is the sandbox's configuration as it stands.
func (sb *sandbox) config() *vmconfig.Config {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.cfg
}

// configure applies the runtime handler's options (CRI's ConfigPath or
// ConfigBody) and then the pod's io.podvm.config.* annotations once, before
// the VM exists: a VM's configuration is settled when it boots.
func (sb *sandbox) configure(opts *anypb.Any, annotations map[string]string) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.guest != nil || sb.booting != nil || sb.configured {
		return nil
	}
	c, err := withRuntimeOptions(sb.cfg, opts)
	if err != nil {
		return err
	}
	if c, err = c.WithAnnotations(annotations); err != nil {
		return fmt.Errorf("pod annotations: %w", err)
	}
	sb.cfg, sb.configured = c, true
	return nil
}

// runningGuest is the VM while it runs, else nil.
func (sb *sandbox) runningGuest() *vm.Guest {
	if g := sb.running.Load(); g != nil && g.Alive() {
		return g
	}
	return nil
}

// ensureVM boots the sandbox's VM the first time a container needs it, in
// the network the first container's spec describes. Other callers wait for
// a boot in progress (or give up when their ctx does); stop cancels it.
func (sb *sandbox) ensureVM(ctx context.Context, spec *specs.Spec) error {
	for {
		sb.mu.Lock()
		switch {
		case sb.stopping:
			sb.mu.Unlock()
			return fmt.Errorf("sandbox %s is being stopped: %w", sb.id, errdefs.ErrFailedPrecondition)
		case sb.guest != nil:
			g := sb.guest
			sb.mu.Unlock()
			if !g.Alive() {
				return fmt.Errorf("the VM of sandbox %s has exited: %w", sb.id, g.VM.Err())
			}
			return nil
		case sb.booting != nil:
			ch := sb.booting
			sb.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		done := make(chan struct{})
		bctx, cancel := context.WithCancel(ctx)
		sb.booting, sb.bootCancel = done, cancel
		cfg := sb.cfg
		sb.mu.Unlock()

		g, err := sb.boot(bctx, cfg, spec)
		cancel()
		sb.mu.Lock()
		sb.booting, sb.bootCancel = nil, nil
		if err == nil {
			sb.guest = g
			sb.running.Store(g)
		}
		close(done)
		sb.mu.Unlock()
		return err
	}
}

// qemuPidFile records QEMU's PID for `containerd-shim-podvm-v2 delete`
// after a crash of the shim.
const qemuPidFile = "qemu.pid"

// boot brings up the pod network and the VM; on failure it leaves nothing.
func (sb *sandbox) boot(ctx context.Context, cfg *vmconfig.Config, spec *specs.Spec) (_ *vm.Guest, retErr error) {
	if err := os.MkdirAll(sb.shareDir, 0o700); err != nil {
		return nil, fmt.Errorf("create shared directory: %w", err)
	}
	var g *vm.Guest
	defer func() {
		if retErr != nil {
			if g != nil {
				_ = g.Shutdown(context.Background())
			}
			_ = sb.leaveCgroup()
			_ = sb.closeNetwork()
			_ = unmountTree(sb.dir, ".")
		}
	}()
	if err := sb.joinCgroup(spec); err != nil {
		return nil, err
	}
	netns, nics, err := sb.podNetwork(ctx, cfg, spec)
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	logger := log.G(sb.ctx)
	sizing := cfg.ForPod(spec.Annotations)
	if spec.Annotations[annotationContainerType] == "" {
		// Not CRI (ctr run): the container is the whole pod, and its
		// limits size the VM from the start.
		d := demandOf(specResources(spec))
		sizing = sizing.Grown(d.cpus, d.memoryMiB)
	}
	// containerd's -debug and the configuration's debug (which runtime
	// options or a pod annotation may set) mean the same: the guest's
	// console and its agent's logs in the shim's log.
	if log.GetLevel() >= log.DebugLevel {
		sizing.Debug = true
	} else if sizing.Debug {
		_ = log.SetLevel("debug")
	}
	g, err = vm.Boot(ctx, sizing, vm.Options{
		ID:          sb.id,
		Shares:      []hypervisor.Share{{Tag: shareTag, Path: sb.shareDir}},
		Console:     func(line string) { logger.Debug("guest: " + line) },
		NetNS:       netns,
		NICs:        nics,
		Interceptor: sb.agentInterceptor,
	})
	if err != nil {
		sb.metrics.BootFailed()
		return nil, err
	}
	sb.metrics.Booted(g.BootTime, g.AgentReady, sizing.Hypervisor.VCPUs, sizing.Hypervisor.MemoryMiB)
	sb.closeEndpointFiles()
	_ = os.WriteFile(filepath.Join(sb.dir, qemuPidFile), []byte(strconv.Itoa(g.VM.PID())), 0o600)
	if err := sb.configureGuestNetwork(ctx, g); err != nil {
		return nil, err
	}
	go sb.watchOOM(g)
	go sb.watchVM(g)
	if sizing.DebugConsole {
		// A pod without its console still runs: say why and go on.
		if err := sb.serveConsole(); err != nil {
			logger.WithError(err).Warn("no debug console")
		}
	}
	return g, nil
}

// joinCgroup moves the shim into the cgroup containerd gave the sandbox, so
// that QEMU starts in it.
func (sb *sandbox) joinCgroup(spec *specs.Spec) error {
	p := specCgroupsPath(spec)
	if p == "" {
		log.G(sb.ctx).Warn("the spec names no cgroup: the VM stays in the shim's")
		return nil
	}
	path, err := cgroupfsPath(p)
	if err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	cg, err := joinPodCgroup(path)
	if err != nil {
		return err
	}
	sb.cgroup = cg
	if err := cg.save(filepath.Join(sb.dir, cgroupState)); err != nil {
		return fmt.Errorf("record the pod's cgroup: %w", err)
	}
	return nil
}

// leaveCgroup returns the shim to its own cgroup and removes the pod's,
// once QEMU has exited. Repeating it is harmless.
func (sb *sandbox) leaveCgroup() error {
	cg := sb.cgroup
	sb.cgroup = nil
	if cg == nil {
		return nil
	}
	if err := cg.leave(); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(sb.dir, cgroupState)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// podPid is the guest PID of the pod's sandbox container, whose namespaces
// the pod's other containers join.
func (sb *sandbox) podPid(id string, spec *specs.Spec) uint32 {
	if spec.Annotations[annotationContainerType] != "container" {
		return 0
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if c, ok := sb.containers[spec.Annotations[annotationSandboxID]]; ok && c.id != id {
		return c.init.guestPid
	}
	return 0
}

func (sb *sandbox) add(c *container) {
	sb.mu.Lock()
	sb.containers[c.id] = c
	sb.mu.Unlock()
}

func (sb *sandbox) get(id string) (*container, bool) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	c, ok := sb.containers[id]
	return c, ok
}

// remove forgets a deleted container and reports whether it was the last.
func (sb *sandbox) remove(id string) bool {
	sb.mu.Lock()
	delete(sb.containers, id)
	last := len(sb.containers) == 0
	sb.mu.Unlock()
	sb.forget(id)
	return last
}

func (sb *sandbox) empty() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return len(sb.containers) == 0
}

// stop shuts the VM down and removes the sandbox's directory. A boot in
// progress is cancelled first. It is idempotent, and bounded: a guest that
// does not answer is killed.
func (sb *sandbox) stop(ctx context.Context) error {
	sb.mu.Lock()
	sb.stopping = true
	if sb.bootCancel != nil {
		sb.bootCancel()
	}
	booting := sb.booting
	sb.mu.Unlock()
	if booting != nil {
		<-booting
	}
	sb.mu.Lock()
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
	if g != nil {
		if err := g.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sb.leaveCgroup(); err != nil {
		errs = append(errs, err)
	}
	if err := sb.closeNetwork(); err != nil {
		errs = append(errs, err)
	}
	if err := unmountTree(sb.dir, "."); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
