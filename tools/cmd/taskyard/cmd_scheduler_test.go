package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

// startScheduler boots an embedded NATS and the scheduler (exec runner,
// the example cluster profiles) and returns the NATS URL.
func startScheduler(t *testing.T) string {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	var cfg app.Config
	cfg.NATS = natsconn.Config{URL: srv.ClientURL(), Prefix: v1.DefaultPrefix, Replicas: 1}
	cfg.Runner = app.RunnerExec
	cfg.ClustersDir = "../../../examples/clusters"
	cfg.Instance = "cli-test"
	cfg.LeaseTTL = time.Second
	cfg.ReleaseLease = true
	cfg.KillGrace = time.Second
	cfg.LogLevel = "info"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, app.Deps{Log: logging.Discard(), Stdout: &syncBuffer{}}) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	require.Eventually(t, func() bool {
		_, err := nc.Request("taskyard.ctl.scheduler.list", nil, time.Second)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "scheduler answers")
	return srv.ClientURL()
}

func writeSchedule(t *testing.T, dir, name, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
}

const cliSchedule = `name: %s
cluster: dev
containers:
  - name: app
    image: busybox
    memory: 64
    command: ["sh", "-c", "echo hi"]
schedule:
  expression: %s
  timezone: Asia/Tokyo
`

func TestScheduleApplyListEnableRun(t *testing.T) {
	t.Parallel()
	url := startScheduler(t)
	ctx := context.Background()
	cli := func(args ...string) (string, string, int) {
		return runCLI(t, ctx, append(args, "--nats-url", url, "--timeout", "20s")...)
	}
	dir := t.TempDir()
	writeSchedule(t, dir, "a.yml", fmt.Sprintf(cliSchedule, "alpha", "cron(0 9 * * ? *)"))
	writeSchedule(t, dir, "b.yml", fmt.Sprintf(cliSchedule, "beta", "rate(1 day)"))

	// Creating needs --create; nothing is applied without it.
	_, errOut, code := cli("schedule", "apply", dir)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `schedule "alpha" does not exist; creating it needs --create`)
	require.Contains(t, errOut, "nothing applied")

	out, _, code := cli("schedule", "apply", dir, "--create", "--dry-run")
	require.Equal(t, 0, code)
	require.Contains(t, out, "+ alpha (new schedule)")
	require.Contains(t, out, "dry run: 2 change(s), nothing applied")
	out, _, code = cli("schedule", "list")
	require.Equal(t, 0, code)
	require.NotContains(t, out, "alpha")

	out, _, code = cli("schedule", "apply", dir, "--create")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "applied 2 change(s)")

	// One invalid file: nothing applied, the problem named with file:line.
	writeSchedule(t, dir, "a.yml", fmt.Sprintf(cliSchedule, "alpha", "cron(0 10 * * ? *)"))
	writeSchedule(t, dir, "c.yml", "name: gamma\ncluster: dev\ncontainers: []\n")
	_, errOut, code = cli("schedule", "apply", dir, "--create")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "c.yml:3:")
	require.Contains(t, errOut, "nothing applied")
	out, _, _ = cli("schedule", "diff", filepath.Join(dir, "a.yml"))
	require.Contains(t, out, "~ alpha schedule.expression: cron(0 9 * * ? *) -> cron(0 10 * * ? *)")
	require.NoError(t, os.Remove(filepath.Join(dir, "c.yml")))

	// Update needs no flag and prints the field diff.
	out, _, code = cli("schedule", "apply", filepath.Join(dir, "a.yml"))
	require.Equal(t, 0, code)
	require.Contains(t, out, "~ alpha schedule.expression: cron(0 9 * * ? *) -> cron(0 10 * * ? *)")
	require.Contains(t, out, "applied 1 change(s)")
	out, _, _ = cli("schedule", "apply", dir)
	require.Contains(t, out, "no changes")

	out, _, code = cli("schedule", "list")
	require.Equal(t, 0, code)
	require.Regexp(t, `alpha\s+cron\(0 10 \* \* \? \*\)\s+Asia/Tokyo\s+true\s+\d{4}-\d\d-\d\d 10:00:00 JST\s+-\s+-`, out)

	out, _, code = cli("schedule", "next", "alpha", "-n", "2", "--from", "2026-12-31T00:00:00Z")
	require.Equal(t, 0, code, out)
	require.Equal(t, "2026-12-31T10:00:00+09:00\n2027-01-01T10:00:00+09:00\n", out)

	out, _, code = cli("schedule", "disable", "alpha")
	require.Equal(t, 0, code)
	require.Contains(t, out, "alpha: disabled")
	out, _, _ = cli("schedule", "list")
	require.Regexp(t, `alpha\s+\S+ \S+ \S+ \S+ \S+ \S+\s+Asia/Tokyo\s+false`, out)
	_, _, code = cli("schedule", "enable", "alpha")
	require.Equal(t, 0, code)

	out, errOut, code = cli("run", "beta")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "beta-")
	require.Contains(t, out, "-m-")

	// --prune deletes what is no longer in the files.
	require.NoError(t, os.Remove(filepath.Join(dir, "b.yml")))
	out, _, code = cli("schedule", "apply", dir, "--prune")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "- beta (schedule removed)")
	out, _, _ = cli("schedule", "list")
	require.NotContains(t, out, "beta")

	_, errOut, code = cli("run", "nope")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `unknown schedule "nope"`)
}

func TestScheduleRender(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCLI(t, context.Background(), "schedule", "render", "../../../examples/schedules/heartbeat.yml",
		"--profile", "dev", "--clusters", "../../../examples/clusters", "--at", "2026-06-01T12:00:00Z")
	require.Equal(t, 0, code, errOut)
	var r struct {
		RegisterTaskDefinition map[string]any   `json:"registerTaskDefinition"`
		RunTask                []map[string]any `json:"runTask"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	require.Equal(t, "taskyard-job-heartbeat", r.RegisterTaskDefinition["family"])
	require.Len(t, r.RunTask, 1)
	runID := v1.RunID("heartbeat", time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC), v1.Trigger_TRIGGER_SCHEDULE)
	require.Equal(t, runID, r.RunTask[0]["clientToken"])
	require.Equal(t, "taskyard:heartbeat", r.RunTask[0]["startedBy"])
	require.Equal(t, "EXTERNAL", r.RunTask[0]["launchType"])

	_, errOut, code = runCLI(t, context.Background(), "schedule", "render", "../../../examples/schedules/heartbeat.yml", "--profile", "nope", "--clusters", "../../../examples/clusters")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `--profile "nope"`)
	require.Contains(t, errOut, "known: dev")
}
