package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/podvm/podvm/unixsock"
)

// Server serves a shim's metrics on a unix socket.
type Server struct {
	path string
	srv  *http.Server
}

// Serve listens on the socket at path (replacing a stale one) and serves
// the registry's metrics at /metrics, to root only.
func (m *Shim) Serve(path string) (*Server, error) {
	os.Remove(path)
	l, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("metrics socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("metrics socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	s := &Server{path: path, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			// Nothing to report to: containerd does not read the
			// metrics, and the socket's absence says it.
			os.Remove(path)
		}
	}()
	return s, nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	err := s.srv.Close()
	os.Remove(s.path)
	return err
}
