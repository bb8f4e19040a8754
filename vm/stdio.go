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
// have their streams (CopyOutput, CopyInput, CloseStdin, ResizePty); the
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
	id, st, err := g.attachStream(ctx, what, false, func(ctx context.Context, id uint32) error {
		_, err := g.stdio.AttachOutput(ctx, &agentapi.AttachOutputRequest{
			ContainerId: containerID, ExecId: execID, Stream: s.proto(), Id: id, Window: outputWindow,
		})
		return err
	})
	if err != nil {
		return err
	}
	defer g.out.close(id)
	var werr error
	for {
		chunk, ended, err := g.out.next(st, ctx.Done())
		if err != nil {
			return errors.Join(g.streamErr(ctx, what, err), werr)
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
		putPiece(chunk)
	}
}

// attachStream opens a stream on the stdio port and has the agent attach
// it (attach, a call with the request deadline); the caller closes it.
func (g *Guest) attachStream(ctx context.Context, what string, input bool, attach func(context.Context, uint32) error) (uint32, *portStream, error) {
	if g.out == nil {
		return 0, nil, fmt.Errorf("copy %s: the VM has no stdio port", what)
	}
	id, st, err := g.out.open(input)
	if err != nil {
		return 0, nil, g.streamErr(ctx, what, err)
	}
	err = g.call(ctx, request, "attach to "+what, func(ctx context.Context) error { return attach(ctx, id) })
	if err != nil {
		g.out.close(id)
		return 0, nil, err
	}
	return id, st, nil
}

// streamErr says why a stream's copy stopped: the VM's end, if that was
// it, or the caller's context.
func (g *Guest) streamErr(ctx context.Context, what string, err error) error {
	if errors.Is(err, errCanceled) {
		err = ctx.Err()
	}
	if gone := g.gone(); gone != nil && !errors.Is(err, ErrBadReply) {
		return gone
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("copy %s: %w", what, err)
}

// CopyInput copies r to a process's stdin until r ends (then the process
// gets EOF), the process takes no more, the VM goes or ctx ends (then its
// stdin stays open, as when its client goes away). Each read is sent as
// the guest makes room: the agent credits what the process took.
func (g *Guest) CopyInput(ctx context.Context, containerID, execID string, r io.Reader) error {
	what := "the stdin of " + processName(containerID, execID)
	id, st, err := g.attachStream(ctx, what, true, func(ctx context.Context, id uint32) error {
		_, err := g.stdio.AttachInput(ctx, &agentapi.AttachInputRequest{ContainerId: containerID, ExecId: execID, Id: id, Window: inputWindow})
		return err
	})
	if err != nil {
		return err
	}
	defer g.out.close(id)
	buf := make([]byte, stdinChunk)
	for {
		n, rerr := r.Read(buf)
		for data := buf[:n]; len(data) > 0; {
			k, err := g.out.send(id, st, data, ctx.Done())
			if err != nil {
				return g.streamErr(ctx, what, err)
			}
			data = data[k:]
		}
		switch {
		case errors.Is(rerr, io.EOF):
			if _, err := g.out.send(id, st, nil, ctx.Done()); err != nil {
				return g.streamErr(ctx, what, err)
			}
			return nil
		case rerr != nil:
			return rerr
		}
	}
}

// stdinChunk bounds one read of stdin: one frame.
const stdinChunk = 128 << 10

// CloseStdin delivers EOF to a process's stdin.
func (g *Guest) CloseStdin(ctx context.Context, containerID, execID string) error {
	return g.call(ctx, request, "close the stdin of "+processName(containerID, execID), func(ctx context.Context) error {
		_, err := g.stdio.CloseStdin(ctx, &agentapi.ProcessRequest{ContainerId: containerID, ExecId: execID})
		return err
	})
}
