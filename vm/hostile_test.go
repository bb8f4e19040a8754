package vm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// The tests here put an agent that lies, stalls or floods behind a real
// Guest, over a real ttrpc connection: what a compromised guest can send
// is exactly what reaches the host's code, whatever runs on the other end.

// fakeLife stands in for QEMU: Kill ends it and closes the channel, as
// QEMU's exit does.
type fakeLife struct {
	once sync.Once
	done chan struct{}
	conn net.Conn
}

func (f *fakeLife) Done() <-chan struct{} { return f.done }
func (f *fakeLife) Err() error            { return errors.New("killed by signal 9") }
func (f *fakeLife) Kill() {
	f.once.Do(func() {
		f.conn.Close()
		close(f.done)
	})
}

// hostile is an agent whose answers the test chooses. Calls it does not
// define are never made by the test that uses it.
type hostile struct {
	agentapi.AgentService
	agentapi.ContainersService
	agentapi.StdioService
	agentapi.ForwardService
	calls atomic.Int64

	health func(context.Context) (*agentapi.HealthResponse, error)
	signal func(context.Context) error
	create func() (*agentapi.CreateContainerResponse, error)
	wait   func(context.Context) (*agentapi.WaitProcessResponse, error)
	// attach answers AttachOutput; out is the guest's end of the output
	// port.
	attach func(r *agentapi.AttachOutputRequest, out net.Conn) error
	out    net.Conn
	// attachIn answers AttachInput; out is the guest's end of the stdio
	// port.
	attachIn  func(r *agentapi.AttachInputRequest, out net.Conn) error
	pids      func() (*agentapi.PidsResponse, error)
	waitOOM   func(context.Context) (*agentapi.OOMEvent, error)
	pauseFail error
	fwdRead   func() (*agentapi.ConnReadResponse, error)
	fwdWrite  func(*agentapi.ConnWriteRequest) (*agentapi.ConnWriteResponse, error)
}

func (h *hostile) Dial(context.Context, *agentapi.DialRequest) (*agentapi.DialResponse, error) {
	return &agentapi.DialResponse{Id: 1}, nil
}

func (h *hostile) Read(context.Context, *agentapi.ConnRequest) (*agentapi.ConnReadResponse, error) {
	h.calls.Add(1)
	return h.fwdRead()
}

func (h *hostile) Write(_ context.Context, r *agentapi.ConnWriteRequest) (*agentapi.ConnWriteResponse, error) {
	h.calls.Add(1)
	return h.fwdWrite(r)
}

func (h *hostile) Close(context.Context, *agentapi.ConnRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (h *hostile) Health(ctx context.Context, _ *agentapi.HealthRequest) (*agentapi.HealthResponse, error) {
	if h.health != nil {
		return h.health(ctx)
	}
	return &agentapi.HealthResponse{Status: agentapi.HealthResponse_SERVING, CpusOnline: 1}, nil
}

func (h *hostile) SignalProcess(ctx context.Context, _ *agentapi.SignalProcessRequest) (*emptypb.Empty, error) {
	h.calls.Add(1)
	return &emptypb.Empty{}, h.signal(ctx)
}

func (h *hostile) CreateContainer(context.Context, *agentapi.CreateContainerRequest) (*agentapi.CreateContainerResponse, error) {
	return h.create()
}

func (h *hostile) WaitProcess(ctx context.Context, _ *agentapi.ProcessRequest) (*agentapi.WaitProcessResponse, error) {
	h.calls.Add(1)
	return h.wait(ctx)
}

func (h *hostile) AttachOutput(_ context.Context, r *agentapi.AttachOutputRequest) (*emptypb.Empty, error) {
	h.calls.Add(1)
	return &emptypb.Empty{}, h.attach(r, h.out)
}

func (h *hostile) AttachInput(_ context.Context, r *agentapi.AttachInputRequest) (*emptypb.Empty, error) {
	h.calls.Add(1)
	return &emptypb.Empty{}, h.attachIn(r, h.out)
}

func (h *hostile) Pids(context.Context, *agentapi.ContainerRequest) (*agentapi.PidsResponse, error) {
	return h.pids()
}

func (h *hostile) WaitOOM(ctx context.Context, _ *emptypb.Empty) (*agentapi.OOMEvent, error) {
	h.calls.Add(1)
	return h.waitOOM(ctx)
}

func (h *hostile) PauseContainer(context.Context, *agentapi.ContainerRequest) (*emptypb.Empty, error) {
	return nil, h.pauseFail
}

// hostileGuest connects a Guest to h over a socket pair, with short
// timeouts so that the tests run fast.
func hostileGuest(t *testing.T, h *hostile) *Guest {
	t.Helper()
	host, guest := socketPair(t)
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterAgentService(srv, h)
	agentapi.RegisterContainersService(srv, h)
	agentapi.RegisterStdioService(srv, h)
	agentapi.RegisterForwardService(srv, h)
	l := &oneConn{conn: guest, closed: make(chan struct{})}
	go srv.Serve(context.Background(), l)
	outHost, outGuest := socketPair(t)
	h.out = outGuest
	life := &fakeLife{done: make(chan struct{}), conn: host}
	g := &Guest{ID: "hostile", life: life, requestTimeout: 20 * time.Second, aliveTimeout: time.Second, shutdownTimeout: time.Second}
	g.out = newStdioPort(outHost)
	g.attach(ttrpc.NewClient(host))
	go g.watchdog()
	t.Cleanup(func() {
		life.Kill()
		srv.Close()
		guest.Close()
		g.out.Close()
		outGuest.Close()
	})
	return g
}

// socketPair is a connected pair of stream sockets.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := fileConn(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := fileConn(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	return net.FileConn(f)
}

