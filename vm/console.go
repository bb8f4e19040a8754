package vm

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/log"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// ConsoleShell is a debug console shell to start in the guest, outside
// every container.
type ConsoleShell struct {
	// Busybox is the guest path of the busybox binary to run.
	Busybox  string
	Terminal bool
	Term     string
	Width    uint32
	Height   uint32
	Storages []Storage
}

// StartConsole starts a debug console shell and returns its ID, under
// which its streams are those of DebugConsole.
func (g *Guest) StartConsole(ctx context.Context, s ConsoleShell) (string, error) {
	var id string
	err := g.call(ctx, request, "start a debug console", func(ctx context.Context) error {
		r, err := g.debug.StartConsole(ctx, &agentapi.StartConsoleRequest{
			Busybox: s.Busybox, Terminal: s.Terminal, Term: s.Term, Width: s.Width, Height: s.Height, Storages: storages(s.Storages),
		})
		if err != nil {
			return err
		}
		if !validExecID(r.Id) {
			return fmt.Errorf("console ID %q: %w", Printable(r.Id, 80), ErrBadReply)
		}
		id = r.Id
		return nil
	})
	return id, err
}

// WaitConsole returns a console shell's exit status once it has exited.
func (g *Guest) WaitConsole(ctx context.Context, id string) (uint32, error) {
	var status uint32
	err := g.pollUntil(ctx, "wait for debug console "+id, func(ctx context.Context) error {
		r, err := g.debug.WaitConsole(ctx, &agentapi.ConsoleRequest{Id: id})
		if err != nil {
			return err
		}
		if r.ExitStatus > 255 {
			return fmt.Errorf("exit status %d: %w", r.ExitStatus, ErrBadReply)
		}
		status = r.ExitStatus
		return nil
	})
	return status, err
}

// CloseConsole kills what is left of a console shell's session.
func (g *Guest) CloseConsole(ctx context.Context, id string) error {
	return g.call(ctx, request, "close debug console "+id, func(ctx context.Context) error {
		_, err := g.debug.CloseConsole(ctx, &agentapi.ConsoleRequest{Id: id})
		return err
	})
}

// Console lines reach the log at this rate at most; a guest printing more
// only makes the host count what it dropped.
const (
	consoleBurst   = 1000
	consolePerSec  = 200
	consoleDropLog = 10 * time.Second
)

// limitConsole passes the lines of what (the guest's console, QEMU's
// stderr: both the guest can fill) on within a token bucket and reports
// now and then how many it dropped.
func limitConsole(what string, out func(string)) func(string) {
	var mu sync.Mutex
	tokens := float64(consoleBurst)
	last := time.Now()
	var dropped int
	var lastReport time.Time
	return func(line string) {
		mu.Lock()
		now := time.Now()
		tokens = min(consoleBurst, tokens+now.Sub(last).Seconds()*consolePerSec)
		last = now
		if tokens < 1 {
			dropped++
			if now.Sub(lastReport) >= consoleDropLog {
				n := dropped
				dropped, lastReport = 0, now
				mu.Unlock()
				log.L.Warnf("%s: %d lines dropped (more than %d a second)", what, n, consolePerSec)
				return
			}
			mu.Unlock()
			return
		}
		tokens--
		mu.Unlock()
		out(line)
	}
}
