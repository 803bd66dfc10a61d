package deliver_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/deliver"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var at = time.Date(2026, 11, 21, 3, 4, 41, 0, time.UTC)

const logLink = "https://app.datadoghq.com/logs?query=service%3A{schedule}%20%40run_id%3A{run_id}&from_ts={from_ms}&to_ts={to_ms}"

func goldenAlerts() map[string]*v1.Alert {
	return map[string]*v1.Alert{
		"run_failed_exit3": {Kind: "run_failed", Severity: v1.Severity_SEVERITY_CRITICAL, DedupeKey: "run:nightly-report", Schedule: "nightly-report", Cluster: "batch",
			RunId: "nightly-report-20261121T030000Z-s-9f2c4e1a7b3d5e60", Title: "nightly-report failed: app exited 3", Text: "container app exited 3",
			RunbookUrl: "https://runbooks.example.com/nightly-report", Time: timestamppb.New(at),
			Fields: map[string]string{"exit_code": "3", "container": "app", "outcome": "failed", "stopped_reason": "Essential container in task exited", "stop_code": "EssentialContainerExited",
				"duration": "4m30s", "scheduled_at": "2026-11-21T03:00:00Z", "task_arn": "arn:aws:ecs:eu-west-1:123456789012:task/batch/7c1f3e9a2b4d4f6e8a0c1e3f5a7b9d1e"}},
		"run_failed_oom": {Kind: "run_failed", Severity: v1.Severity_SEVERITY_CRITICAL, DedupeKey: "run:hourly-etl", Schedule: "hourly-etl", Cluster: "batch",
			RunId: "hourly-etl-20261121T040000Z-s-1a2b3c4d5e6f7081", Title: "hourly-etl failed: etl exited 137 (out of memory)",
			Text: "container etl exited 137 (out of memory): OutOfMemoryError: Container killed due to memory usage", Time: timestamppb.New(at),
			Fields: map[string]string{"exit_code": "137", "oom": "true", "container": "etl", "outcome": "failed", "duration": "12m19s"}},
		"run_failed_to_start": {Kind: "run_failed_to_start", Severity: v1.Severity_SEVERITY_CRITICAL, DedupeKey: "run:sync-users", Schedule: "sync-users", Cluster: "batch",
			RunId: "sync-users-20261121T050000Z-s-aa11bb22cc33dd44", Title: "sync-users failed to start", Time: timestamppb.New(at),
			Text:   "failed to start: CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref <image>: not found",
			Fields: map[string]string{"outcome": "failed_to_start", "stop_code": "TaskFailedToStart"}},
		"run_missed": {Kind: "run_missed", Severity: v1.Severity_SEVERITY_CRITICAL, DedupeKey: "missed:nightly-report", Schedule: "nightly-report", Cluster: "batch",
			RunId: "nightly-report-20261122T030000Z-s-7e6d5c4b3a291807", Title: "nightly-report did not run", RunbookUrl: "https://runbooks.example.com/nightly-report",
			Text: "missed: expected at 2026-11-22T03:00:00Z; no dispatch, skip or failure by its starting deadline (5m0s) plus grace (1m0s)", Time: timestamppb.New(at),
			Fields: map[string]string{"expected_at": "2026-11-22T03:00:00Z"}},
		"recovered": {Kind: "recovered", Severity: v1.Severity_SEVERITY_INFO, Resolved: true, DedupeKey: "run:nightly-report", Schedule: "nightly-report", Cluster: "batch",
			RunId: "nightly-report-20261122T030000Z-s-7e6d5c4b3a291807", Title: "nightly-report recovered", Text: "The run succeeded again.", Time: timestamppb.New(at),
			Fields: map[string]string{"outcome": "succeeded", "duration": "2m0s"}},
		"cluster_capacity": {Kind: "cluster_capacity", Severity: v1.Severity_SEVERITY_WARNING, DedupeKey: "capacity:batch", Cluster: "batch",
			Title: "cluster batch is at 80% of its task limit: 40 of 50 tasks", Text: "Runs are skipped (cluster_quota) once the limit is reached.", Time: timestamppb.New(at),
			Fields: map[string]string{"running_tasks": "40", "task_limit": "50"}},
		"summary": {Kind: "summary", Severity: v1.Severity_SEVERITY_INFO, DedupeKey: "summary", Title: "taskyard summary 02:45 – 03:00 UTC", Time: timestamppb.New(at),
			Text: "batch: 12 running (limit 50), 30 succeeded, 2 failed; failing: hourly-etl, nightly-report\nlongest running: crawler (run crawler-20261121T000000Z-s-0f1e2d3c4b5a6978) for 3h0m0s"},
	}
}

func TestSlackGolden(t *testing.T) {
	t.Parallel()
	for name, a := range goldenAlerts() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			body, err := deliver.MarshalSlack(deliver.FormatSlack(a, logLink))
			require.NoError(t, err)
			var pretty bytes.Buffer
			require.NoError(t, json.Indent(&pretty, body, "", "  "))
			got := append(pretty.Bytes(), '\n')
			path := filepath.Join("testdata", "golden", "slack_"+name+".json")
			if *update {
				require.NoError(t, os.WriteFile(path, got, 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run go test -update to create it")
			require.Equal(t, string(want), string(got))
		})
	}
}

func TestLogURL(t *testing.T) {
	t.Parallel()
	a := goldenAlerts()["run_failed_exit3"]
	require.Equal(t, "https://app.datadoghq.com/logs?query=service%3Anightly-report%20%40run_id%3Anightly-report-20261121T030000Z-s-9f2c4e1a7b3d5e60&from_ts=1795229940000&to_ts=1795230581000",
		deliver.LogURL(logLink, a))
	require.Equal(t, "s3://logs/batch/nightly-report/7c1f3e9a2b4d4f6e8a0c1e3f5a7b9d1e/", deliver.LogURL("s3://logs/{cluster}/{schedule}/{task_id}/", a))
	require.Empty(t, deliver.LogURL("", a))
}

func FuzzParseRoutes(f *testing.F) {
	if data, err := os.ReadFile("../../../../examples/exitwatch-routes.yml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("channels:\n  - {name: a, type: log}\nroutes:\n  - channels: [a]\n"))
	f.Add([]byte("channels:\n  - {name: b, type: slack_bot, token: x, channel: C1, annotations: [{match: '(a|b)+', comment: c}]}\nroutes:\n  - {kinds: [run_failed], channels: [b]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := deliver.Parse("routes.yml", data, func(string) (string, bool) { return "https://x", true })
		if err != nil {
			return
		}
		names := map[string]bool{}
		for _, ch := range c.Channels {
			names[ch.Name] = true
		}
		for _, r := range c.Routes {
			for _, ch := range r.Channels {
				if !names[ch] {
					t.Fatalf("route names unknown channel %q", ch)
				}
			}
		}
		_ = c.ChannelsFor(&v1.Alert{Kind: "run_failed", Severity: v1.Severity_SEVERITY_CRITICAL})
	})
}
