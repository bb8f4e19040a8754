// Package vm is the host's one door to a podvm guest: it boots the VM
// (package hypervisor), decides what the agent is told at boot, and offers
// every call to the agent as a typed method with a deadline. Replies are
// checked before use, since the guest is not trusted, and a guest that
// stops answering is killed from the host rather than left to hold its
// pod.
package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vmconfig"
)

// Guest is a booted VM whose agent answered. Its methods are the only way
// to the agent; each has a deadline, and each fails with an error that is
// ErrStopped once the VM is gone.
type Guest struct {
	ID    string
	VM    *hypervisor.VM
	Accel hypervisor.AccelChoice
	// BootTime is from QEMU's exec to the agent's first answer.
	BootTime time.Duration
	// AgentReady is the guest's own view: kernel start to the agent serving.
	AgentReady time.Duration
	// Template names the template the VM was restored from; empty for a
	// VM that booted.
	Template string
	// SharedFS is how the VM serves its shares: hypervisor.FS9P or
	// hypervisor.FSVirtio.
	SharedFS string
	// Timings are the parts of BootTime.
	Timings BootTimings
	// macs maps the MAC a NIC was asked for to the one it has in a
	// restored guest (the template's), until the guest is configured.
	macs map[string]string

	// life is the VM's process as the calls need it (a fake in tests).
	life   life
	client *ttrpc.Client
	agentClients
	// out carries processes' streams (the stdio port).
	out *stdioPort

	requestTimeout  time.Duration
	aliveTimeout    time.Duration
	shutdownTimeout time.Duration

	watch    calls
	probing  atomic.Bool
	stopped  atomic.Pointer[StoppedError] // why the host gave up on the guest
	stopOnce sync.Once
	stopErr  error
}

// BootTimings say where a VM's start went.
type BootTimings struct {
	// Template is finding (or building) the template; zero for a boot.
	Template time.Duration
	// QEMU is QEMU's exec to its QMP greeting.
	QEMU time.Duration
	// Restore is loading the template's state and resuming the VM.
	Restore time.Duration
	// Agent is from then to the agent's first answer: the whole kernel
	// boot for a cold VM, only the boot record for a restored one.
	Agent time.Duration
}

// agentClients are the generated ttrpc clients: only this package calls
// them, through Guest.call.
type agentClients struct {
	agent      agentapi.AgentService
	containers agentapi.ContainersService
	stdio      agentapi.StdioService
	network    agentapi.NetworkService
	debug      agentapi.DebugService
	forward    agentapi.ForwardService
}

// life is what the calls need of the VM's process.
type life interface {
	Done() <-chan struct{}
	Err() error
	Kill()
}

// Options adjust one boot beyond the configuration.
type Options struct {
	// ID names the VM (the sandbox ID).
	ID string
	// Console receives the guest's console lines (at most a few hundred a
	// second; the rest are counted and dropped); by default they go to the
	// context's logger at debug level, prefixed.
	Console func(line string)
	// Shares are host directories exported to the guest (over the
	// configuration's shared filesystem).
	Shares []hypervisor.Share
	// SocketDir is a directory only root can enter, where a virtio-fs
	// daemon's socket is made (and unlinked at once).
	SocketDir string
	// NetNS is the network namespace QEMU runs in; NICs its network cards.
	NetNS string
	NICs  []hypervisor.NIC
	// Interceptor sees every RPC to the agent (the shim's metrics).
	Interceptor ttrpc.UnaryClientInterceptor
	// ColdBoot boots the VM even where a template would serve.
	ColdBoot bool
	// Template is the one PrepareTemplate returned for these options: Boot
	// restores from it without looking for it again.
	Template *Template
	// CPUPlug overrides how vCPUs are added (hypervisor.CPUPlug); empty
	// chooses by accelerator.
	CPUPlug hypervisor.CPUPlug
}

// Boot starts a VM and waits until its agent answers: restored from a
// template where templates apply (built first if missing), booted
// otherwise, or when a restore fails. On failure nothing is left running.
func Boot(ctx context.Context, c *vmconfig.Config, opts Options) (*Guest, error) {
	if opts.ID == "" {
		opts.ID = "podvm"
	}
	logger := log.G(ctx).WithField("vm", opts.ID)
	b, err := plan(ctx, c, opts.ID)
	if err != nil {
		return nil, fmt.Errorf("boot VM %s: %w", opts.ID, err)
	}
	hc := withOptions(b.hypervisor, opts)
	if b.accel.Accel == hypervisor.TCG && c.Hypervisor.Accelerator == "auto" {
		logger.Debugf("using TCG (software emulation, slow): %s", b.accel.Reason)
	}
	console := opts.Console
	if console == nil {
		console = func(line string) { logger.Debug("console: " + line) }
	}
	hc.Console = limitConsole("guest console", console)
	// QEMU says there why it stopped a device for the guest's fault
	// ("virtio: zero sized buffers are not allowed"): the pod's agent may
	// be gone with it.
	hc.Stderr = limitConsole("qemu", func(line string) { logger.Info("qemu: " + line) })
	why := templateUsable(c, b)
	if opts.ColdBoot {
		why = "asked for"
	}
	if why != "" {
		logger.Debugf("cold boot: %s", why)
		return coldBoot(ctx, c, b, hc, opts)
	}
	g, err := restore(ctx, c, b, hc, opts)
	if err == nil {
		return g.finish(ctx, c, b, opts)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("boot VM %s: %w", opts.ID, err)
	}
	logger.WithError(err).Warn("restore from the VM template failed; booting instead")
	return coldBoot(ctx, c, b, hc, opts)
}

