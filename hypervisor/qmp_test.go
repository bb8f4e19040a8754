package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"
)

// fakeQEMU speaks QMP's side of the protocol on one end of a pipe, enough to
// test the client's framing; the integration tests talk to real QEMU.
func fakeQEMU(t *testing.T, conn net.Conn, handle func(cmd string, args json.RawMessage, reply func(any))) {
	t.Helper()
	go func() {
		defer conn.Close()
		enc := json.NewEncoder(conn)
		_ = enc.Encode(map[string]any{"QMP": map[string]any{
			"version":      map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 22}, "package": "test"},
			"capabilities": []string{"oob"},
		}})
		dec := json.NewDecoder(bufio.NewReader(conn))
		for {
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
				ID        string          `json:"id"`
			}
			if err := dec.Decode(&req); err != nil {
				return
			}
			if req.Execute == "qmp_capabilities" {
				_ = enc.Encode(map[string]any{"return": map[string]any{}, "id": req.ID})
				continue
			}
			handle(req.Execute, req.Arguments, func(m any) {
				b, _ := json.Marshal(m)
				var obj map[string]any
				_ = json.Unmarshal(b, &obj)
				if _, isEvent := obj["event"]; !isEvent {
					obj["id"] = req.ID
				}
				_ = enc.Encode(obj)
			})
		}
	}()
}

func TestQMP(t *testing.T) {
	client, server := net.Pipe()
	fakeQEMU(t, server, func(cmd string, args json.RawMessage, reply func(any)) {
		switch cmd {
		case "query-status":
			// An event may arrive between a command and its answer.
			reply(map[string]any{"event": "STOP", "data": map[string]any{"reason": "test"}, "timestamp": map[string]int{"seconds": 1, "microseconds": 2}})
			reply(map[string]any{"return": map[string]any{"running": false, "status": "paused"}})
		case "echo":
			reply(map[string]any{"return": json.RawMessage(args)})
		case "quit":
			reply(map[string]any{"return": map[string]any{}})
			server.Close()
		default:
			reply(map[string]any{"error": map[string]string{"class": "CommandNotFound", "desc": "The command " + cmd + " has not been found"}})
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := NewQMP(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if v := q.Version(); v.String() != "7.2.22" || v.Package != "test" {
		t.Errorf("version = %v %q", v, v.Package)
	}
	st, err := q.QueryStatus(ctx)
	if err != nil || st.Running || st.Status != "paused" {
		t.Errorf("QueryStatus = %+v, %v", st, err)
	}
	select {
	case ev := <-q.Events():
		if ev.Name != "STOP" || ev.Timestamp.Seconds != 1 || string(ev.Data) != `{"reason":"test"}` {
			t.Errorf("event = %+v (data %s)", ev, ev.Data)
		}
	case <-time.After(time.Second):
		t.Error("no STOP event")
	}
	var echoed struct{ A int }
	if err := q.Execute(ctx, "echo", map[string]int{"a": 42}, &echoed); err != nil || echoed.A != 42 {
		t.Errorf("echo = %+v, %v", echoed, err)
	}
	err = q.Execute(ctx, "no-such-command", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "no-such-command" {
		t.Errorf("unknown command: err = %v", err)
	}
	if err := q.Quit(ctx); err != nil {
		t.Errorf("Quit = %v", err)
	}
	select {
	case <-q.Done():
	case <-time.After(time.Second):
		t.Fatal("connection not done after QEMU closed it")
	}
	if err := q.Execute(ctx, "query-status", nil, nil); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("after close: err = %v, want ErrQMPClosed", err)
	}
}

func TestQMPNotAServer(t *testing.T) {
	client, server := net.Pipe()
	go func() {
		server.Write([]byte(`{"hello": "world"}` + "\n"))
		server.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := NewQMP(ctx, client); err == nil {
		t.Fatal("NewQMP accepted a peer that is not QMP")
	}
}

func TestQMPGreetingTimeout(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewQMP(ctx, client); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
}
