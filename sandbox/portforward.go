package sandbox

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/containerd/log"

	"github.com/podvm/podvm/network"
	"github.com/podvm/podvm/vm"
)

// maxForwards bounds the port-forward connections a pod has open at once;
// more wait for one to end.
const maxForwards = 64

// servePortForward joins each connection containerd's CRI makes to
// localhost in the pod's network namespace (its port-forward, as for a
// runc pod) to one the agent makes to the same port on the guest's
// loopback. A pod without it still runs: port-forward then fails as it
// does for other VM runtimes, with "connection refused".
func (sb *Pod) servePortForward(ctx context.Context, netns string, g *vm.Guest) {
	l, err := network.ListenLoopback(netns)
	if err != nil {
		log.G(ctx).WithError(err).Warn("port-forward into this pod will not work")
		return
	}
	sb.netMu.Lock()
	sb.loopback = l
	sb.netMu.Unlock()
	go func() {
		slots := make(chan struct{}, maxForwards)
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case slots <- struct{}{}:
			case <-g.Done():
				c.Close()
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				forward(ctx, c, g)
			}()
		}
	}()
}

// forward copies both ways between a host connection and the guest port
// it asked for, until both sides are done or the VM goes; each side's end
// is passed on as a half close, as socat does for runc's pods.
func forward(ctx context.Context, c *net.TCPConn, g *vm.Guest) {
	defer c.Close()
	port := c.LocalAddr().(*net.TCPAddr).Port
	logger := log.G(ctx).WithField("port", port)
	gc, err := g.DialLoopback(ctx, uint16(port))
	if err != nil {
		logger.WithError(err).Warn("port-forward: no connection in the guest")
		return
	}
	defer gc.Close()
	logger.Debug("port-forward connection")
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(gc, c)
		if err == nil {
			err = gc.CloseWrite()
		}
		done <- err
	}()
	go func() {
		_, err := io.Copy(c, gc)
		if err == nil {
			err = c.CloseWrite()
		}
		done <- err
	}()
	for range 2 {
		var err error
		select {
		case err = <-done:
		case <-g.Done():
			err = vm.ErrStopped
		}
		if err != nil {
			if !errors.Is(err, vm.ErrStopped) && !errors.Is(err, net.ErrClosed) {
				logger.WithError(err).Debug("port-forward connection ended")
			}
			// Closing both ends the other copy.
			return
		}
	}
}