// withOptions is hc with what opts add to the configuration.
func withOptions(hc hypervisor.Config, opts Options) hypervisor.Config {
	hc.Shares = opts.Shares
	hc.SocketDir = opts.SocketDir
	hc.NetNS = opts.NetNS
	hc.NICs = opts.NICs
	hc.CPUPlug = opts.CPUPlug
	return hc
}

// coldBoot starts QEMU on the kernel and waits for the agent.
func coldBoot(ctx context.Context, c *vmconfig.Config, b bootPlan, hc hypervisor.Config, opts Options) (*Guest, error) {
	v, err := hypervisor.Start(ctx, hc)
	if err != nil {
		return nil, err
	}
	g := newGuest(c, opts, v, b)
	g.Timings.QEMU = time.Since(v.Started())
	return g.finish(ctx, c, b, opts)
}

// restore starts QEMU from the template for hc (built first if missing) and
// resumes it; the caller then waits for the agent as after a boot. The
// NICs start with the template's MACs; the guest gets the pod's when its
// network is configured. A failure here is the template's, and a cold boot
// may still work; a guest that fails after it resumed is the VM's.
func restore(ctx context.Context, c *vmconfig.Config, b bootPlan, hc hypervisor.Config, opts Options) (*Guest, error) {
	start := time.Now()
	t := opts.Template
	if t == nil {
		var err error
		if t, err = ensureTemplate(ctx, c, b, hc); err != nil {
			return nil, err
		}
	}
	prepared := time.Since(start)
	state, err := os.Open(t.state())
	if err != nil {
		return nil, fmt.Errorf("template state: %w", err)
	}
	defer state.Close()
	hc.Memory = &hypervisor.MemoryFile{Path: t.memory()}
	hc.Incoming = true
	macs := map[string]string{}
	nics := hypervisor.TemplateNICs(hc.NICs)
	for i, n := range hc.NICs {
		macs[n.MAC.String()] = nics[i].MAC.String()
	}
	hc.NICs = nics
	v, err := hypervisor.Start(ctx, hc)
	if err != nil {
		return nil, err
	}
	g := newGuest(c, opts, v, b)
	g.Timings.Template = prepared
	g.Timings.QEMU = time.Since(v.Started())
	restoring := time.Now()
	// Loading a state is QEMU's work, but a QEMU stuck in it must not hold
	// the pod: it gets what a boot gets.
	rctx, cancel := context.WithTimeout(ctx, c.Timeouts.Boot.Duration)
	err = v.RestoreState(rctx, state)
	cancel()
	if err != nil {
		refused := false
		select {
		case <-v.Done():
			// QEMU refused the state: the template is no good.
			refused = true
		default:
		}
		_ = v.Stop(context.Background(), 0)
		if refused {
			_ = os.RemoveAll(t.Dir)
		}
		return nil, err
	}
	g.Timings.Restore = time.Since(restoring)
	g.Template = filepath.Base(t.Dir)
	g.macs = macs
	return g, nil
}

func newGuest(c *vmconfig.Config, opts Options, v *hypervisor.VM, b bootPlan) *Guest {
	return &Guest{
		ID: opts.ID, VM: v, life: v, Accel: b.accel, SharedFS: b.hypervisor.SharedFS,
		requestTimeout:  c.Timeouts.Request.Duration,
		aliveTimeout:    c.Timeouts.Agent.Duration,
		shutdownTimeout: c.Timeouts.Shutdown.Duration,
	}
}

// finish connects to the agent of a started VM; on failure it stops QEMU.
func (g *Guest) finish(ctx context.Context, c *vmconfig.Config, b bootPlan, opts Options) (*Guest, error) {
	logger := log.G(ctx).WithField("vm", opts.ID)
	logger.Debugf("qemu pid %d: %s", g.VM.PID(), strings.Join(g.VM.CommandLine(), " "))
	agentStart := time.Now()
	if err := g.connect(ctx, b, c.Timeouts.Boot.Duration, opts.Interceptor); err != nil {
		_ = g.VM.Stop(context.Background(), 0)
		return nil, fmt.Errorf("boot VM %s: %w", opts.ID, err)
	}
	g.Timings.Agent = time.Since(agentStart)
	go g.watchdog()
	how := "booted"
	if g.Template != "" {
		how = "restored from template " + g.Template
	}
	logger.WithField("boot", g.BootTime).WithField("accel", b.accel.Accel).
		WithField("qemu", g.Timings.QEMU).WithField("restore", g.Timings.Restore).WithField("agent", g.Timings.Agent).
		Info("guest agent ready, " + how)
	return g, nil
}

