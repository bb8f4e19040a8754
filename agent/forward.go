package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// forwardService makes the connections a port-forward asks for on the
// guest's loopback, in the agent's network namespace: the pod's.
type forwardService struct {
	mu    sync.Mutex
	next  uint64
	conns map[uint64]*forwardConn
}

var _ agentapi.ForwardService = (*forwardService)(nil)

// forwardConn is one connection; reads and writes each go one at a time.
type forwardConn struct {
	conn    *net.TCPConn
	readMu  sync.Mutex
	writeMu sync.Mutex
	buf     []byte
}

const (
	// maxForwards bounds the connections open at once.
	maxForwards = 128
	// forwardChunk is the most a Read answers with.
	forwardChunk = 128 << 10
	dialTimeout  = 5 * time.Second
)

func newForwardService() *forwardService {
	return &forwardService{conns: map[uint64]*forwardConn{}}
}

func (f *forwardService) Dial(ctx context.Context, req *agentapi.DialRequest) (*agentapi.DialResponse, error) {
	if req.Port == 0 || req.Port > 65535 {
		return nil, status.Errorf(codes.InvalidArgument, "port %d is out of range", req.Port)
	}
	f.mu.Lock()
	full := len(f.conns) >= maxForwards
	f.mu.Unlock()
	if full {
		return nil, status.Errorf(codes.ResourceExhausted, "%d forwarded connections are open already", maxForwards)
	}
	port := strconv.Itoa(int(req.Port))
	d := net.Dialer{Timeout: dialTimeout}
	// As containerd does for a runc pod: IPv4 first, then IPv6, one after
	// the other.
	c, err4 := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", port))
	if err4 != nil {
		var err6 error
		if c, err6 = d.DialContext(ctx, "tcp6", net.JoinHostPort("::1", port)); err6 != nil {
			return nil, status.Errorf(codes.Unavailable, "connect to localhost:%s in the pod: IPv4: %v, IPv6: %v", port, err4, err6)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.conns) >= maxForwards {
		// Others were dialled meanwhile.
		c.Close()
		return nil, status.Errorf(codes.ResourceExhausted, "%d forwarded connections are open already", maxForwards)
	}
	f.next++
	f.conns[f.next] = &forwardConn{conn: c.(*net.TCPConn)}
	return &agentapi.DialResponse{Id: f.next}, nil
}

func (f *forwardService) get(id uint64) (*forwardConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.conns[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no forwarded connection %d", id)
	}
	return c, nil
}

// Read answers with what the connection has, once it has something, or
// "nothing yet" shortly before the caller's deadline.
func (f *forwardService) Read(ctx context.Context, req *agentapi.ConnRequest) (*agentapi.ConnReadResponse, error) {
	c, err := f.get(req.Id)
	if err != nil {
		return nil, err
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.buf == nil {
		c.buf = make([]byte, forwardChunk)
	}
	_ = c.conn.SetReadDeadline(answerBy(ctx))
	n, err := c.conn.Read(c.buf)
	resp := &agentapi.ConnReadResponse{Data: append([]byte(nil), c.buf[:n]...)}
	switch {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded):
		if n == 0 {
			return nil, notYet(ctx)
		}
	default:
		// EOF, or the peer reset: either way nothing more comes.
		resp.Eof = true
	}
	return resp, nil
}

// Write writes what the connection takes before the caller's deadline
// nears and says how much that was.
func (f *forwardService) Write(ctx context.Context, req *agentapi.ConnWriteRequest) (*agentapi.ConnWriteResponse, error) {
	c, err := f.get(req.Id)
	if err != nil {
		return nil, err
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(answerBy(ctx))
	n, err := c.conn.Write(req.Data)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, status.Errorf(codes.Aborted, "write to forwarded connection %d: %v", req.Id, err)
	}
	return &agentapi.ConnWriteResponse{Written: uint32(n)}, nil
}

func (f *forwardService) CloseWrite(ctx context.Context, req *agentapi.ConnRequest) (*emptypb.Empty, error) {
	c, err := f.get(req.Id)
	if err != nil {
		return nil, err
	}
	if err := c.conn.CloseWrite(); err != nil {
		return nil, status.Errorf(codes.Aborted, "close forwarded connection %d for writing: %v", req.Id, err)
	}
	return &emptypb.Empty{}, nil
}

func (f *forwardService) Close(ctx context.Context, req *agentapi.ConnRequest) (*emptypb.Empty, error) {
	f.mu.Lock()
	c, ok := f.conns[req.Id]
	delete(f.conns, req.Id)
	f.mu.Unlock()
	if ok {
		// Unblocks a Read or Write in progress.
		if err := c.conn.Close(); err != nil {
			return nil, status.Error(codes.Internal, fmt.Sprintf("close forwarded connection %d: %v", req.Id, err))
		}
	}
	return &emptypb.Empty{}, nil
}