// oneConn is a listener that hands out one connection.
type oneConn struct {
	conn   net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.conn.LocalAddr() }

// A guest that stops answering is killed from the host within the
// liveness timeout of a slow call, and the call fails with ErrStopped
// instead of hanging: containerd's Kill returns, the pod can go.
func TestHostileStuckAgent(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	h := &hostile{
		health: func(ctx context.Context) (*agentapi.HealthResponse, error) { <-stuck; return nil, ctx.Err() },
		signal: func(ctx context.Context) error { <-stuck; return ctx.Err() },
	}
	g := hostileGuest(t, h)
	start := time.Now()
	err := g.Signal(context.Background(), "c1", "", 15, false)
	took := time.Since(start)
	if !errors.Is(err, ErrStopped) || !errdefs.IsUnavailable(err) {
		t.Fatalf("Signal to a stuck guest: %v, want ErrStopped (Unavailable)", err)
	}
	if !strings.Contains(err.Error(), "did not answer a liveness check") {
		t.Errorf("error does not say why the VM was killed: %v", err)
	}
	// slowCall (2 s) before the probe, the liveness timeout (1 s), a tick.
	if took > 5*time.Second {
		t.Errorf("a stuck guest held the call for %v", took)
	}
	if g.Alive() {
		t.Error("the guest is still considered alive")
	}
	// Every later call fails at once.
	start = time.Now()
	if _, err := g.Wait(context.Background(), "c1", ""); !errors.Is(err, ErrStopped) || time.Since(start) > 100*time.Millisecond {
		t.Errorf("Wait after the kill: %v after %v", err, time.Since(start))
	}
}

// A guest that is slow but alive is left alone: a request may take longer
// than the liveness check as long as Health answers.
func TestHostileSlowButAlive(t *testing.T) {
	h := &hostile{signal: func(ctx context.Context) error {
		select {
		case <-time.After(4 * time.Second):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	g := hostileGuest(t, h)
	if err := g.Signal(context.Background(), "c1", "", 15, false); err != nil {
		t.Fatalf("slow Signal: %v", err)
	}
	if !g.Alive() {
		t.Error("a slow but answering guest was killed")
	}
}

// Endless empty answers to WaitProcess and WaitOOM, an output stream that
// never sends and a stdin stream never credited must not make the host
// spin.
func TestHostileEmptyAnswers(t *testing.T) {
	h := &hostile{
		attach: func(*agentapi.AttachOutputRequest, net.Conn) error { return nil },
		wait: func(context.Context) (*agentapi.WaitProcessResponse, error) {
			return nil, status.Error(codes.DeadlineExceeded, "nothing yet")
		},
		waitOOM: func(context.Context) (*agentapi.OOMEvent, error) {
			return nil, status.Error(codes.DeadlineExceeded, "nothing yet")
		},
		attachIn: func(r *agentapi.AttachInputRequest, out net.Conn) error {
			// Drain the port, credit nothing.
			go io.Copy(io.Discard, out)
			return nil
		},
		fwdRead: func() (*agentapi.ConnReadResponse, error) { return &agentapi.ConnReadResponse{}, nil },
		fwdWrite: func(*agentapi.ConnWriteRequest) (*agentapi.ConnWriteResponse, error) {
			return &agentapi.ConnWriteResponse{}, nil
		},
	}
	g := hostileGuest(t, h)
	forwardConn := func(ctx context.Context) *Conn {
		c, err := g.DialLoopback(ctx, 80)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// Its calls end with the caller's context, as a closed
		// connection's do.
		go func() { <-ctx.Done(); c.cancel() }()
		return c
	}
	for _, tt := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"output", func(ctx context.Context) error { return g.CopyOutput(ctx, "c1", "", Stdout, &bytes.Buffer{}) }},
		{"WaitProcess", func(ctx context.Context) error { _, err := g.Wait(ctx, "c1", ""); return err }},
		{"WaitOOM", func(ctx context.Context) error { _, err := g.WaitOOM(ctx); return err }},
		{"stdin", func(ctx context.Context) error {
			return g.CopyInput(ctx, "c1", "", bytes.NewReader(make([]byte, 2*inputWindow)))
		}},
		{"forwarded Read", func(ctx context.Context) error { _, err := forwardConn(ctx).Read(make([]byte, 10)); return err }},
		{"forwarded Write", func(ctx context.Context) error { _, err := forwardConn(ctx).Write([]byte("x")); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h.calls.Store(0)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			err := tt.call(ctx)
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Errorf("ended with %v, want the caller's deadline", err)
			}
			// Backing off from 10 ms to 1 s: about ten calls in 3 s,
			// where a spinning loop makes tens of thousands.
			if n := h.calls.Load(); n > 20 {
				t.Errorf("%d calls in 3 s: the host spins on empty answers", n)
			}
		})
	}
}

