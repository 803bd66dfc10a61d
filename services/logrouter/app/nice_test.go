package app_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/logrouter/app"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
)

// TestOutputNiceAddsProcessors: with OutputNice the daemon gives every
// output a Go processor of its own while it runs (the outputs' threads
// may wait on the kernel while holding one), delivers as before, and
// hands GOMAXPROCS back to the runtime's default when it returns.
func TestOutputNiceAddsProcessors(t *testing.T) {
	// Not parallel: GOMAXPROCS is the process's.
	base := runtime.GOMAXPROCS(0)
	want := base + 2
	if !output.NiceSupported || os.Getenv("GOMAXPROCS") != "" {
		want = base
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "lr.yml")
	yaml := `inputs:
  forward: {listen: "127.0.0.1:0"}
outputs:
  - {name: file, type: file, file: {path: "{dir}/out.ndjson"}}
  - {name: discard, type: stdout}
spool: {dir: "{dir}/spool"}
`
	require.NoError(t, os.WriteFile(cfgPath, []byte(strings.ReplaceAll(yaml, "{dir}", dir)), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Config{ConfigFile: cfgPath, Instance: "t", HTTPListen: "127.0.0.1:0", DrainTimeout: 5 * time.Second, StatsInterval: time.Second, NoNATS: true, OutputNice: 5},
			app.Deps{Log: logging.New(io.Discard, 0, "logrouter"), Stdout: io.Discard, Ready: func(a app.Addrs) { ready <- a }})
	}()
	var addrs app.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("app.Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("logrouter did not start")
	}
	require.Equal(t, want, runtime.GOMAXPROCS(0))

	_, port, err := net.SplitHostPort(addrs.Forward)
	require.NoError(t, err)
	portN, err := strconv.Atoi(port)
	require.NoError(t, err)
	lg, err := fluent.New(fluent.Config{FluentHost: "127.0.0.1", FluentPort: portN, RequestAck: true, Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.NoError(t, lg.Post("app", map[string]string{"log": `{"level":"warn","msg":"hi"}`, "ecs_cluster": "c", "ecs_task_definition": "taskyard-nightly:1"}))
	require.NoError(t, lg.Close())
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "out.ndjson"))
		return strings.Contains(string(b), `"msg":"hi"`)
	}, 10*time.Second, 10*time.Millisecond)

	cancel()
	require.NoError(t, <-done)
	require.Equal(t, base, runtime.GOMAXPROCS(0), "GOMAXPROCS handed back")
}

func TestOutputNiceRange(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-1, 20} {
		err := app.Config{ConfigFile: "x", HTTPListen: ":0", DrainTimeout: time.Second, StatsInterval: time.Second, NoNATS: true, OutputNice: n}.Validate()
		require.ErrorContains(t, err, "output-nice: ")
		require.ErrorContains(t, err, "is not between 0 and 19")
	}
}
