package lifecycle_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/lifecycle"
)

func TestRunStopsAllOnFirstError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	stopped := make(chan struct{})
	err := lifecycle.Run(context.Background(),
		func(ctx context.Context) error { <-ctx.Done(); close(stopped); return ctx.Err() },
		func(context.Context) error { return boom },
	)
	require.ErrorIs(t, err, boom)
	<-stopped
}

func TestRunCleanStop(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := lifecycle.Run(ctx, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	require.NoError(t, err)
}

func TestServeHTTPGraceful(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		<-release
		_, _ = io.WriteString(w, "done")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- lifecycle.ServeHTTP(ctx, srv, ln, 5*time.Second) }()

	resp := make(chan string, 1)
	go func() {
		r, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			resp <- err.Error()
			return
		}
		b, _ := io.ReadAll(r.Body)
		resp <- string(b)
	}()
	time.Sleep(100 * time.Millisecond) // let the request reach the handler
	cancel()
	close(release)
	require.Equal(t, "done", <-resp, "in-flight request completes during shutdown")
	require.NoError(t, <-served)
}
