package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// How long calls may take. A request is answered at once by a healthy
// agent, or after work it starts at once (creating a container); a poll
// waits for something to happen (a process to exit, output, an OOM kill)
// and the agent answers "nothing yet" shortly before its deadline.
const (
	// slowCall is how long a request may be outstanding before the
	// watchdog checks that the agent still answers at all.
	slowCall = 2 * time.Second
	// pollWindow is the deadline of one poll.
	pollWindow = 30 * time.Second
	// maxMessage bounds what of a guest's error message reaches a log or
	// containerd.
	maxMessage = 512
)

type callKind int

const (
	request callKind = iota
	poll
)

// ErrStopped is what every call returns once the VM is gone, with its
// processes: it exited, was stopped, or was killed because its agent
// stopped answering. It is also errdefs.ErrUnavailable.
var ErrStopped = errors.New("VM stopped")

// StoppedError says why a VM is gone.
type StoppedError struct {
	ID     string
	Reason error
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("the VM of sandbox %s is gone: %v", e.ID, e.Reason)
}

func (e *StoppedError) Unwrap() error { return e.Reason }

func (e *StoppedError) Is(target error) bool {
	return target == ErrStopped || target == errdefs.ErrUnavailable
}

// ErrBadReply marks an answer from the guest that cannot be true (a PID
// out of range, more data than asked for): a broken or hostile agent.
var ErrBadReply = errors.New("the guest agent answered nonsense")

