package vm

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/hypervisor"
	"github.com/podvm/podvm/vmconfig"
)

// bootPlan is a VM about to boot: QEMU's configuration, the accelerator
// chosen for it, and how the host reaches the agent once it runs.
type bootPlan struct {
	hypervisor hypervisor.Config
	accel      hypervisor.AccelChoice
	vsock      bool
	vsockPort  uint32
	// secret is this VM's: every connection to its agent presents it.
	secret []byte
}

// HypervisorConfig turns the configuration into what hypervisor.Start
// takes, choosing the accelerator (a cached probe) and the agent transport;
// `check` shows it.
func HypervisorConfig(ctx context.Context, c *vmconfig.Config, id string) (hypervisor.Config, hypervisor.AccelChoice, error) {
	b, err := plan(ctx, c, id)
	return b.hypervisor, b.accel, err
}

func plan(ctx context.Context, c *vmconfig.Config, id string) (bootPlan, error) {
	h := c.Hypervisor
	b := bootPlan{vsockPort: c.Agent.VsockPort, secret: make([]byte, agentapi.SecretSize)}
	if _, err := rand.Read(b.secret); err != nil {
		return b, fmt.Errorf("make the agent's secret: %w", err)
	}
	switch c.Agent.Transport {
	case "vsock":
		b.vsock = true
	case "serial":
	default:
		b.vsock = hypervisor.VsockAvailable()
	}
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
		MaxCPUs:       vmconfig.MaxVCPUs(),
		MaxMemoryMiB:  h.MaxMemoryMiB,
		TBSizeMiB:     h.TCGCacheMiB,
		CPUModel:      h.CPUModel,
		TSCKHz:        hypervisor.CachedHostTSCKHz(c.StateDir),
		Vsock:         b.vsock,
		SharedFS:      sharedFS(c, b.vsock),
		Virtiofsd:     h.VirtioFSDaemon,
		VirtioFSCache: h.VirtioFSCache,
		Debug:         c.Debug,
		ProbeMarker:   agentapi.ProbeMarker,
	}
	// The secret travels on a port of its own, which only the agent
	// reads, once.
	// Output has a port of its own on every transport: only QEMU
	// reaches it, and it needs no per-chunk call.
	hc.Ports = []string{agentapi.SecretPortName, agentapi.StdioPortName}
	if !b.vsock {
		hc.Ports = append(hc.Ports, agentapi.SerialPortName)
	}
	params := b.agentParams(c)
	probe := hc
	probe.Accel = hypervisor.TCG // replaced by the probe; validated meanwhile
	probe.KernelParams = append(append([]string{}, params...), agentapi.ParamProbe+"=1")
	probe.KernelParams = append(probe.KernelParams, operatorParams(h)...)
	choice, err := hypervisor.ChooseAccel(ctx, h.Accelerator, probe, c.StateDir)
	if err != nil {
		return b, err
	}
	hc.Accel = choice.Accel
	// The operator's parameters come last, so that they win.
	hc.KernelParams = append(params, operatorParams(h)...)
	b.hypervisor, b.accel = hc, choice
	return b, nil
}

// sharedFS resolves hypervisor.shared_fs. "auto" keeps 9p where a template
// will serve the VM: a restore is several times faster than a boot, and
// idle pods share the template's pages, neither of which virtio-fs allows
// (virtiofsd shares the guest's RAM). Where the VM boots anyway, virtio-fs
// is free and several times faster on small files and metadata.
func sharedFS(c *vmconfig.Config, vsock bool) string {
	switch c.Hypervisor.SharedFS {
	case hypervisor.FS9P, hypervisor.FSVirtio:
		return c.Hypervisor.SharedFS
	}
	if c.Template.Enabled && !vsock {
		return hypervisor.FS9P
	}
	if _, err := exec.LookPath(c.Hypervisor.VirtioFSDaemon); err != nil {
		return hypervisor.FS9P
	}
	return hypervisor.FSVirtio
}

// agentParams are what the agent reads from the kernel command line: the
// only channel that exists before it serves. Nothing from a pod reaches
// them; every value is a fixed word or a number.
func (b bootPlan) agentParams(c *vmconfig.Config) []string {
	p := []string{agentapi.ParamSecretPort + "=" + agentapi.SecretPortName}
	if b.vsock {
		p = append(p, agentapi.ParamTransport+"=vsock", agentapi.ParamVsockPort+"="+strconv.FormatUint(uint64(b.vsockPort), 10))
	} else {
		p = append(p, agentapi.ParamTransport+"=serial", agentapi.ParamPort+"="+agentapi.SerialPortName)
	}
	if c.Debug {
		p = append(p, agentapi.ParamDebug+"=1")
	}
	if c.DebugConsole {
		p = append(p, agentapi.ParamDebugConsole+"=1")
	}
	// The guest's hostname is the node's, which is what a container
	// without one of its own sees under runc. A name that is not one
	// word is left out rather than quoted.
	if host, err := os.Hostname(); err == nil && validHostname(host) {
		p = append(p, agentapi.ParamHostname+"="+host)
	}
	return p
}

// operatorParams are the configuration's kernel_params, one word each.
func operatorParams(h vmconfig.Hypervisor) []string {
	return vmconfig.KernelParams(h.KernelParams)
}

// validHostname is a hostname as RFC 1123 spells it.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
		default:
			return false
		}
	}
	return true
}

// handOver gives the guest its identity: the secret, fresh entropy and
// the clock (agentapi.BootRecord). QEMU holds the record until the agent
// opens its port. The host's end stays open until QEMU exits, so that the
// port never reads as closed before the agent has read it.
func (b bootPlan) handOver(v *hypervisor.VM) error {
	c, err := v.Port(agentapi.SecretPortName)
	if err != nil {
		return fmt.Errorf("secret port: %w", err)
	}
	entropy := make([]byte, agentapi.EntropySize)
	if _, err := rand.Read(entropy); err != nil {
		return fmt.Errorf("entropy for the guest: %w", err)
	}
	rec := agentapi.BootRecord{Secret: b.secret, Entropy: entropy, RealtimeNs: time.Now().UnixNano()}
	if _, err := c.Write(rec.Marshal()); err != nil {
		return fmt.Errorf("hand over the agent's secret: %w", err)
	}
	return nil
}

// dial connects to the agent's channel (the serial port's socket, or a
// vsock connection retried until the agent listens) and says hello with
// the VM's secret.
func (b bootPlan) dial(ctx context.Context, v *hypervisor.VM) (net.Conn, error) {
	var c net.Conn
	var err error
	if b.vsock {
		c, err = v.DialVsock(ctx, b.vsockPort)
	} else {
		c, err = v.Port(agentapi.SerialPortName)
	}
	if err != nil {
		return nil, fmt.Errorf("agent channel: %w", err)
	}
	if _, err := c.Write(append([]byte(agentapi.Hello), b.secret...)); err != nil {
		c.Close()
		return nil, fmt.Errorf("hello to the agent: %w", err)
	}
	return c, nil
}
