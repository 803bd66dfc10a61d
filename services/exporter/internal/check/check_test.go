package check

import (
	"testing"
	"time"

	"github.com/mackerelio/checkers"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/exporter/internal/metricsjson"
)

func TestJudge(t *testing.T) {
	t.Parallel()
	opts := Options{Late: time.Minute}
	for _, tc := range []struct {
		name   string
		s      map[string]float64
		o      Options
		status checkers.Status
		text   string
	}{
		{"never ran", map[string]float64{"last_outcome": 0}, opts, checkers.OK, "no verdict yet"},
		{"running, no verdict", map[string]float64{"running": 1, "running_seconds": 30}, opts, checkers.OK, "running"},
		{"succeeded", map[string]float64{"last_outcome": 1, "seconds_since_last_success": 90}, opts, checkers.OK, "last run succeeded 1m30s ago"},
		{"failed with exit code", map[string]float64{"last_outcome": 2, "last_exit_code": 137}, opts, checkers.CRITICAL, "last run failed (exit code 137)"},
		{"failed without exit code", map[string]float64{"last_outcome": 2}, opts, checkers.CRITICAL, "last run failed"},
		{"failed to start", map[string]float64{"last_outcome": 3}, opts, checkers.CRITICAL, "last run failed to start"},
		{"lost", map[string]float64{"last_outcome": 6}, opts, checkers.CRITICAL, "last run was lost"},
		{"missed", map[string]float64{"last_outcome": 7}, opts, checkers.CRITICAL, "last fire was missed"},
		{"timed out", map[string]float64{"last_outcome": 4}, opts, checkers.WARNING, "last run timed out"},
		{"stopped", map[string]float64{"last_outcome": 5}, opts, checkers.WARNING, "last run was stopped"},
		{"over the schedule's budget", map[string]float64{"last_outcome": 1, "last_duration_seconds": 700, "duration_budget_seconds": 600}, opts, checkers.WARNING, "last run took 11m40s, over its 10m0s budget"},
		{"within budget", map[string]float64{"last_outcome": 1, "last_duration_seconds": 500, "duration_budget_seconds": 600}, opts, checkers.OK, "last run succeeded"},
		{"running over budget", map[string]float64{"last_outcome": 1, "running": 1, "running_seconds": 4000, "duration_budget_seconds": 3600}, opts, checkers.WARNING, "running for 1h6m40s, over its 1h0m0s budget"},
		{"flag budget wins", map[string]float64{"last_outcome": 1, "last_duration_seconds": 500, "duration_budget_seconds": 600}, Options{MaxDuration: time.Minute}, checkers.WARNING, "over its 1m0s budget"},
		{"overdue", map[string]float64{"last_outcome": 1, "overdue_seconds": 61}, opts, checkers.WARNING, "next fire is 1m1s overdue"},
		{"dispatched late", map[string]float64{"last_outcome": 1, "last_dispatch_lag_seconds": 120}, opts, checkers.WARNING, "last run was dispatched 2m0s late"},
		{"late check off", map[string]float64{"last_outcome": 1, "overdue_seconds": 600}, Options{}, checkers.OK, "last run succeeded"},
		{"failure beats warnings", map[string]float64{"last_outcome": 2, "overdue_seconds": 600}, opts, checkers.CRITICAL, "last run failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := judge("s", tc.s, tc.o)
			require.Equal(t, tc.status, f.status, f.text)
			require.Contains(t, f.text, tc.text)
		})
	}
}

func TestEvaluateAll(t *testing.T) {
	t.Parallel()
	d := &metricsjson.Doc{Schedule: map[string]map[string]float64{
		"a": {"last_outcome": 1},
		"b": {"last_outcome": 4},
		"c": {"last_outcome": 2, "last_exit_code": 1},
	}}
	c := Evaluate(d, Options{})
	require.Equal(t, checkers.CRITICAL, c.Status)
	require.Equal(t, "CRITICAL c: last run failed (exit code 1); WARNING b: last run timed out (1 other schedules OK)", c.Message)

	require.Equal(t, checkers.OK, Evaluate(&metricsjson.Doc{Schedule: map[string]map[string]float64{}}, Options{}).Status)
	require.Equal(t, checkers.UNKNOWN, Evaluate(d, Options{Schedule: "z"}).Status)
}
