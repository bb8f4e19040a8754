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

func (s Stream) proto() agentapi.ReadOutputRequest_Stream {
	if s == Stderr {
		return agentapi.ReadOutputRequest_STDERR
	}
	return agentapi.ReadOutputRequest_STDOUT
}

// DebugConsole is the container ID under which the debug console's shells
// have their streams (ReadOutput, WriteStdin, CloseStdin, ResizePty); the
// exec ID is the console's.
const DebugConsole = agentapi.DebugConsoleID

// maxChunk is the most output the agent sends in one answer (its buffer);
// a larger answer is a lie.
const maxChunk = 1 << 20

// readOutput fetches what the stream has now; it waits in the guest until
// there is something, the stream ends or the poll's deadline nears (an
// empty answer).
func (g *Guest) readOutput(ctx context.Context, containerID, execID string, s Stream) (data []byte, eof bool, err error) {
	err = g.call(ctx, poll, "read the "+s.String()+" of "+processName(containerID, execID), func(ctx context.Context) error {
		r, err := g.stdio.ReadOutput(ctx, &agentapi.ReadOutputRequest{ContainerId: containerID, ExecId: execID, Stream: s.proto()})
		if err != nil {
			return err
		}
		if len(r.Data) > maxChunk {
			return fmt.Errorf("%d bytes of output at once: %w", len(r.Data), ErrBadReply)
		}
		data, eof = r.Data, r.Eof
		return nil
	})
	if notYet(err) {
		return nil, false, nil
	}
	return data, eof, err
}

// CopyOutput copies a process's stream from the guest to w until the
// stream ends, the VM goes or ctx ends. One chunk is fetched while the
// previous one is written, so the guest round trip and the write overlap.
// A failing writer does not stop the copy: the rest is discarded, so that
// the process never blocks on a full pipe. Answers without data, which a
// healthy agent gives only when a poll times out, slow the loop down
// rather than spin it.
func (g *Guest) CopyOutput(ctx context.Context, containerID, execID string, s Stream, w io.Writer) error {
	chunks := make(chan []byte, 1)
	errc := make(chan error, 1)
	go func() {
		defer close(chunks)
		var pace pacer
		for {
			data, eof, err := g.readOutput(ctx, containerID, execID, s)
			if err != nil {
				errc <- err
				return
			}
			if len(data) > 0 {
				pace.reset()
				select {
				case chunks <- data:
				case <-ctx.Done():
					errc <- ctx.Err()
					return
				}
			} else if !eof {
				pace.wait(ctx, g.life.Done())
			}
			if eof {
				errc <- nil
				return
			}
		}
	}()
	var werr error
	for data := range chunks {
		if werr != nil {
			continue
		}
		if _, werr = w.Write(data); werr != nil {
			w = io.Discard
		}
	}
	err := <-errc
	if werr != nil {
		err = errors.Join(err, fmt.Errorf("write %v: %w", s, werr))
	}
	return err
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
