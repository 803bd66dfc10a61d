package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/exportertest"
)

// The test binary doubles as check-taskyard (TASKYARD_CHECK_MAIN=1), so the
// exit codes checked are those of the real main.
func TestMain(m *testing.M) {
	if os.Getenv("TASKYARD_CHECK_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

func runCheck(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "TASKYARD_CHECK_MAIN=1")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), strings.TrimSpace(string(out))
	}
	require.NoError(t, err)
	return 0, strings.TrimSpace(string(out))
}

func putKV(t *testing.T, b *exportertest.Bus, bucket, key string, m proto.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := b.JS.KeyValue(ctx, bucket)
	require.NoError(t, err)
	data, err := proto.Marshal(m)
	require.NoError(t, err)
	_, err = kv.Put(ctx, key, data)
	require.NoError(t, err)
}

func TestExitCodes(t *testing.T) {
	t0 := exportertest.T0
	now := t0.Add(2 * time.Hour)
	bus := exportertest.StartBus(t)
	buckets := v1.Buckets("")
	// The scheduler's view: slow has a 5 minute budget; late's next fire was
	// due 10 minutes ago.
	putKV(t, bus, buckets.Schedules, "slow", &v1.ScheduleSpec{Name: "slow", Cluster: "batch", Timing: &v1.Timing{Expression: "rate(1 hour)", Timeout: durationpb.New(5 * time.Minute)}})
	putKV(t, bus, buckets.State, "late", &v1.ScheduleState{Schedule: "late", NextFire: timestamppb.New(now.Add(-10 * time.Minute))})
	putKV(t, bus, buckets.State, "good", &v1.ScheduleState{Schedule: "good", NextFire: timestamppb.New(now.Add(50 * time.Minute))})

	e := exportertest.Start(t, exportertest.Config(bus, "check"), exportertest.NewClock(now))
	p := bus.Pub(t)
	p.Run("good", "batch", now.Add(-12*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	p.Run("slow", "batch", now.Add(-30*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, 10*time.Minute)
	p.Run("late", "batch", now.Add(-70*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	p.Run("broken", "batch", now.Add(-90*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	p.Run("broken", "batch", now.Add(-30*time.Minute), time.Second, v1.Outcome_OUTCOME_FAILED, 3, time.Minute)
	p.Publish(v1.Subjects{}.RunMissed("lonely"), &v1.RunMissed{Schedule: "lonely", ExpectedAt: timestamppb.New(now.Add(-20 * time.Minute)), Why: "no leader"}, "")
	require.Eventually(t, func() bool {
		m := exportertest.Flat(t, e.URL)
		return m["schedule.lonely.missed"] == 1 && m["schedule.slow.duration_budget_seconds"] == 300 && m["schedule.late.overdue_seconds"] == 600
	}, 10*time.Second, 20*time.Millisecond)

	url := "-url=" + e.URL + "/api/v1/metrics"
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains []string
	}{
		{"ok", []string{url, "-schedule", "good"}, 0, []string{"taskyard OK: good: last run succeeded 10m59s ago"}},
		{"over budget", []string{url, "-schedule", "slow"}, 1, []string{"taskyard WARNING: WARNING slow: last run took 10m0s, over its 5m0s budget"}},
		{"budget from the flag", []string{url, "-schedule", "good", "-max-duration", "30s"}, 1, []string{"last run took 1m0s, over its 30s budget"}},
		{"late", []string{url, "-schedule", "late"}, 1, []string{"late: next fire is 10m0s overdue"}},
		{"late within threshold", []string{url, "-schedule", "late", "-late", "15m"}, 0, []string{"taskyard OK: late"}},
		{"failed", []string{url, "-schedule", "broken"}, 2, []string{"taskyard CRITICAL: CRITICAL broken: last run failed (exit code 3)"}},
		{"missed", []string{url, "-schedule", "lonely"}, 2, []string{"lonely: last fire was missed"}},
		{"all: worst first", []string{url}, 2, []string{"taskyard CRITICAL: CRITICAL broken", "CRITICAL lonely", "WARNING late", "WARNING slow", "(1 other schedules OK)"}},
		{"unknown schedule", []string{url, "-schedule", "nope"}, 3, []string{"taskyard UNKNOWN: schedule nope is not known"}},
		{"exporter down", []string{"-url=http://127.0.0.1:1/api/v1/metrics"}, 3, []string{"taskyard UNKNOWN: read exporter http://127.0.0.1:1/api/v1/metrics"}},
		{"not the exporter", []string{"-url=" + e.URL + "/healthz"}, 3, []string{"taskyard UNKNOWN:", "not a taskyard metrics document"}},
		{"bad flag", []string{"-late", "soon"}, 3, []string{"taskyard UNKNOWN:", "-late"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCheck(t, tc.args...)
			require.Equal(t, tc.code, code, out)
			for _, c := range tc.contains {
				require.Contains(t, out, c)
			}
		})
	}

	// A later success clears the failure.
	p.Run("broken", "batch", now.Add(-5*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	require.Eventually(t, func() bool {
		code, _ := runCheck(t, url, "-schedule", "broken")
		return code == 0
	}, 10*time.Second, 50*time.Millisecond)
}
