package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// TestJobs: the demo job exiting 0 and exiting 3, run by the scheduler's
// docker runner, give RunFinished SUCCEEDED and FAILED, a run_failed alert
// at the webhook sink, their log lines in S3 (tagged, JSON parsed, levels
// mapped) and matching counts at the exporter, read by the real
// mackerel-plugin-json and mackerel-plugin-taskyard.
func TestJobs(t *testing.T) {
	s := requireStack(t)
	dir := t.TempDir()
	s.writeSchedule(t, dir, "e2e-ok", "rate(1 day)", map[string]string{"DEMO_EXIT_CODE": "0"})
	s.writeSchedule(t, dir, "e2e-fail", "rate(1 day)", map[string]string{"DEMO_EXIT_CODE": "3"})
	s.apply(t, dir)

	okRun := lastField(s.cli(t, "run", "e2e-ok"))
	failRun := lastField(s.cli(t, "run", "e2e-fail"))

	ok := s.finished(t, "e2e-ok", okRun, 90*time.Second)
	require.Equal(t, v1.Outcome_OUTCOME_SUCCEEDED, ok.GetOutcome(), "run %s: %v", okRun, ok)
	fail := s.finished(t, "e2e-fail", failRun, 90*time.Second)
	require.Equal(t, v1.Outcome_OUTCOME_FAILED, fail.GetOutcome(), "run %s: %v", failRun, fail)
	require.Len(t, fail.GetContainers(), 1)
	require.Equal(t, int32(3), fail.GetContainers()[0].GetExitCode())

	t.Run("run_failed alert at the webhook sink", func(t *testing.T) {
		type rec struct {
			Path string `json:"path"`
			Body struct {
				Kind     string `json:"kind"`
				Schedule string `json:"schedule"`
				RunID    string `json:"runId"`
				Fields   map[string]string
			} `json:"body"`
		}
		require.Eventually(t, func() bool {
			var got []rec
			if err := getJSON("http://127.0.0.1:"+webhookPort+"/received", &got); err != nil {
				return false
			}
			for _, r := range got {
				if r.Body.Kind == "run_failed" && r.Body.RunID == failRun {
					return r.Body.Schedule == "e2e-fail" && r.Body.Fields["exit_code"] == "3"
				}
			}
			return false
		}, 60*time.Second, 500*time.Millisecond, "no run_failed alert for %s at the webhook sink", failRun)
	})

	t.Run("log lines in S3", func(t *testing.T) {
		for _, c := range []struct{ schedule, run string }{{"e2e-ok", okRun}, {"e2e-fail", failRun}} {
			prefix := datePrefix(cluster, c.schedule)
			var lines []logLine
			require.Eventually(t, func() bool {
				all, err := s3Lines(context.Background(), prefix)
				if err != nil {
					t.Logf("s3: %v", err)
					return false
				}
				lines = lines[:0]
				for _, l := range all {
					if l.RunID == c.run {
						lines = append(lines, l)
					}
				}
				return len(lines) >= 5
			}, 90*time.Second, time.Second, "log lines of run %s under %s: %d of 5", c.run, prefix, len(lines))
			require.Len(t, lines, 5, "4 JSON lines + 1 plain stderr line")
			levels := map[string]int{}
			for _, l := range lines {
				require.True(t, strings.HasPrefix(l.key, prefix), l.key)
				require.Equal(t, cluster, l.Cluster)
				require.Equal(t, c.schedule, l.Service)
				require.Equal(t, "app", l.Container)
				require.Equal(t, c.run+"-0", l.Task)
				levels[l.Level]++
				if l.Source == "stdout" {
					var attrs struct {
						Level string `json:"level"`
						Seq   *int   `json:"seq"`
						RunID string `json:"run_id"`
					}
					require.NoError(t, json.Unmarshal(l.Attributes, &attrs), "attributes of %q", l.Log)
					require.NotNil(t, attrs.Seq, "JSON line parsed: %q", l.Log)
					require.Equal(t, c.run, attrs.RunID)
				} else {
					require.Equal(t, "stderr", l.Source)
					require.Empty(t, l.Attributes, "plain line has no attributes")
				}
			}
			require.Equal(t, map[string]int{"debug": 1, "info": 1, "warn": 1, "error": 1, "unknown": 1}, levels)
		}
	})

	t.Run("exporter counts", func(t *testing.T) {
		want := map[string]map[string]float64{
			"e2e-ok":   {"dispatched": 1, "succeeded": 1, "failed": 0, "last_exit_code": 0, "log_records": 5, "log_error_records": 1},
			"e2e-fail": {"dispatched": 1, "succeeded": 0, "failed": 1, "last_exit_code": 3, "log_records": 5, "log_error_records": 1},
		}
		require.Eventually(t, func() bool {
			m := metrics(t)
			for sched, kv := range want {
				for k, v := range kv {
					if got, ok := num(m, "schedule", sched, k); !ok || got != v {
						return false
					}
				}
			}
			return true
		}, 60*time.Second, time.Second, "exporter schedule counters never matched %v: %v", want, func() any { m := metrics(t); return m["schedule"] }())
	})

	t.Run("mackerel plugins read the exporter", func(t *testing.T) {
		md, err := os.ReadFile(filepath.Join(s.root, "examples/mackerel-plugin-json.md"))
		require.NoError(t, err)
		diff := ""
		for _, f := range strings.Fields(string(md)) {
			if strings.HasPrefix(f, "-diff='") {
				diff = strings.TrimSuffix(strings.TrimPrefix(f, "-diff='"), "'")
				break
			}
		}
		require.NotEmpty(t, diff, "no -diff expression in examples/mackerel-plugin-json.md")
		url := "http://127.0.0.1:" + exporterPort + "/api/v1/metrics"
		work := t.TempDir()
		// The real mackerel-plugin-json: the exporter module's go tool.
		pluginJSON := func() map[string]float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "go", "tool", "mackerel-plugin-json", "-url="+url, "-prefix=taskyard", "-diff="+diff)
			cmd.Dir = filepath.Join(s.root, "services/exporter")
			cmd.Env = append(os.Environ(), "MACKEREL_PLUGIN_WORKDIR="+work)
			out, err := cmd.Output()
			require.NoError(t, err, "mackerel-plugin-json: %s", out)
			return metricLines(t, string(out))
		}
		pluginTaskyard := func() map[string]float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, filepath.Join(s.bin, "mackerel-plugin-taskyard"), "-url", url, "-tempfile", filepath.Join(work, "taskyard-state")).Output()
			require.NoError(t, err, "mackerel-plugin-taskyard: %s", out)
			return metricLines(t, string(out))
		}
		j1, p1 := pluginJSON(), pluginTaskyard()
		firstRun := time.Now().Unix()
		require.Equal(t, 3.0, j1["taskyard.schedule.e2e-fail.last_exit_code"], "mackerel-plugin-json: %v", j1)
		require.Contains(t, j1, "taskyard.schedule.e2e-fail.failed")
		require.Greater(t, p1["taskyard.last_duration.e2e-fail"], 0.0, "mackerel-plugin-taskyard: %v", p1)
		require.Contains(t, p1, "taskyard.running.e2e-ok")

		// One more failure: both plugins report the counter moving.
		again := lastField(s.cli(t, "run", "e2e-fail"))
		require.Equal(t, v1.Outcome_OUTCOME_FAILED, s.finished(t, "e2e-fail", again, 90*time.Second).GetOutcome())
		require.Eventually(t, func() bool {
			f, _ := num(metrics(t), "schedule", "e2e-fail", "failed")
			return f == 2
		}, 60*time.Second, time.Second)
		// Both plugins divide by whole seconds since their last run and
		// report 0 within the same second.
		require.Eventually(t, func() bool { return time.Now().Unix() >= firstRun+2 }, 5*time.Second, 50*time.Millisecond)
		j2, p2 := pluginJSON(), pluginTaskyard()
		require.Greater(t, j2["taskyard.schedule.e2e-fail.failed"], 0.0, "mackerel-plugin-json (failures per minute): %v", j2)
		require.Equal(t, 0.0, j2["taskyard.schedule.e2e-ok.failed"])
		require.Greater(t, p2["taskyard.runs.e2e-fail.failed"], 0.0, "mackerel-plugin-taskyard (failures per minute): %v", p2)
		require.Equal(t, 0.0, p2["taskyard.runs.e2e-ok.failed"])
	})
}

func lastField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// metricLines reads mackerel plugin output: name \t value \t epoch.
func metricLines(t *testing.T, out string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(l, "\t")
		if len(f) == 3 {
			v, err := strconv.ParseFloat(f[1], 64)
			require.NoError(t, err, "plugin line %q", l)
			m[f[0]] = v
		}
	}
	return m
}