// connect dials the agent and waits for its first Health answer. Over the
// serial port the request can be written at once: QEMU holds it until the
// agent opens its port.
func (g *Guest) connect(ctx context.Context, b bootPlan, timeout time.Duration, interceptor ttrpc.UnaryClientInterceptor) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		select {
		case <-g.VM.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := b.handOver(g.VM); err != nil {
		return err
	}
	conn, err := b.dial(ctx, g.VM)
	if err != nil {
		return g.explain(ctx, timeout, err)
	}
	var opts []ttrpc.ClientOpts
	if interceptor != nil {
		opts = append(opts, ttrpc.WithUnaryClientInterceptor(interceptor))
	}
	out, err := g.VM.Port(agentapi.StdioPortName)
	if err != nil {
		conn.Close()
		return fmt.Errorf("stdio port: %w", err)
	}
	g.out = newStdioPort(out)
	g.attach(ttrpc.NewClient(conn, opts...))
	resp, err := g.agent.Health(ctx, &agentapi.HealthRequest{})
	if err != nil {
		g.client.Close()
		g.out.Close()
		return g.explain(ctx, timeout, err)
	}
	g.BootTime = time.Since(g.VM.Started())
	g.AgentReady = time.Duration(max(resp.AgentReadyNs, 0))
	return nil
}

// attach makes the agent's clients on a connected ttrpc client.
func (g *Guest) attach(c *ttrpc.Client) {
	g.client = c
	g.agentClients = agentClients{
		agent:      agentapi.NewAgentClient(c),
		containers: agentapi.NewContainersClient(c),
		stdio:      agentapi.NewStdioClient(c),
		network:    agentapi.NewNetworkClient(c),
		debug:      agentapi.NewDebugClient(c),
		forward:    agentapi.NewForwardClient(c),
	}
}

// explain turns a failed wait for the agent into an error that says why:
// QEMU's exit, or a timeout, with the last console lines either way.
func (g *Guest) explain(ctx context.Context, timeout time.Duration, err error) error {
	// A closed channel usually means QEMU is exiting; its exit status is
	// the better explanation, and arrives a moment later.
	wait := 2 * time.Second
	if ctx.Err() != nil {
		wait = 0
	}
	select {
	case <-g.VM.Done():
	case <-time.After(wait):
	}
	select {
	case <-g.VM.Done():
		exit := g.VM.Err()
		if exit == nil {
			exit = errors.New("qemu exited (the guest powered off)")
		}
		return fmt.Errorf("guest stopped before its agent answered: %w%s", exit, consoleTail(g.VM))
	default:
	}
	if ctx.Err() != nil {
		return fmt.Errorf("guest agent did not answer within %v (timeouts.boot): %w%s", timeout, ctx.Err(), consoleTail(g.VM))
	}
	return fmt.Errorf("guest agent: %w%s", err, consoleTail(g.VM))
}

func consoleTail(v *hypervisor.VM) string {
	lines := v.ConsoleTail()
	if len(lines) == 0 {
		return "\n(the guest printed nothing on its console)"
	}
	return "\nlast console lines:\n  " + strings.Join(lines, "\n  ")
}

// Shutdown asks the agent to power the guest off, then stops QEMU (quit,
// then kill) if it has not exited within the shutdown timeout. It returns
// once QEMU is reaped and its sockets are closed; calling it again returns
// the first result. A guest that does not answer costs at most the
// shutdown timeout.
func (g *Guest) Shutdown(ctx context.Context) error {
	g.stopOnce.Do(func() {
		grace := g.shutdownTimeout
		if g.gone() == nil {
			actx, cancel := context.WithTimeout(ctx, grace)
			resp, err := g.agent.Shutdown(actx, &agentapi.ShutdownRequest{})
			cancel()
			switch {
			case err != nil && !isClosed(err):
				log.G(ctx).WithField("vm", g.ID).WithError(err).Warn("agent shutdown failed; stopping QEMU")
				grace = 0
			case err == nil && resp.Synced:
				// Nothing is left in the guest to lose: QEMU quits
				// without waiting for the guest's reset.
				grace = 0
			}
		}
		g.stopErr = g.VM.Stop(ctx, grace)
		g.client.Close()
		g.out.Close()
	})
	return g.stopErr
}

// Kill ends the VM at once from the host, without asking the guest; every
// call in flight fails with ErrStopped.
func (g *Guest) Kill(reason string) {
	g.giveUp(errors.New(reason))
}

// Done is closed once QEMU has exited.
func (g *Guest) Done() <-chan struct{} { return g.life.Done() }

// Alive reports whether the VM still runs and the host has not given up on
// it.
func (g *Guest) Alive() bool { return g.gone() == nil }
