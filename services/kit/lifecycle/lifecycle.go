// Package lifecycle runs a daemon's long-running parts as actors: each is a
// func(ctx) error that returns when ctx is cancelled; the first one to fail
// cancels the others, and Run returns that first error. HTTP servers are
// shut down gracefully on a fresh timeout context.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// Actor is a long-running part of a daemon.
type Actor func(ctx context.Context) error

// Run runs actors until ctx is cancelled or one of them fails. A clean stop
// (every actor returning nil or context.Canceled after ctx is done) returns
// nil.
func Run(ctx context.Context, actors ...Actor) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, a := range actors {
		g.Go(func() error { return a(gctx) })
	}
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// ServeHTTP serves srv on ln until ctx is done, then shuts it down within
// timeout (in-flight requests finish, new ones are refused).
func ServeHTTP(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down http server %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
