package vm

import (
	"context"
	"errors"
	"fmt"
	"io"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// Stream is a process's output stream.
type Stream int

const (
	Stdout Stream = iota
	Stderr
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

func (s Stream) proto() agentapi.AttachOutputRequest_Stream {
	if s == Stderr {
		return agentapi.AttachOutputRequest_STDERR
	}
	return agentapi.AttachOutputRequest_STDOUT
}

// DebugConsole is the container ID under which the debug console's shells
// have their streams (CopyOutput, WriteStdin, CloseStdin, ResizePty); the
// exec ID is the console's.
const DebugConsole = agentapi.DebugConsoleID

// CopyOutput copies a process's stream from the guest to w until the
// stream ends, the VM goes or ctx ends. The output arrives on the output
// port (no call per chunk); the guest sends more as w takes it, so a slow
// writer paces the process without holding up other streams. A failing
// writer does not stop the copy: the rest is discarded, so that the
// process never blocks on a full pipe.
func (g *Guest) CopyOutput(ctx context.Context, containerID, execID string, s Stream, w io.Writer) error {
	what := "the " + s.String() + " of " + processName(containerID, execID)
	if g.out == nil {
		return fmt.Errorf("copy %s: the VM has no output port", what)
	}
	id, st, err := g.out.open()
	if err != nil {
		return g.outputErr(what, err)
	}
	defer g.out.close(id)
	err = g.call(ctx, request, "attach to "+what, func(ctx context.Context) error {
		_, err := g.stdio.AttachOutput(ctx, &agentapi.AttachOutputRequest{
			ContainerId: containerID, ExecId: execID, Stream: s.proto(), Id: id, Window: outputWindow,
		})
		return err
	})
	if err != nil {
		return err
	}
	var werr error
	for {
		chunk, ended, err := g.out.next(st, ctx.Done())
		if errors.Is(err, errCanceled) {
			err = ctx.Err()
		}
		if err != nil {
			return errors.Join(g.outputErr(what, err), werr)
		}
		if ended {
			return werr
		}
		if werr == nil {
			if _, werr = w.Write(chunk); werr != nil {
				werr = fmt.Errorf("write %v: %w", s, werr)
			}
		}
		g.out.credit(id, len(chunk))
	}
}

// outputErr says why output stopped: the VM's end, if that was it.
func (g *Guest) outputErr(what string, err error) error {
	if gone := g.gone(); gone != nil && !errors.Is(err, ErrBadReply) {
		return gone
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("copy %s: %w", what, err)
}

// WriteStdin writes data to a process's stdin. The agent writes what the
// process takes before the poll's deadline; the rest is sent again, so a
// process that does not read its input holds up only this call.
func (g *Guest) WriteStdin(ctx context.Context, containerID, execID string, data []byte) error {
	_, err := g.writeAll(ctx, "write the stdin of "+processName(containerID, execID), data, len(data), func(ctx context.Context, chunk []byte) (uint32, error) {
		r, err := g.stdio.WriteStdin(ctx, &agentapi.WriteStdinRequest{ContainerId: containerID, ExecId: execID, Data: chunk})
		if err != nil {
			return 0, err
		}
		return r.Written, nil
	})
	return err
}

// writeAll sends data in chunks of at most max bytes with write, which
// says how much the guest took before its poll's deadline; the rest is
// sent again, after a pause when nothing was taken. It returns how much
// was taken.
func (g *Guest) writeAll(ctx context.Context, what string, data []byte, max int, write func(context.Context, []byte) (uint32, error)) (int, error) {
	var pace pacer
	done := 0
	for done < len(data) {
		chunk := data[done:min(len(data), done+max)]
		var n uint32
		err := g.call(ctx, poll, what, func(ctx context.Context) error {
			written, err := write(ctx, chunk)
			if err != nil {
				return err
			}
			if int64(written) > int64(len(chunk)) {
				return fmt.Errorf("wrote %d of %d bytes: %w", written, len(chunk), ErrBadReply)
			}
			n = written
			return nil
		})
		if err != nil && !notYet(err) {
			return done, err
		}
		done += int(n)
		if n == 0 {
			pace.wait(ctx, g.life.Done())
		} else {
			pace.reset()
		}
	}
	return done, nil
}

// CloseStdin delivers EOF to a process's stdin.
func (g *Guest) CloseStdin(ctx context.Context, containerID, execID string) error {
	return g.call(ctx, request, "close the stdin of "+processName(containerID, execID), func(ctx context.Context) error {
		_, err := g.stdio.CloseStdin(ctx, &agentapi.ProcessRequest{ContainerId: containerID, ExecId: execID})
		return err
	})
}
