package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vm"
	"github.com/podvm/podvm/vmconfig"
)

// Boot brings the pod's VM up the first time something needs it, in the
// network, cgroup and size that spec (the sandbox's, or a `ctr run`
// container's) describes. Other callers wait for a boot in progress (or
// give up when their ctx does); Stop cancels it. A boot that fails leaves
// nothing, and the next call tries again.
func (sb *Pod) Boot(ctx context.Context, spec *specs.Spec) error {
	for {
		sb.mu.Lock()
		switch sb.phase {
		case phaseRunning:
			g := sb.guest
			sb.mu.Unlock()
			if !g.Alive() {
				return fmt.Errorf("the VM of sandbox %s has exited: %w", sb.id, g.VM.Err())
			}
			return nil
		case phaseBooting:
			ch := sb.booting
			sb.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		case phaseExited:
			sb.mu.Unlock()
			return fmt.Errorf("the VM of sandbox %s has exited: %w", sb.id, errdefs.ErrFailedPrecondition)
		}
		if err := sb.setPhase(phaseBooting); err != nil {
			sb.mu.Unlock()
			return fmt.Errorf("boot: %w", err)
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
			_ = sb.setPhase(phaseRunning)
		} else {
			_ = sb.setPhase(phaseNew)
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
func (sb *Pod) boot(ctx context.Context, cfg *vmconfig.Config, spec *specs.Spec) (_ *vm.Guest, retErr error) {
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
	ph := newPhases(sb.metrics)
	netns, nics, err := sb.podNetwork(ctx, cfg, spec)
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	ph.mark("network")
	logger := log.G(sb.ctx)
	sizing := cfg.ForPod(spec.Annotations)
	if spec.Annotations[AnnotationContainerType] == "" {
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
	opts := vm.Options{
		ID:          sb.id,
		Shares:      []hypervisor.Share{{Tag: shareTag, Path: sb.shareDir}},
		SocketDir:   sb.dir,
		Console:     func(line string) { logger.Debug("guest: " + line) },
		NetNS:       netns,
		NICs:        nics,
		Interceptor: sb.agentInterceptor,
	}
	// A template is built outside the pod's cgroup: its RAM is no pod's.
	if opts.Template, err = vm.PrepareTemplate(ctx, sizing, opts); err != nil {
		logger.WithError(err).Warn("no VM template; booting")
		opts.ColdBoot = true
	}
	ph.mark("template")
	if err := sb.joinCgroup(spec); err != nil {
		return nil, err
	}
	ph.mark("cgroup")
	g, err = vm.Boot(ctx, sizing, opts)
	if err != nil {
		sb.metrics.BootFailed()
		return nil, err
	}
	sb.metrics.Booted(g.BootTime, g.AgentReady, sizing.Hypervisor.VCPUs, sizing.Hypervisor.MemoryMiB)
	sb.closeEndpointFiles()
	_ = os.WriteFile(filepath.Join(sb.dir, qemuPidFile), []byte(strconv.Itoa(g.VM.PID())), 0o600)
	ph.add("qemu", g.Timings.QEMU)
	ph.add("restore", g.Timings.Restore)
	ph.add("agent", g.Timings.Agent)
	ph.mark("vm")
	if err := sb.configureGuestNetwork(ctx, g); err != nil {
		return nil, err
	}
	ph.mark("guest_network")
	if netns != "" && isCRISandbox(spec) {
		sb.servePortForward(sb.ctx, netns, g)
	}
	how := "booted"
	if g.Template != "" {
		how = "restored from a template"
	}
	logger.WithFields(ph.fields).Info("pod VM up, " + how)
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
func (sb *Pod) joinCgroup(spec *specs.Spec) error {
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
func (sb *Pod) leaveCgroup() error {
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
