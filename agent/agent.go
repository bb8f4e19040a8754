// Package agent is podvm's guest side: PID 1 of the initramfs. It mounts
// what a Linux system needs, reaps orphans, and serves the host's ttrpc
// calls (api/agent/v1) on a virtio-serial port or vsock.
package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	agentapi "github.com/podvm/podvm/api/agent/v1"
	"github.com/podvm/podvm/version"
)

// portTimeout bounds the wait for the agent's port to appear. The host's
// boot timeout is what really limits a boot; this only keeps PID 1 from
// spinning forever on a guest that was started without the port.
const portTimeout = 60 * time.Second

// Main runs the agent as PID 1 and never returns: when serving ends, the
// guest powers off, since a guest without an agent is of no use to the host.
func Main() {
	defer recoverPanic("main")
	if err := run(); err != nil {
		logf(levelError, "%v", err)
	}
	powerOff(0)
	// Reboot failed: PID 1 must not exit (the kernel would panic), but
	// there is nothing left to do.
	select {}
}

func run() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("podvm-agent must run as PID 1 of the guest, not as pid %d", os.Getpid())
	}
	if err := remountRoot(); err != nil {
		return fmt.Errorf("re-root: %w", err)
	}
	if err := mountBase(); err != nil {
		return err
	}
	p := ParseCmdline(readCmdline())
	logDebug = p.Debug
	logf(levelDebug, "agent running at kernel +%dms", bootTime()/1e6)
	if p.Probe {
		fmt.Fprintln(os.Stderr, agentapi.ProbeMarker)
		return nil
	}
	if p.Hostname != "" {
		if err := unix.Sethostname([]byte(p.Hostname)); err != nil {
			logf(levelWarn, "set hostname %q: %v", p.Hostname, err)
		}
	}
	absorbSignals()
	setupLibcontainerLogs(p.Debug)
	if err := loopbackUp(); err != nil {
		logf(levelWarn, "loopback: %v", err)
	}
	r := newReaper()
	prep := newPrepared(r)
	// Made before the boot record: a template holds the server ready.
	identified := make(chan struct{})
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(afterIdentity(identified)))
	if err != nil {
		return fmt.Errorf("ttrpc server: %w", err)
	}
	svc := &service{shutdown: powerOff, answered: func() {
		// A cold boot's preparations follow its first answer.
		time.AfterFunc(prepareDelay, func() { prep.start(false) })
	}}
	agentapi.RegisterAgentService(srv, svc)
	out := newStdioPort(agentapi.StdioPortName)
	cs := newContainerService(r, prep, out)
	agentapi.RegisterContainersService(srv, cs)
	agentapi.RegisterStdioService(srv, cs)
	agentapi.RegisterNetworkService(srv, &networkService{})
	dbg := newDebugService(p.DebugConsole, r, cs)
	agentapi.RegisterDebugService(srv, dbg)
	svc.quiet = func() bool { return !dbg.used() && cs.emptied() }
	agentapi.RegisterForwardService(srv, newForwardService())

	ctx, cancel := context.WithTimeout(context.Background(), portTimeout)
	l, rec, err := authenticated(ctx, p, func() <-chan struct{} { return prep.start(true) }, func() {
		settle()
		warmUp(srv)
		// A template's VMs find the stdio port open.
		out.openNow()
	})
	cancel()
	if err != nil {
		return err
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), portTimeout)
		defer cancel()
		out.open(ctx)
	}()
	go func() {
		defer close(identified)
		if rec != nil {
			takeIdentity(*rec)
		}
	}()
	svc.readyNs.Store(bootTime())
	// Debug: under TCG every console line costs the guest's vCPU
	// milliseconds, and the host logs that the agent is ready anyway.
	logf(levelDebug, "serving %s on %s (agent %s, kernel up %dms)", p.Transport, l.Addr(), version.Version, svc.readyNs.Load()/1e6)
	if err := srv.Serve(context.Background(), l); err != nil && err != ttrpc.ErrServerClosed {
		return fmt.Errorf("serve: %w", err)
	}
	// Shutdown closed the server; powerOff is already under way.
	select {}
}

// authenticated is the listener the agent serves on: the transport's, with
// every connection authenticated by the VM's secret. A VM that is to be a
// template says ready only once prepare's channel is closed and it has run
// beforeSave.
func authenticated(ctx context.Context, p Params, prepare func() <-chan struct{}, beforeSave func()) (net.Listener, *agentapi.BootRecord, error) {
	var rec *agentapi.BootRecord
	var l net.Listener
	save := func() {
		beforeSave()
		if p.Transport != "serial" {
			return
		}
		// Taken now if it is there, so that a template's VMs skip the
		// search (tens of ms of sysfs under TCG); one that is not is
		// looked for after the record, where a VM says what is missing
		// (a template is not held up by it).
		if dev, ok := portNow(p.Port); ok {
			l = newSerialListener(dev)
		}
	}
	if p.SecretPort != "" {
		var err error
		if rec, err = readSecret(ctx, p.SecretPort, prepare, save); err != nil {
			return nil, nil, err
		}
	} else if p.Transport == "vsock" {
		// Any host process can reach a vsock port: never without one.
		return nil, nil, fmt.Errorf("the vsock transport needs %s on the kernel command line", agentapi.ParamSecretPort)
	}
	if l == nil {
		var err error
		if l, err = listen(ctx, p); err != nil {
			return nil, nil, err
		}
	}
	if rec == nil {
		return l, nil, nil
	}
	var peerOK func(net.Conn) error
	if p.Transport == "vsock" {
		peerOK = hostPeer
	}
	return newAuthListener(l, rec.Secret, peerOK), rec, nil
}

// absorbSignals catches the signals whose default action would end PID 1.
// Go turns an unhandled SIGTERM into exit(2), which would panic the guest
// kernel; handling (not ignoring) keeps children from inheriting SIG_IGN.
func absorbSignals() {
	c := make(chan os.Signal, 8)
	signal.Notify(c, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	go func() {
		for s := range c {
			logf(levelDebug, "ignored signal %v", s)
		}
	}()
}
