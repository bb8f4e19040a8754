package agent

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	agentapi "github.com/podvm/podvm/api/agent/v1"
)

// cidConn is a connection from a given vsock peer.
type cidConn struct {
	net.Conn
	cid uint32
}

func (c cidConn) PeerCID() uint32 { return c.cid }

type cidListener struct {
	net.Listener
	cid uint32
}

func (l cidListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return cidConn{c, l.cid}, nil
}

// TestAuthListener plays clients against the agent's handshake: only a
// hello with the VM's secret, from the host, reaches the server; a client
// that says nothing does not hold up the others.
func TestAuthListener(t *testing.T) {
	defer func(d time.Duration) { helloTimeout = d }(helloTimeout)
	helloTimeout = 500 * time.Millisecond
	secret := bytes.Repeat([]byte{7}, agentapi.SecretSize)
	hello := append([]byte(agentapi.Hello), secret...)
	wrong := append([]byte(agentapi.Hello), bytes.Repeat([]byte{8}, agentapi.SecretSize)...)
	for _, tt := range []struct {
		name   string
		cid    uint32
		send   []byte
		served bool
	}{
		{"the host with the secret", 2, hello, true},
		{"the host with a wrong secret", 2, wrong, false},
		{"the host with a short hello", 2, hello[:20], false},
		{"no hello, ttrpc at once", 2, []byte("\x00\x00\x00\x10\x00\x00\x00\x01\x01\x00health..."), false},
		{"another guest process (CID 1) with the secret", 1, hello, false},
		{"another VM (CID 3) with the secret", 3, hello, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent.sock"))
			if err != nil {
				t.Fatal(err)
			}
			l := newAuthListener(cidListener{ul, tt.cid}, secret, hostPeer)
			defer l.Close()
			served := make(chan net.Conn, 1)
			go func() {
				if c, err := l.Accept(); err == nil {
					served <- c
				}
			}()
			// A client that connects and says nothing must not block
			// the one after it.
			idle, err := net.Dial("unix", ul.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			c, err := net.Dial("unix", ul.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tt.send)
			select {
			case s := <-served:
				defer s.Close()
				if !tt.served {
					t.Fatal("a connection that should be refused was served")
				}
				// The served stream starts right after the hello.
				c.Write([]byte("ttrpc"))
				b := make([]byte, 5)
				if _, err := io.ReadFull(s, b); err != nil || string(b) != "ttrpc" {
					t.Errorf("served stream: %q %v", b, err)
				}
			case <-time.After(time.Second):
				if tt.served {
					t.Fatal("the host's connection was not served")
				}
				// Refused: the agent closed it (a short hello once
				// its time is up).
				c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("refused connection: read %v, want it closed", err)
				}
			}
		})
	}
}