// call makes one call to the agent with a deadline. Requests are watched:
// one outstanding for long makes the watchdog check the agent's liveness.
func (g *Guest) call(ctx context.Context, kind callKind, what string, fn func(context.Context) error) error {
	if err := g.gone(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	timeout := g.requestTimeout
	if kind == poll {
		timeout = pollWindow
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if kind == request {
		defer g.watch.start()()
	}
	err := fn(cctx)
	if err == nil {
		return nil
	}
	if gone := g.gone(); gone != nil {
		return fmt.Errorf("%s: %w", what, gone)
	}
	switch {
	case ctx.Err() != nil:
		// The caller gave up (containerd cancelled the request).
		return fmt.Errorf("%s: %w", what, ctx.Err())
	case cctx.Err() != nil:
		// The deadline passed without an answer: is anybody there?
		go g.probe()
		if kind == poll {
			return fmt.Errorf("%s: %w", what, errNotYet)
		}
		return fmt.Errorf("%s: the guest agent did not answer within %v (timeouts.request): %w", what, timeout, context.DeadlineExceeded)
	case isClosed(err):
		// The channel closed under the call: QEMU is exiting, and the
		// wait for that is short.
		select {
		case <-g.life.Done():
		case <-time.After(time.Second):
		}
		if gone := g.gone(); gone != nil {
			return fmt.Errorf("%s: %w", what, gone)
		}
		return fmt.Errorf("%s: the agent channel closed: %w", what, errdefs.ErrUnavailable)
	case kind == poll && status.Code(err) == codes.DeadlineExceeded:
		// The agent's "nothing yet".
		return fmt.Errorf("%s: %w", what, errNotYet)
	}
	return fmt.Errorf("%s: %w", what, fromAgent(err))
}

// pollUntil repeats a poll until it brings news (fn returns nil) or fails;
// answers without news that come back early slow it down.
func (g *Guest) pollUntil(ctx context.Context, what string, fn func(context.Context) error) error {
	var pace pacer
	for {
		start := time.Now()
		err := g.call(ctx, poll, what, fn)
		if !notYet(err) {
			return err
		}
		if early(start) {
			pace.wait(ctx, g.life.Done())
		} else {
			pace.reset()
		}
	}
}

// errNotYet is a poll that ended without news: ask again.
var errNotYet = errors.New("nothing yet")

// notYet reports whether a poll's error only means "ask again": the agent
// answered that nothing happened before the deadline, or did not answer in
// time (which the watchdog looks into).
func notYet(err error) bool { return errors.Is(err, errNotYet) }

// fromAgent turns the agent's error status into containerd's error kinds,
// with the agent's message bounded and stripped of control characters.
func fromAgent(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := Printable(st.Message(), maxMessage)
	switch st.Code() {
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", msg, context.DeadlineExceeded)
	case codes.Canceled:
		return fmt.Errorf("%s: %w", msg, context.Canceled)
	}
	return errdefs.FromGRPC(status.Error(st.Code(), msg))
}

// Printable bounds a string from the guest to max bytes and replaces what
// a log or a terminal could misread: control characters and invalid UTF-8.
func Printable(s string, max int) string {
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || (r < 0x20 && r != '\t') || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// isClosed reports errors that mean the channel to the guest is gone.
func isClosed(err error) bool {
	return errors.Is(err, ttrpc.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// gone returns a StoppedError once the VM has exited or the host gave up
// on it, nil while it runs.
func (g *Guest) gone() error {
	if e := g.stopped.Load(); e != nil {
		return e
	}
	select {
	case <-g.life.Done():
		reason := g.life.Err()
		if reason == nil {
			reason = g.powerOffReason()
		}
		e := &StoppedError{ID: g.ID, Reason: reason}
		if !g.stopped.CompareAndSwap(nil, e) {
			return g.stopped.Load()
		}
		return e
	default:
		return nil
	}
}

// powerOffReason says why a guest ended on its own: a kernel panic (which
// reboots, and a reboot ends QEMU) or a power-off.
func (g *Guest) powerOffReason() error {
	if g.VM != nil {
		for _, l := range g.VM.ConsoleTail() {
			if i := strings.Index(l, "Kernel panic"); i >= 0 {
				return errors.New("the guest kernel panicked: " + l[i:])
			}
		}
	}
	return errors.New("the guest powered off")
}

// giveUp kills the VM from the host: every call in flight fails, every
// later one too, and the caller reports the guest's processes exited.
func (g *Guest) giveUp(reason error) {
	if g.stopped.CompareAndSwap(nil, &StoppedError{ID: g.ID, Reason: reason}) {
		log.L.WithField("vm", g.ID).WithError(reason).Error("killing the VM from the host; its processes are reported killed")
	}
	g.life.Kill()
}

// calls tracks the requests in flight, for the watchdog.
type calls struct {
	mu    sync.Mutex
	next  uint64
	since map[uint64]time.Time
}

// start records a request; the function it returns ends it.
func (c *calls) start() func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since == nil {
		c.since = map[uint64]time.Time{}
	}
	c.next++
	id := c.next
	c.since[id] = time.Now()
	return func() {
		c.mu.Lock()
		delete(c.since, id)
		c.mu.Unlock()
	}
}

// oldest is how long the oldest request has been in flight (0: none).
func (c *calls) oldest() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var d time.Duration
	for _, t := range c.since {
		d = max(d, time.Since(t))
	}
	return d
}

// watchdog checks the agent's liveness whenever a request has been in
// flight for long, until the VM is gone.
func (g *Guest) watchdog() {
	t := time.NewTicker(slowCall / 2)
	defer t.Stop()
	for {
		select {
		case <-g.life.Done():
			return
		case <-t.C:
			if g.watch.oldest() >= slowCall {
				g.probe()
			}
		}
	}
}

// probe asks the agent for its health; one that does not answer within
// the liveness timeout has its VM killed. Only one probe runs at a time.
func (g *Guest) probe() {
	if !g.probing.CompareAndSwap(false, true) {
		return
	}
	defer g.probing.Store(false)
	if g.gone() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.aliveTimeout)
	defer cancel()
	_, err := g.agent.Health(ctx, &agentapi.HealthRequest{})
	if err == nil || g.gone() != nil {
		return
	}
	if ctx.Err() == nil && !isClosed(err) {
		// It answered, if only with an error: it is alive.
		return
	}
	g.giveUp(fmt.Errorf("its agent did not answer a liveness check within %v (timeouts.agent)", g.aliveTimeout))
}

// pacer slows a loop down while the guest answers without news: a healthy
// agent never does so quickly, a hostile one must not make the host spin.
type pacer struct{ delay time.Duration }

const (
	minPace = 10 * time.Millisecond
	maxPace = time.Second
)

// wait sleeps before the next empty-handed try, longer each time, or
// returns early when ctx ends or the VM goes.
func (p *pacer) wait(ctx context.Context, done <-chan struct{}) {
	p.delay = min(max(2*p.delay, minPace), maxPace)
	t := time.NewTimer(p.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-done:
	}
}

// reset is for when news came.
func (p *pacer) reset() { p.delay = 0 }
