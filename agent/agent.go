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
	prep := prepare(r)

	ctx, cancel := context.WithTimeout(context.Background(), portTimeout)
	l, err := authenticated(ctx, p, prep.done)
	cancel()
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return fmt.Errorf("ttrpc server: %w", err)
	}
	svc := &service{readyNs: bootTime(), shutdown: powerOff}
	agentapi.RegisterAgentService(srv, svc)
	cs := newContainerService(r, prep)
	agentapi.RegisterContainersService(srv, cs)
	agentapi.RegisterStdioService(srv, cs)
	agentapi.RegisterNetworkService(srv, &networkService{})
	agentapi.RegisterDebugService(srv, newDebugService(p.DebugConsole, r, cs))
	logf(levelInfo, "serving %s on %s (agent %s, kernel up %dms)", p.Transport, l.Addr(), version.Version, svc.readyNs/1e6)
	if err := srv.Serve(context.Background(), l); err != nil && err != ttrpc.ErrServerClosed {
		return fmt.Errorf("serve: %w", err)
	}
	// Shutdown closed the server; powerOff is already under way.
	select {}
}

// authenticated is the listener the agent serves on: the transport's, with
// every connection authenticated by the VM's secret. A VM that is to be a
// template says ready only once prepared is closed.
func authenticated(ctx context.Context, p Params, prepared <-chan struct{}) (net.Listener, error) {
	var secret []byte
	if p.SecretPort != "" {
		var err error
		if secret, err = readSecret(ctx, p.SecretPort, prepared); err != nil {
			return nil, err
		}
	} else if p.Transport == "vsock" {
		// Any host process can reach a vsock port: never without one.
		return nil, fmt.Errorf("the vsock transport needs %s on the kernel command line", agentapi.ParamSecretPort)
	}
	l, err := listen(ctx, p)
	if err != nil || secret == nil {
		return l, err
	}
	var peerOK func(net.Conn) error
	if p.Transport == "vsock" {
		peerOK = hostPeer
	}
	return newAuthListener(l, secret, peerOK), nil
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