// Answers that cannot be true are errors naming what was wrong, never
// used.
func TestHostileReplies(t *testing.T) {
	evil := strings.Repeat("\x1b[31mred\x00", 1<<16)
	h := &hostile{
		create: func() (*agentapi.CreateContainerResponse, error) {
			return &agentapi.CreateContainerResponse{Pid: 1 << 30}, nil
		},
		wait: func(context.Context) (*agentapi.WaitProcessResponse, error) {
			return &agentapi.WaitProcessResponse{ExitStatus: 1000}, nil
		},
		pids: func() (*agentapi.PidsResponse, error) {
			return &agentapi.PidsResponse{Processes: []*agentapi.ProcessInfo{
				{Pid: 7, ExecId: "e1"}, {Pid: 0}, {Pid: 1 << 30}, {Pid: 8, ExecId: "../../etc/passwd"},
			}}, nil
		},
		waitOOM: func(context.Context) (*agentapi.OOMEvent, error) {
			return &agentapi.OOMEvent{ContainerId: "../x,y"}, nil
		},
		health: func(context.Context) (*agentapi.HealthResponse, error) {
			return &agentapi.HealthResponse{CpusOnline: 100000}, nil
		},
		pauseFail: status.Error(codes.NotFound, evil),
		fwdRead: func() (*agentapi.ConnReadResponse, error) {
			return &agentapi.ConnReadResponse{Data: make([]byte, 2<<20)}, nil
		},
		fwdWrite: func(r *agentapi.ConnWriteRequest) (*agentapi.ConnWriteResponse, error) {
			return &agentapi.ConnWriteResponse{Written: uint32(len(r.Data)) + 7}, nil
		},
	}
	g := hostileGuest(t, h)
	ctx := context.Background()
	bad := func(what string, err error, want string) {
		t.Helper()
		if !errors.Is(err, ErrBadReply) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrBadReply naming %q", what, err, want)
		}
	}
	_, err := g.CreateContainer(ctx, Container{ID: "c1"})
	bad("PID out of range", err, "PID 1073741824")
	_, err = g.Wait(ctx, "c1", "")
	bad("exit status out of range", err, "exit status 1000")
	_, err = g.WaitOOM(ctx)
	bad("OOM of a malformed ID", err, `"../x,y"`)
	conn, err := g.DialLoopback(ctx, 80)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Read(make([]byte, 10))
	bad("more forwarded data than a chunk", err, "2097152 bytes")
	_, err = conn.Write([]byte("abc"))
	bad("more forwarded than sent", err, "wrote 10 of 3")
	conn.Close()
	_, err = g.Health(ctx)
	bad("impossible health", err, "health")

	procs, err := g.Pids(ctx, "c1")
	if err != nil || len(procs) != 2 || procs[0] != (ProcessInfo{Pid: 7, ExecID: "e1"}) || procs[1] != (ProcessInfo{Pid: 8}) {
		t.Errorf("Pids kept %+v, %v; want the two true entries, the bad exec ID dropped", procs, err)
	}

	// A 640 KiB error message full of escapes reaches containerd bounded
	// and printable, and keeps its kind.
	err = g.Pause(ctx, "c1")
	if !errdefs.IsNotFound(err) {
		t.Errorf("error kind lost: %v", err)
	}
	if msg := err.Error(); len(msg) > maxMessage+200 || strings.ContainsAny(msg, "\x1b\x00") {
		t.Errorf("guest's error message passed on unbounded or raw (%d bytes): %q", len(msg), msg[:min(len(msg), 200)])
	}
}

