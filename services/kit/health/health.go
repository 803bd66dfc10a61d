// Package health is the small HTTP server every daemon runs: /healthz
// (the process is alive), /readyz (every readiness check passes, NATS
// connected among them) and whatever else the daemon mounts (/metrics, the
// ping API, /api/v1/metrics).
package health

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/taskyard/taskyard/services/kit/lifecycle"
)

// Check reports nil when a dependency is ready.
type Check func(ctx context.Context) error

// Server serves the health endpoints plus mounted handlers.
type Server struct {
	mux *http.ServeMux
	log *slog.Logger

	mu     sync.RWMutex
	checks map[string]Check
}

// New returns a server with /healthz and /readyz mounted.
func New(log *slog.Logger) *Server {
	s := &Server{mux: http.NewServeMux(), log: log, checks: map[string]Check{}}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s
}

// Handle mounts h on pattern (net/http ServeMux syntax).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddCheck registers a readiness check under name.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// Handler is the server's mux (for tests and for embedding).
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	s.mu.RLock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := s.checks
	s.mu.RUnlock()
	sort.Strings(names)
	out := map[string]string{}
	ready := true
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			out[n] = err.Error()
			ready = false
		} else {
			out[n] = "ok"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "checks": out})
}

// NATSCheck is ready while nc is connected.
func NATSCheck(nc *nats.Conn) Check {
	return func(context.Context) error {
		if nc.IsConnected() {
			return nil
		}
		return errors.New("nats " + nc.Status().String())
	}
}

// Run serves on ln until ctx is done, then shuts down within 5 s.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	s.log.Info("http listening", "addr", ln.Addr().String())
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	return lifecycle.ServeHTTP(ctx, srv, ln, 5*time.Second)
}
