package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/logrouter/app"
)

func TestLogsTail(t *testing.T) {
	t.Parallel()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc := natsconn.Config{URL: srv.ClientURL(), Prefix: "taskyard", Replicas: 1}

	// A dev-mode logrouter with an HTTP NDJSON input to feed it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	cfg := app.DevConfig(nc, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", dir+"/logs", dir)
	ready := make(chan app.Addrs, 1)
	lrDone := make(chan error, 1)
	go func() {
		lrDone <- app.Run(ctx, cfg, app.Deps{Log: logging.Discard(), Stdout: &syncBuffer{}, Ready: func(a app.Addrs) { ready <- a }})
	}()
	var addrs app.Addrs
	select {
	case addrs = <-ready:
	case err := <-lrDone:
		t.Fatal(err)
	}

	out, errOut := &syncBuffer{}, &syncBuffer{}
	cmd := newRootCmd(out, errOut)
	cmd.SetArgs([]string{"logs", "tail", "--service", "night*", "--level", "warn", "--json", "--nats-url", srv.ClientURL()})
	tailCtx, stopTail := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(tailCtx) }()
	require.Eventually(t, func() bool { return strings.Contains(errOut.String(), "tailing logs") }, 10*time.Second, 10*time.Millisecond)

	body := strings.Join([]string{
		`{"log":"{\"level\":\"error\",\"msg\":\"disk full\"}","cluster":"dev","service":"nightly","container":"main","task":"t1"}`,
		`{"log":"just info","level":"info","cluster":"dev","service":"nightly"}`,
		`{"log":"other service","level":"error","cluster":"dev","service":"billing"}`,
	}, "\n")
	resp, err := http.Post("http://"+addrs.HTTPInput+"/", "application/x-ndjson", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	require.Eventually(t, func() bool { return strings.Count(out.String(), "\n") >= 1 }, 10*time.Second, 10*time.Millisecond)
	stopTail()
	require.NoError(t, <-done)
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	var got []map[string]string
	for sc.Scan() {
		var m map[string]string
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		got = append(got, m)
	}
	require.Len(t, got, 1, "filtered by service glob and minimum level")
	require.Equal(t, "nightly", got[0]["service"])
	require.Equal(t, "error", got[0]["level"])
	require.Equal(t, "main", got[0]["container"])
	require.Contains(t, got[0]["log"], "disk full")

	_, errOut2, code := runCLI(t, ctx, "logs", "tail", "--level", "loud", "--nats-url", srv.ClientURL())
	require.Equal(t, 2, code)
	require.Contains(t, errOut2, `--level "loud"`)
	cancel()
	require.NoError(t, <-lrDone)
}
