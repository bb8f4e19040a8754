package vm

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// Conn is a TCP connection the agent made to a port on the guest's
// loopback, for a port-forward. Its reads and writes are calls to the
// agent, each under the usual deadlines; one Read and one Write may run at
// once.
type Conn struct {
	g      *Guest
	id     uint64
	what   string
	ctx    context.Context // ends at Close, ending calls in flight
	cancel context.CancelFunc
	once   sync.Once

	rest []byte // read from the guest, not yet returned
	eof  bool
}

// maxWrite bounds one write to the agent.
const maxWrite = 256 << 10

// maxChunk is the most data the agent sends in one answer (its buffer);
// a larger answer is a lie.
const maxChunk = 1 << 20

// DialLoopback connects to port on the guest's loopback (127.0.0.1, else
// ::1) in the pod's network namespace.
func (g *Guest) DialLoopback(ctx context.Context, port uint16) (*Conn, error) {
	what := fmt.Sprintf("connect to port %d in the guest", port)
	var id uint64
	err := g.call(ctx, request, what, func(ctx context.Context) error {
		r, err := g.forward.Dial(ctx, &agentapi.DialRequest{Port: uint32(port)})
		if err != nil {
			return err
		}
		id = r.Id
		return nil
	})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(context.Background())
	return &Conn{g: g, id: id, what: fmt.Sprintf("port %d in the guest", port), ctx: cctx, cancel: cancel}, nil
}

// Read returns what the guest side sent, waiting until there is some; io.EOF
// once it sends no more.
func (c *Conn) Read(p []byte) (int, error) {
	var pace pacer
	for len(c.rest) == 0 {
		if c.eof {
			return 0, io.EOF
		}
		start := time.Now()
		err := c.g.call(c.ctx, poll, "read from "+c.what, func(ctx context.Context) error {
			r, err := c.g.forward.Read(ctx, &agentapi.ConnRequest{Id: c.id})
			if err != nil {
				return err
			}
			if len(r.Data) > maxChunk {
				return fmt.Errorf("%d bytes at once: %w", len(r.Data), ErrBadReply)
			}
			c.rest, c.eof = r.Data, r.Eof
			return nil
		})
		switch {
		case err != nil && !notYet(err):
			return 0, err
		case len(c.rest) == 0 && !c.eof && early(start):
			// Nothing, and well before the poll's deadline: a healthy
			// agent does not answer so, so do not spin on it.
			pace.wait(c.ctx, c.g.life.Done())
		default:
			pace.reset()
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

// Write sends p to the guest side; what the guest does not take before a
// poll's deadline is sent again.
func (c *Conn) Write(p []byte) (int, error) {
	return c.g.writeAll(c.ctx, "write to "+c.what, p, maxWrite, func(ctx context.Context, chunk []byte) (uint32, error) {
		r, err := c.g.forward.Write(ctx, &agentapi.ConnWriteRequest{Id: c.id, Data: chunk})
		if err != nil {
			return 0, err
		}
		return r.Written, nil
	})
}

// CloseWrite tells the guest side that nothing more comes.
func (c *Conn) CloseWrite() error {
	return c.g.call(c.ctx, request, "close "+c.what+" for writing", func(ctx context.Context) error {
		_, err := c.g.forward.CloseWrite(ctx, &agentapi.ConnRequest{Id: c.id})
		return err
	})
}

// Close ends the connection in the guest; calls in flight return.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		c.cancel()
		err = c.g.call(context.Background(), request, "close "+c.what, func(ctx context.Context) error {
			_, err := c.g.forward.Close(ctx, &agentapi.ConnRequest{Id: c.id})
			return err
		})
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
