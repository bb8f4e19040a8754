package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

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

// How long an exit event waits for the process's last output to be copied
// out. A background child holding stdout open would otherwise delay it
// forever.
const (
	initOutputGrace = 10 * time.Second
	execOutputGrace = 2 * time.Second
)

// sandbox is the VM of one shim, and the containers in it: a pod, or the
// single container of a plain `ctr run`.
type sandbox struct {
	id        string
	ctx       context.Context // the shim's lifetime
	namespace string
	cfg       *vmconfig.Config
	events    *events
	dir       string // <state_dir>/sandboxes/<id>
	shareDir  string // dir/shared, the guest's /run/podvm/shared

	bootMu     sync.Mutex
	configured bool // runtime options applied
	guest      *vm.Guest
	pod        *network.Pod // the pod's interfaces joined to the VM

	// running is guest for readers that must not wait for a boot (the
	// metrics); nil before boot and after stop.
	running       atomic.Pointer[vm.Guest]
	metrics       *metrics.Shim
	metricsServer *metrics.Server
	console       *consoleServer // nil unless debug_console is on

	mu         sync.Mutex
	containers map[string]*container
	stopping   bool

	// resizeMu guards demands, each container's limits (see fit).
	resizeMu sync.Mutex
	demands  map[string]demand
}

func newSandbox(ctx context.Context, id, namespace string, cfg *vmconfig.Config, ev *events) *sandbox {
	dir := sandboxDir(cfg, id)
	return &sandbox{
		id: id, ctx: ctx, namespace: namespace, cfg: cfg, events: ev,
		dir: dir, shareDir: filepath.Join(dir, "shared"),
		containers: map[string]*container{}, demands: map[string]demand{},
	}
}

func sandboxDir(cfg *vmconfig.Config, id string) string {
	return filepath.Join(cfg.StateDir, "sandboxes", id)
}

