package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrQMPClosed is returned for calls on a QMP connection that QEMU closed,
// usually because it exited.
var ErrQMPClosed = errors.New("qmp: connection closed (QEMU exited?)")

// QMP is a client of QEMU's machine protocol. Calls are serialised, as QEMU
// answers them in order; events arrive on Events.
type QMP struct {
	conn    net.Conn
	enc     *json.Encoder
	callMu  sync.Mutex // one command in flight
	mu      sync.Mutex
	pending map[string]chan qmpReply
	nextID  int
	closed  chan struct{}
	events  chan Event
	version QEMUVersion
}

// Event is an asynchronous QMP event such as SHUTDOWN or STOP.
type Event struct {
	Name      string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// QEMUVersion is the version QEMU announces in its greeting.
type QEMUVersion struct {
	Major, Minor, Micro int
	Package             string
}

func (v QEMUVersion) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// QMPError is an error QEMU returned for a command.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	ID     string          `json:"id"`
}

type qmpMessage struct {
	qmpReply
	Event string `json:"event"`
	QMP   *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
	} `json:"QMP"`
}

// NewQMP reads QEMU's greeting on conn and leaves capabilities negotiation
// mode, after which commands can be executed. It takes ownership of conn.
func NewQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	q := &QMP{
		conn:    conn,
		enc:     json.NewEncoder(conn),
		pending: make(map[string]chan qmpReply),
		closed:  make(chan struct{}),
		events:  make(chan Event, 64),
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	greeting := make(chan error, 1)
	go func() {
		var m qmpMessage
		if err := dec.Decode(&m); err != nil {
			greeting <- fmt.Errorf("qmp greeting: %w", err)
			return
		}
		if m.QMP == nil {
			greeting <- errors.New("qmp greeting: not a QMP server")
			return
		}
		v := m.QMP.Version
		q.version = QEMUVersion{v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, v.Package}
		greeting <- nil
	}()
	select {
	case err := <-greeting:
		if err != nil {
			conn.Close()
			return nil, err
		}
	case <-ctx.Done():
		conn.Close()
		<-greeting
		return nil, fmt.Errorf("qmp greeting: %w", ctx.Err())
	}
	go q.read(dec)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Version is the QEMU version from the greeting.
func (q *QMP) Version() QEMUVersion { return q.version }

// Events delivers QMP events. Events are dropped when nobody reads them.
func (q *QMP) Events() <-chan Event { return q.events }

// Done is closed when the connection ends.
func (q *QMP) Done() <-chan struct{} { return q.closed }

func (q *QMP) read(dec *json.Decoder) {
	defer func() {
		q.mu.Lock()
		close(q.closed)
		for id, c := range q.pending {
			close(c)
			delete(q.pending, id)
		}
		q.mu.Unlock()
		close(q.events)
	}()
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return
		}
		var m qmpMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			continue
		}
		if m.Event != "" {
			var ev Event
			_ = json.Unmarshal(raw, &ev)
			select {
			case q.events <- ev:
			default:
			}
			continue
		}
		q.mu.Lock()
		c, ok := q.pending[m.ID]
		delete(q.pending, m.ID)
		q.mu.Unlock()
		if ok {
			c <- m.qmpReply
		}
	}
}

// Execute runs one QMP command. args is marshalled as the command's
// arguments (nil for none); the command's return value is unmarshalled into
// result when it is not nil.
func (q *QMP) Execute(ctx context.Context, cmd string, args, result any) error {
	return q.execute(ctx, cmd, args, result, nil)
}

// ExecuteWithFile runs a command with a file descriptor attached (SCM_RIGHTS),
// as `getfd` and `add-fd` expect. The connection must be a unix socket.
func (q *QMP) ExecuteWithFile(ctx context.Context, cmd string, args, result any, f *os.File) error {
	return q.execute(ctx, cmd, args, result, f)
}

func (q *QMP) execute(ctx context.Context, cmd string, args, result any, f *os.File) error {
	q.callMu.Lock()
	defer q.callMu.Unlock()

	q.mu.Lock()
	select {
	case <-q.closed:
		q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, ErrQMPClosed)
	default:
	}
	q.nextID++
	id := strconv.Itoa(q.nextID)
	reply := make(chan qmpReply, 1)
	q.pending[id] = reply
	q.mu.Unlock()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{cmd, args, id}
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetWriteDeadline(dl)
		defer q.conn.SetWriteDeadline(time.Time{})
	}
	if err := q.send(req, f); err != nil {
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case r, ok := <-reply:
		if !ok {
			return fmt.Errorf("qmp %s: %w", cmd, ErrQMPClosed)
		}
		if r.Error != nil {
			r.Error.Command = cmd
			return r.Error
		}
		if result != nil && len(r.Return) > 0 {
			if err := json.Unmarshal(r.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

func (q *QMP) send(req any, f *os.File) error {
	if f == nil {
		return q.enc.Encode(req)
	}
	uc, ok := q.conn.(*net.UnixConn)
	if !ok {
		return errors.New("passing a file needs a unix socket")
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = uc.WriteMsgUnix(append(b, '\n'), unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	return werr
}

func (q *QMP) forget(id string) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

// Close ends the connection.
func (q *QMP) Close() error {
	return q.conn.Close()
}

// Status is QEMU's run state (query-status).
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// QueryStatus returns the VM's run state, such as "running", "paused" or
// "internal-error".
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Quit makes QEMU exit at once, without asking the guest.
func (q *QMP) Quit(ctx context.Context) error {
	err := q.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrQMPClosed) {
		// QEMU may close the socket before its reply is read.
		return nil
	}
	return err
}

// Stop pauses the guest's vCPUs.
func (q *QMP) Stop(ctx context.Context) error { return q.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest's vCPUs.
func (q *QMP) Cont(ctx context.Context) error { return q.Execute(ctx, "cont", nil, nil) }
