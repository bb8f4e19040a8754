// Package vm boots a podvm guest: it resolves the configuration into a QEMU
// process (package hypervisor), connects to the guest agent and stops the
// guest again, gracefully first.
package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vmconfig"
)

// Guest is a booted VM whose agent answered.
type Guest struct {
	ID         string
	VM         *hypervisor.VM
	Agent      agentapi.AgentService
	Containers agentapi.ContainersService
	Stdio      agentapi.StdioService
	Network    agentapi.NetworkService
	Debug      agentapi.DebugService
	Accel      hypervisor.AccelChoice
	client     *ttrpc.Client
	// BootTime is from QEMU's exec to the agent's first answer.
	BootTime time.Duration
	// AgentReady is the guest's own view: kernel start to the agent serving.
	AgentReady time.Duration

	interceptor     ttrpc.UnaryClientInterceptor
	shutdownTimeout time.Duration
	stopOnce        sync.Once
	stopErr         error
}

// Options adjust one boot beyond the configuration.
type Options struct {
	// ID names the VM (the sandbox ID).
	ID string
	// Console receives the guest's console lines; by default they go to
	// the context's logger at debug level, prefixed.
	Console func(line string)
	// Shares are host directories exported to the guest over 9p.
	Shares []hypervisor.Share
	// NetNS is the network namespace QEMU runs in; NICs its network cards.
	NetNS string
	NICs  []hypervisor.NIC
	// Interceptor sees every RPC to the agent (the shim's metrics).
	Interceptor ttrpc.UnaryClientInterceptor
	// CPUPlug overrides how vCPUs are added (hypervisor.CPUPlug); empty
	// chooses by accelerator.
	CPUPlug hypervisor.CPUPlug
}

// HypervisorConfig turns the configuration into what hypervisor.Start
// takes, choosing the accelerator (a cached probe) and the agent transport.
func HypervisorConfig(ctx context.Context, c *vmconfig.Config, id string) (hypervisor.Config, hypervisor.AccelChoice, error) {
	h := c.Hypervisor
	hc := hypervisor.Config{
		ID:        id,
		QEMU:      h.Path,
		Kernel:    h.Kernel,
		Initramfs: h.Initramfs,
		Machine:   h.Machine,
		CPUs:      h.VCPUs,
		MemoryMiB: h.MemoryMiB,
		// Room to grow on machines that can (q35): Update hot-plugs up
		// to these.
		MaxCPUs:      vmconfig.MaxVCPUs(),
		MaxMemoryMiB: h.MaxMemoryMiB,
		TBSizeMiB:    h.TCGCacheMiB,
		CPUModel:     h.CPUModel,
		TSCKHz:       hypervisor.CachedHostTSCKHz(c.StateDir),
		VsockPort:    c.Agent.VsockPort,
		Debug:        c.Debug,
	}
	hc.Hostname, _ = os.Hostname()
	if h.KernelParams != "" {
		hc.KernelParams = strings.Fields(h.KernelParams)
	}
	if c.DebugConsole {
		hc.KernelParams = append(hc.KernelParams, agentapi.ParamDebugConsole+"=1")
	}
	switch c.Agent.Transport {
	case "vsock":
		hc.Transport = hypervisor.Vsock
	case "serial":
		hc.Transport = hypervisor.Serial
	default:
		hc.Transport = hypervisor.Serial
		if hypervisor.VsockAvailable() {
			hc.Transport = hypervisor.Vsock
		}
	}
	probe := hc
	probe.Accel = hypervisor.TCG // replaced by the probe; validated meanwhile
	choice, err := hypervisor.ChooseAccel(ctx, h.Accelerator, probe, c.StateDir)
	if err != nil {
		return hc, choice, err
	}
	hc.Accel = choice.Accel
	return hc, choice, nil
}

// Boot starts a VM and waits until its agent answers. On failure nothing is
// left running.
func Boot(ctx context.Context, c *vmconfig.Config, opts Options) (*Guest, error) {
	if opts.ID == "" {
		opts.ID = "podvm"
	}
	logger := log.G(ctx).WithField("vm", opts.ID)
	hc, choice, err := HypervisorConfig(ctx, c, opts.ID)
	if err != nil {
		return nil, fmt.Errorf("boot VM %s: %w", opts.ID, err)
	}
	if choice.Accel == hypervisor.TCG && c.Hypervisor.Accelerator == "auto" {
		logger.Debugf("using TCG (software emulation, slow): %s", choice.Reason)
	}
	hc.Console = opts.Console
	hc.Shares = opts.Shares
	hc.NetNS = opts.NetNS
	hc.NICs = opts.NICs
	hc.CPUPlug = opts.CPUPlug
	if hc.Console == nil {
		hc.Console = func(line string) { logger.Debug("console: " + line) }
	}
	v, err := hypervisor.Start(ctx, hc)
	if err != nil {
		return nil, err
	}
	logger.Debugf("qemu pid %d: %s", v.PID(), strings.Join(v.CommandLine(), " "))
	g := &Guest{ID: opts.ID, VM: v, Accel: choice, shutdownTimeout: c.Timeouts.Shutdown.Duration, interceptor: opts.Interceptor}
	if err := g.connect(ctx, c.Timeouts.Boot.Duration); err != nil {
		_ = v.Stop(context.Background(), 0)
		return nil, fmt.Errorf("boot VM %s: %w", opts.ID, err)
	}
	logger.WithField("boot", g.BootTime).WithField("accel", choice.Accel).Info("guest agent ready")
	return g, nil
}

// connect dials the agent and waits for its first Health answer. Over the
// serial port the request can be written at once: QEMU holds it until the
// agent opens its port.
func (g *Guest) connect(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		select {
		case <-g.VM.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := g.VM.DialAgent(ctx)
	if err != nil {
		return g.explain(ctx, timeout, err)
	}
	var opts []ttrpc.ClientOpts
	if g.interceptor != nil {
		opts = append(opts, ttrpc.WithUnaryClientInterceptor(g.interceptor))
	}
	g.client = ttrpc.NewClient(conn, opts...)
	g.Agent = agentapi.NewAgentClient(g.client)
	g.Containers = agentapi.NewContainersClient(g.client)
	g.Stdio = agentapi.NewStdioClient(g.client)
	g.Network = agentapi.NewNetworkClient(g.client)
	g.Debug = agentapi.NewDebugClient(g.client)
	resp, err := g.Agent.Health(ctx, &agentapi.HealthRequest{})
	if err != nil {
		g.client.Close()
		return g.explain(ctx, timeout, err)
	}
	g.BootTime = time.Since(g.VM.Started())
	g.AgentReady = time.Duration(resp.AgentReadyNs)
	return nil
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
// the first result.
func (g *Guest) Shutdown(ctx context.Context) error {
	g.stopOnce.Do(func() {
		grace := g.shutdownTimeout
		select {
		case <-g.VM.Done():
		default:
			actx, cancel := context.WithTimeout(ctx, grace)
			_, err := g.Agent.Shutdown(actx, &agentapi.ShutdownRequest{})
			cancel()
			if err != nil && !isClosed(err) {
				log.G(ctx).WithField("vm", g.ID).WithError(err).Warn("agent shutdown failed; stopping QEMU")
				grace = 0
			}
		}
		g.stopErr = g.VM.Stop(ctx, grace)
		g.client.Close()
	})
	return g.stopErr
}

// isClosed reports errors that mean the guest went away mid-call, which
// during shutdown is the expected outcome.
func isClosed(err error) bool {
	return errors.Is(err, ttrpc.ErrClosed) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed")
}
