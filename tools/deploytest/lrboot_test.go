package deploytest

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/config"
	logrouterapp "github.com/taskyard/taskyard/services/logrouter/app"
)

// TestLogrouterBootsFromItsTaskDefinition runs the logrouter with the
// EC2 DAEMON task definition's environment and the site logrouter.yml
// (listen addresses moved to free local ports, the spool to a temp dir)
// until /readyz answers, then stops it through its SIGTERM drain path.
func TestLogrouterBootsFromItsTaskDefinition(t *testing.T) {
	env := taskEnv(t, "deploy/ecs/logrouter/task-definition.json", "logrouter")
	for k, v := range env {
		if !strings.HasPrefix(k, "TASKYARD_") {
			t.Setenv(k, v) // what logrouter.yml expands
		}
	}
	data, err := os.ReadFile(env["TASKYARD_CONFIG"])
	require.NoError(t, err)
	text := strings.ReplaceAll(string(data), `":24224"`, `"127.0.0.1:0"`)
	text = strings.ReplaceAll(text, "/var/lib/taskyard/logrouter", t.TempDir())
	cfgFile := filepath.Join(t.TempDir(), "logrouter.yml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(text), 0o600))
	env["TASKYARD_CONFIG"] = cfgFile
	env["TASKYARD_HTTP_LISTEN"] = "127.0.0.1:0"

	fs := flag.NewFlagSet("logrouter", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := config.New(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	var cfg logrouterapp.Config
	cfg.Register(f)
	require.NoError(t, f.Parse(nil))
	require.NoError(t, cfg.Validate())

	ready := make(chan logrouterapp.Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- logrouterapp.Run(ctx, cfg, logrouterapp.Deps{
			Log:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
			Ready: func(a logrouterapp.Addrs) { ready <- a },
		})
	}()
	var addrs logrouterapp.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("logrouter stopped before it was ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("logrouter did not bind its listeners")
	}
	require.NotEmpty(t, addrs.Forward, "the forward input is configured")
	client := &http.Client{Timeout: time.Second}
	require.Eventually(t, func() bool {
		resp, err := client.Get(fmt.Sprintf("http://%s/readyz", addrs.HTTP))
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(40 * time.Second):
		t.Fatal("logrouter did not stop within its drain timeout")
	}
}