// A guest that never stops writing a console line, or writes thousands a
// second, costs bounded memory and a bounded log.
func TestConsoleFlood(t *testing.T) {
	var n int
	out := limitConsole("guest console", func(string) { n++ })
	for i := 0; i < 100000; i++ {
		out("spam")
	}
	if n > consoleBurst+consolePerSec {
		t.Errorf("%d of 100000 lines passed at once; the bound is a burst of %d", n, consoleBurst)
	}
	if n < consoleBurst {
		t.Errorf("only %d lines passed; a burst of %d should", n, consoleBurst)
	}
}

// What a guest sends on the stdio port is checked against what the host
// asked for: each broken rule ends the copy with ErrBadReply naming it,
// and the host never holds more than the stream's window.
func TestHostileOutput(t *testing.T) {
	for _, tt := range []struct {
		name string
		send func(r *agentapi.AttachOutputRequest) []byte
		want string
	}{
		{"a stream the host never opened", func(r *agentapi.AttachOutputRequest) []byte {
			return append(frame(agentapi.FrameData, r.Id+1, 3), "abc"...)
		}, "never opened"},
		{"beyond the window", func(r *agentapi.AttachOutputRequest) []byte {
			// Full frames up to the window, then one byte more: the
			// host holds the window's worth (nobody writes it out)
			// and refuses the rest.
			var b []byte
			chunk := make([]byte, agentapi.MaxFrameData)
			for sent := uint32(0); sent < r.Window; sent += agentapi.MaxFrameData {
				b = append(append(b, frame(agentapi.FrameData, r.Id, agentapi.MaxFrameData)...), chunk...)
			}
			return append(append(b, frame(agentapi.FrameData, r.Id, 1)...), 'x')
		}, "had room for 0"},
		{"a frame longer than allowed", func(r *agentapi.AttachOutputRequest) []byte {
			return frame(agentapi.FrameData, r.Id, 1<<31)
		}, "2147483648 bytes"},
		{"a credit from the guest", func(r *agentapi.AttachOutputRequest) []byte {
			return frame(agentapi.FrameCredit, r.Id, 1<<30)
		}, "credit frame"},
		{"bad padding", func(r *agentapi.AttachOutputRequest) []byte {
			b := frame(agentapi.FrameData, r.Id, 1)
			b[2] = 7
			return b
		}, "padding"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &hostile{attach: func(r *agentapi.AttachOutputRequest, out net.Conn) error {
				go out.Write(tt.send(r))
				return nil
			}}
			g := hostileGuest(t, h)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// A writer that takes nothing until the port stops:
			// nothing is credited meanwhile.
			w := writerFunc(func(b []byte) (int, error) {
				select {
				case <-g.out.done:
				case <-ctx.Done():
				}
				return len(b), nil
			})
			err := g.CopyOutput(ctx, "c1", "", Stdout, w)
			if !errors.Is(err, ErrBadReply) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("copy ended with %v, want ErrBadReply naming %q", err, tt.want)
			}
		})
	}
}

// The guest's credits for stdin are checked too: never more than it was
// sent, never data on a stream the host writes.
func TestHostileInput(t *testing.T) {
	for _, tt := range []struct {
		name string
		send func(r *agentapi.AttachInputRequest) []byte
		want string
	}{
		{"a credit for more than was sent", func(r *agentapi.AttachInputRequest) []byte {
			return frame(agentapi.FrameCredit, r.Id, 1<<30)
		}, "1073741824 bytes for stream"},
		{"data on stdin", func(r *agentapi.AttachInputRequest) []byte {
			return append(frame(agentapi.FrameData, r.Id, 1), 'x')
		}, "which is stdin"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &hostile{attachIn: func(r *agentapi.AttachInputRequest, out net.Conn) error {
				go io.Copy(io.Discard, out)
				go out.Write(tt.send(r))
				return nil
			}}
			g := hostileGuest(t, h)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// More than the window: the copy waits for credits, and
			// gets the guest's lie instead.
			err := g.CopyInput(ctx, "c1", "", bytes.NewReader(make([]byte, 2*inputWindow)))
			if !errors.Is(err, ErrBadReply) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("copy ended with %v, want ErrBadReply naming %q", err, tt.want)
			}
		})
	}
}

// frame is a frame header as a guest would send it.
func frame(kind agentapi.FrameKind, id, n uint32) []byte {
	return agentapi.FrameHeader{Kind: kind, Stream: id, Len: n}.Marshal(nil)
}