// configure applies the runtime handler's options (CRI's ConfigPath or
// ConfigBody) and then the pod's io.podvm.config.* annotations once, before
// the VM exists: a VM's configuration is settled when it boots.
func (sb *sandbox) configure(opts *anypb.Any, annotations map[string]string) error {
	sb.bootMu.Lock()
	defer sb.bootMu.Unlock()
	if sb.guest != nil || sb.configured {
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

// qemuPidFile records QEMU's PID for `containerd-shim-podvm-v2 delete`
// after a crash of the shim.
const qemuPidFile = "qemu.pid"

// ensureVM boots the sandbox's VM the first time a container needs it, in
// the network the first container's spec describes.
func (sb *sandbox) ensureVM(ctx context.Context, spec *specs.Spec) (retErr error) {
	sb.bootMu.Lock()
	defer sb.bootMu.Unlock()
	if sb.guest != nil {
		if !sb.guestAlive() {
			return fmt.Errorf("the VM of sandbox %s has exited: %w", sb.id, sb.guest.VM.Err())
		}
		return nil
	}
	if err := os.MkdirAll(sb.shareDir, 0o711); err != nil {
		return fmt.Errorf("create shared directory: %w", err)
	}
	defer func() {
		if retErr != nil {
			if sb.guest != nil {
				sb.running.Store(nil)
				_ = sb.guest.Shutdown(context.Background())
				sb.guest = nil
			}
			_ = sb.closeNetwork()
			_ = unmountTree(sb.dir)
		}
	}()
	netns, nics, err := sb.podNetwork(ctx, spec)
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	logger := log.G(sb.ctx)
	sizing := sb.cfg.ForPod(spec.Annotations)
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
	g, err := vm.Boot(ctx, sizing, vm.Options{
		ID:          sb.id,
		Shares:      []hypervisor.Share{{Tag: shareTag, Path: sb.shareDir}},
		Console:     func(line string) { logger.Debug("guest: " + line) },
		NetNS:       netns,
		NICs:        nics,
		Interceptor: sb.agentInterceptor,
	})
	if err != nil {
		sb.metrics.BootFailed()
		return err
	}
	sb.guest = g
	sb.running.Store(g)
	sb.metrics.Booted(g.BootTime, g.AgentReady, sizing.Hypervisor.VCPUs, sizing.Hypervisor.MemoryMiB)
	sb.closeEndpointFiles()
	_ = os.WriteFile(filepath.Join(sb.dir, qemuPidFile), []byte(strconv.Itoa(g.VM.PID())), 0o644)
	if err := sb.configureGuestNetwork(ctx); err != nil {
		return err
	}
	go sb.watchOOM()
	go sb.watchVM()
	if sizing.DebugConsole {
		// A pod without its console still runs: say why and go on.
		if err := sb.serveConsole(); err != nil {
			logger.WithError(err).Warn("no debug console")
		}
	}
	return nil
}

func (sb *sandbox) guestAlive() bool {
	if sb.guest == nil {
		return false
	}
	select {
	case <-sb.guest.VM.Done():
		return false
	default:
		return true
	}
}

// watchVM reports a VM that ended without being asked to.
func (sb *sandbox) watchVM() {
	<-sb.guest.VM.Done()
	sb.mu.Lock()
	stopping := sb.stopping
	sb.mu.Unlock()
	if !stopping {
		log.G(sb.ctx).WithError(sb.guest.VM.Err()).Error("the VM exited unexpectedly; its containers are gone")
	}
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

// watchExit waits in the guest for the process to end, then publishes its
// exit once its output is out (and, for an init process, once its exec
// processes have exited, as containerd expects).
func (sb *sandbox) watchExit(p *process) {
	logger := p.logger(sb.ctx)
	status := uint32(137)
	resp, err := sb.guest.Containers.WaitProcess(sb.ctx, p.ref())
	switch {
	case err == nil:
		status = resp.ExitStatus
	case sb.ctx.Err() != nil:
		return
	default:
		logger.WithError(err).Warn("lost the process in the guest; reporting it killed")
	}
	grace := execOutputGrace
	if p.execID == "" {
		grace = initOutputGrace
	}
	if !p.io.waitOutput(grace) {
		logger.Warnf("output still open %v after exit (a background process holds it?)", grace)
	}
	if p.execID == "" {
		deadline := time.After(5 * time.Second)
		for _, e := range p.c.runningExecs() {
			select {
			case <-e.exited:
			case <-deadline:
			}
		}
	}
	p.SetExited(status, func(at time.Time) {
		id := p.execID
		if id == "" {
			id = p.c.id
		}
		sb.events.send(&eventstypes.TaskExit{
			ContainerID: p.c.id, ID: id, Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
		})
	})
	logger.WithField("status", status).Info("process exited")
}

// watchOOM publishes the guest's OOM kills.
func (sb *sandbox) watchOOM() {
	for sb.guestAlive() && sb.ctx.Err() == nil {
		ev, err := sb.guest.Containers.WaitOOM(sb.ctx, &emptypb.Empty{})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		log.G(sb.ctx).WithField("container", ev.ContainerId).Warn("OOM kill in the guest")
		sb.events.send(&eventstypes.TaskOOM{ContainerID: ev.ContainerId})
	}
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
	defer sb.mu.Unlock()
	delete(sb.containers, id)
	sb.forget(id)
	return len(sb.containers) == 0
}

func (sb *sandbox) empty() bool {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return len(sb.containers) == 0
}

// stop shuts the VM down and removes the sandbox's directory. It is
// idempotent.
func (sb *sandbox) stop(ctx context.Context) error {
	sb.mu.Lock()
	sb.stopping = true
	sb.mu.Unlock()
	sb.bootMu.Lock()
	defer sb.bootMu.Unlock()
	var errs []error
	if sb.console != nil {
		// Before the VM goes: each open console is closed in the guest.
		sb.console.close()
		sb.console = nil
	}
	sb.running.Store(nil)
	if sb.metricsServer != nil {
		sb.metricsServer.Close()
		sb.metricsServer = nil
	}
	if sb.guest != nil {
		if err := sb.guest.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sb.closeNetwork(); err != nil {
		errs = append(errs, err)
	}
	if err := unmountTree(sb.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanupAfterCrash is `delete` after the shim died: QEMU normally died
// with it (it runs with a parent-death signal), but is killed here if not;
// the container's mounts, and for the sandbox's own container the whole
// sandbox directory, are removed.
func cleanupAfterCrash(cfg *vmconfig.Config, sandboxID, containerID string) error {
	dir := sandboxDir(cfg, sandboxID)
	var errs []error
	if containerID == sandboxID {
		if b, err := os.ReadFile(filepath.Join(dir, qemuPidFile)); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				killQEMU(pid, sandboxID)
			}
		}
		if err := network.Cleanup(filepath.Join(dir, networkState)); err != nil {
			errs = append(errs, err)
		}
		if err := network.RemoveSaved(filepath.Join(dir, netnsState)); err != nil {
			errs = append(errs, err)
		}
		if err := unmountTree(dir); err != nil {
			errs = append(errs, err)
		}
	} else if err := unmountTree(filepath.Join(dir, "shared", containerID)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killQEMU kills pid if it is still the QEMU of the sandbox (the PID may
// have been reused since).
func killQEMU(pid int, sandboxID string) {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmd), "\x00-name\x00"+sandboxID+"\x00") {
		return
	}
	p, err := os.FindProcess(pid)
	if err == nil {
		_ = p.Kill()
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
