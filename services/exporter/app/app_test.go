package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/app"
	"github.com/taskyard/taskyard/services/exporter/internal/exportertest"
	"github.com/taskyard/taskyard/services/kit/config"
)

var t0 = exportertest.T0

// publishScenario publishes a day of a small installation and returns the
// /api/v1/metrics values it must produce at t0+2h.
func publishScenario(p *exportertest.Publisher) map[string]float64 {
	s := v1.Subjects{}
	// nightly: one success (42s, exit 0), then one failure (exit 3, 7.5s).
	p.Run("nightly", "batch", t0, 2*time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, 42*time.Second)
	p.Run("nightly", "batch", t0.Add(time.Hour), 500*time.Millisecond, v1.Outcome_OUTCOME_FAILED, 3, 7500*time.Millisecond)
	// hourly: one run still running, a skipped fire, a missed fire.
	p.Dispatch("hourly", "batch", t0.Add(90*time.Minute), time.Second)
	p.Publish(s.Task("batch", "hourly"), &v1.TaskStateChanged{TaskArn: "task-" + v1.RunID("hourly", t0.Add(90*time.Minute), v1.Trigger_TRIGGER_SCHEDULE),
		Cluster: "batch", Schedule: "hourly", LastStatus: "RUNNING", Version: 3, EventTime: timestamppb.New(t0.Add(91 * time.Minute))}, "")
	p.Publish(s.RunSkipped("hourly"), &v1.RunSkipped{RunId: "r-skip", Schedule: "hourly", Cluster: "batch",
		ScheduledAt: timestamppb.New(t0.Add(30 * time.Minute)), Reason: v1.SkipReason_SKIP_REASON_CONCURRENCY_FORBID}, "r-skip")
	p.Publish(s.RunMissed("weekly"), &v1.RunMissed{Schedule: "weekly", Cluster: "batch", ExpectedAt: timestamppb.New(t0),
		DetectedAt: timestamppb.New(t0.Add(5 * time.Minute)), Why: "no scheduler leader", RunId: "r-missed"}, "missed:r-missed")
	// A task of another cluster that stopped; one dispatch that failed.
	p.Publish(s.Task("arn:aws:ecs:ap-northeast-1:1:cluster/web", ""), &v1.TaskStateChanged{TaskArn: "t-web", LastStatus: "STOPPED", Version: 2}, "")
	p.Publish(s.RunDispatchFailed("weekly"), &v1.RunDispatchFailed{RunId: "r-df", Schedule: "weekly", Cluster: "batch",
		ScheduledAt: timestamppb.New(t0.Add(-time.Hour)), Error: "ThrottlingException"}, "r-df")
	// Alerts: two critical (one resolved later), one warning.
	p.Alert(v1.Severity_SEVERITY_CRITICAL, "run_failed", "nightly", false)
	p.Alert(v1.Severity_SEVERITY_CRITICAL, "run_missed", "weekly", false)
	p.Alert(v1.Severity_SEVERITY_CRITICAL, "run_failed", "nightly", true)
	p.Alert(v1.Severity_SEVERITY_WARNING, "silent_run", "hourly", false)
	// Logs of nightly from two clusters' routers, and of an ordinary service.
	p.LogStats("batch", "nightly", "lr-1", t0.Add(time.Minute), map[string]int64{"info": 90, "error": 8, "fatal": 2}, 12000)
	p.LogStats("batch2", "nightly", "lr-2", t0.Add(time.Minute), map[string]int64{"info": 10}, 1000)
	p.LogStats("web", "api.v2", "lr-2", t0.Add(time.Minute), map[string]int64{"warn": 5}, 500)
	// Two logrouter instances; lr-1 restarts between its two reports.
	p.Stats("logrouter", "lr-1", t0.Add(110*time.Minute), t0, map[string]map[string]int64{"s3.0": {"proc_records": 100, "errors": 1, "retries": 4}})
	p.Stats("logrouter", "lr-1", t0.Add(119*time.Minute), t0.Add(115*time.Minute), map[string]map[string]int64{"s3.0": {"proc_records": 30, "errors": 0, "retries": 1}})
	p.Stats("logrouter", "ip-10-0-0-1.ec2.internal", t0.Add(119*time.Minute), t0, map[string]map[string]int64{"s3.0": {"proc_records": 5}, "datadog.1": {"proc_records": 7, "dropped_records": 2}})
	p.Stats("scheduler", "s-1", t0.Add(30*time.Minute), t0, nil)

	return map[string]float64{
		"schedule.nightly.dispatched":                                     2,
		"schedule.nightly.succeeded":                                      1,
		"schedule.nightly.failed":                                         1,
		"schedule.nightly.failed_to_start":                                0,
		"schedule.nightly.running":                                        0,
		"schedule.nightly.last_exit_code":                                 3,
		"schedule.nightly.last_duration_seconds":                          7.5,
		"schedule.nightly.last_outcome":                                   2,
		"schedule.nightly.last_dispatch_lag_seconds":                      0.5,
		"schedule.nightly.seconds_since_last_success":                     (2*time.Hour - 44*time.Second).Seconds(),
		"schedule.nightly.seconds_since_last_run":                         (time.Hour - 500*time.Millisecond).Seconds(),
		"schedule.nightly.log_records":                                    110,
		"schedule.nightly.log_error_records":                              10,
		"schedule.nightly.log_bytes":                                      13000,
		"schedule.hourly.dispatched":                                      1,
		"schedule.hourly.running":                                         1,
		"schedule.hourly.running_seconds":                                 (30*time.Minute - time.Second).Seconds(),
		"schedule.hourly.skipped":                                         1,
		"schedule.hourly.last_outcome":                                    0,
		"schedule.hourly.log_records":                                     0,
		"schedule.weekly.missed":                                          1,
		"schedule.weekly.dispatch_failed":                                 1,
		"schedule.weekly.last_outcome":                                    7,
		"cluster.batch.running_tasks":                                     1,
		"cluster.arn_aws_ecs_ap-northeast-1_1_cluster_web.running_tasks":  0,
		"alerts.critical":                                                 2,
		"alerts.warning":                                                  1,
		"alerts.info":                                                     0,
		"logs.api_v2.records":                                             5,
		"logs.nightly.error_records":                                      10,
		"output.s3.0.proc_records":                                        135, // 100 (before lr-1 restarted) + 30 + 5
		"output.s3.0.errors":                                              1,
		"output.s3.0.retries":                                             5,
		"output.datadog.1.dropped_records":                                2,
		"input.forward.0.records":                                         142,
		"instance.lr-1.output.s3.0.proc_records":                          130,
		"instance.ip-10-0-0-1_ec2_internal.output.datadog.1.proc_records": 7,
		"daemons.logrouter.lr-1.up":                                       1,
		"daemons.logrouter.ip-10-0-0-1_ec2_internal.up":                   1,
		"daemons.scheduler.s-1.up":                                        0, // last report 90 minutes ago
	}
}

func TestMetricsJSON(t *testing.T) {
	t.Parallel()
	bus := exportertest.StartBus(t)
	clock := exportertest.NewClock(t0.Add(2 * time.Hour))
	e := exportertest.Start(t, exportertest.Config(bus, "e1"), clock)
	want := publishScenario(bus.Pub(t))

	var got map[string]float64
	require.Eventually(t, func() bool {
		got = exportertest.Flat(t, e.URL)
		_, statsDone := got["daemons.scheduler.s-1.up"]
		return statsDone && got["schedule.weekly.dispatch_failed"] == 1 && got["alerts.warning"] == 1
	}, 10*time.Second, 20*time.Millisecond)
	for k, v := range want {
		require.Contains(t, got, k)
		require.InDelta(t, v, got[k], 1e-9, k)
	}
	// Unknown values are absent rather than invented.
	require.NotContains(t, got, "schedule.hourly.seconds_since_last_success")
	require.NotContains(t, got, "schedule.hourly.last_exit_code")
	// Every key is a Mackerel-safe name.
	for k := range got {
		require.Regexp(t, `^[-a-zA-Z0-9_.]+$`, k)
	}
	// The exporter reports itself.
	require.Equal(t, 1.0, got["daemons.exporter.e1.up"])

	// Time passing moves the ages, nothing else.
	clock.Add(time.Minute)
	later := exportertest.Flat(t, e.URL)
	require.InDelta(t, want["schedule.nightly.seconds_since_last_success"]+60, later["schedule.nightly.seconds_since_last_success"], 1e-9)
	require.Equal(t, got["schedule.nightly.succeeded"], later["schedule.nightly.succeeded"])
}

// TestRestartPersistsAndCatchesUp stops the exporter, publishes while it is
// down, and starts it again: counters continue from the snapshot, the
// events published meanwhile are counted, and nothing is counted twice.
func TestRestartPersistsAndCatchesUp(t *testing.T) {
	t.Parallel()
	bus := exportertest.StartBus(t)
	clock := exportertest.NewClock(t0.Add(24 * time.Hour))
	cfg := exportertest.Config(bus, "restart")
	p := bus.Pub(t)

	e := exportertest.Start(t, cfg, clock)
	for i := range 3 {
		p.Run("daily", "batch", t0.Add(time.Duration(i)*time.Hour), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	}
	p.Stats("logrouter", "lr-1", t0.Add(time.Hour), t0, map[string]map[string]int64{"s3.0": {"proc_records": 50}})
	p.Alert(v1.Severity_SEVERITY_WARNING, "run_overrun", "daily", false)
	require.Eventually(t, func() bool {
		m := exportertest.Flat(t, e.URL)
		return m["schedule.daily.succeeded"] == 3 && m["output.s3.0.proc_records"] == 50 && m["alerts.warning"] == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, e.Stop())

	// While the exporter is down: two more runs, a failure, and the
	// logrouter restarts (its counter drops from 50 to 20).
	p.Run("daily", "batch", t0.Add(3*time.Hour), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	p.Run("daily", "batch", t0.Add(4*time.Hour), time.Second, v1.Outcome_OUTCOME_FAILED, 1, time.Minute)
	p.Stats("logrouter", "lr-1", t0.Add(5*time.Hour), t0.Add(5*time.Hour), map[string]map[string]int64{"s3.0": {"proc_records": 20}})

	e2 := exportertest.Start(t, cfg, clock)
	require.Eventually(t, func() bool {
		m := exportertest.Flat(t, e2.URL)
		return m["schedule.daily.failed"] == 1 && m["output.s3.0.proc_records"] == 70
	}, 10*time.Second, 20*time.Millisecond)
	// A sentinel published after everything else: once it is counted, every
	// earlier message of the stream has been processed.
	p.Run("sentinel", "batch", t0, 0, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Second)
	require.Eventually(t, func() bool { return exportertest.Flat(t, e2.URL)["schedule.sentinel.succeeded"] == 1 }, 10*time.Second, 20*time.Millisecond)
	m := exportertest.Flat(t, e2.URL)
	require.Equal(t, 4.0, m["schedule.daily.succeeded"])
	require.Equal(t, 5.0, m["schedule.daily.dispatched"])
	require.Equal(t, 1.0, m["schedule.daily.failed"])
	require.Equal(t, 1.0, m["alerts.warning"])
	require.Equal(t, 70.0, m["output.s3.0.proc_records"])
}

func TestPrometheus(t *testing.T) {
	t.Parallel()
	bus := exportertest.StartBus(t)
	clock := exportertest.NewClock(t0.Add(2 * time.Hour))
	e := exportertest.Start(t, exportertest.Config(bus, "prom"), clock)
	publishScenario(bus.Pub(t))
	require.Eventually(t, func() bool {
		m := exportertest.Flat(t, e.URL)
		_, statsDone := m["daemons.scheduler.s-1.up"]
		return statsDone && m["schedule.weekly.dispatch_failed"] == 1 && m["alerts.warning"] == 1
	}, 10*time.Second, 20*time.Millisecond)

	body := exportertest.Get(t, e.URL+"/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err, string(body))

	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		fam, ok := fams[name]
		require.True(t, ok, "family %s missing in\n%s", name, body)
	next:
		for _, m := range fam.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("%s%v not found", name, labels)
		return 0
	}
	require.Equal(t, 1.0, value("taskyard_runs_total", map[string]string{"schedule": "nightly", "outcome": "succeeded"}))
	require.Equal(t, 1.0, value("taskyard_runs_total", map[string]string{"schedule": "nightly", "outcome": "failed"}))
	require.Equal(t, 1.0, value("taskyard_runs_total", map[string]string{"schedule": "weekly", "outcome": "missed"}))
	require.Equal(t, 1.0, value("taskyard_schedule_running", map[string]string{"schedule": "hourly"}))
	require.Equal(t, 1.0, value("taskyard_run_duration_seconds", map[string]string{"schedule": "nightly", "outcome": "failed"}))
	require.Equal(t, 2.0, value("taskyard_dispatch_lag_seconds", map[string]string{"schedule": "nightly"}))
	require.Equal(t, 8.0, value("taskyard_log_records_total", map[string]string{"cluster": "batch", "service": "nightly", "level": "error"}))
	require.Equal(t, 12000.0, value("taskyard_log_bytes_total", map[string]string{"cluster": "batch", "service": "nightly"}))
	require.Equal(t, 135.0, value("taskyard_output_proc_records_total", map[string]string{"name": "s3.0"}))
	require.Equal(t, 2.0, value("taskyard_output_dropped_records_total", map[string]string{"name": "datadog.1"}))
	require.Equal(t, 1.0, value("taskyard_alerts_total", map[string]string{"severity": "critical", "kind": "run_failed"}))
	require.Equal(t, 1.0, value("taskyard_cluster_running_tasks", map[string]string{"cluster": "batch"}))
	require.Equal(t, 0.0, value("taskyard_daemon_up", map[string]string{"daemon": "scheduler", "instance": "s-1"}))

	// The histogram's buckets: the 42 s success is in le=60, not in le=30.
	for _, m := range fams["taskyard_run_duration_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "outcome" && l.GetValue() == "succeeded" {
				for _, b := range m.GetHistogram().GetBucket() {
					switch b.GetUpperBound() {
					case 30:
						require.Equal(t, uint64(0), b.GetCumulativeCount())
					case 60:
						require.Equal(t, uint64(1), b.GetCumulativeCount())
					}
				}
			}
		}
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	t.Parallel()
	cfg := app.Config{Listen: "nope", FlushInterval: time.Hour, LogLevel: "loud", Clusters: []string{"/does/not/exist"}}
	err := cfg.Validate()
	require.Error(t, err)
	var inv *config.InvalidError
	require.ErrorAs(t, err, &inv)
	for _, want := range []string{"nats-url", "listen", "instance", "flush-interval", "stale-after", "stats-interval", "log-level", "clusters"} {
		require.Contains(t, err.Error(), want+":")
	}
}

// TestOneProcessPerInstance: a second exporter with the same instance (an
// overlapping deployment) waits for the first to stop, then continues from
// its snapshot without counting anything twice.
func TestOneProcessPerInstance(t *testing.T) {
	t.Parallel()
	bus := exportertest.StartBus(t)
	clock := exportertest.NewClock(t0.Add(time.Hour))
	cfg := exportertest.Config(bus, "shared")
	p := bus.Pub(t)

	first := exportertest.Start(t, cfg, clock)
	p.Run("job", "batch", t0, time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	require.Eventually(t, func() bool { return exportertest.Flat(t, first.URL)["schedule.job.succeeded"] == 1 }, 10*time.Second, 20*time.Millisecond)

	second, started := exportertest.StartAsync(t, cfg, clock)
	require.Never(t, func() bool {
		select {
		case <-started:
			return true
		default:
			return false
		}
	}, 500*time.Millisecond, 20*time.Millisecond, "the second exporter must wait for the instance")
	p.Run("job", "batch", t0.Add(time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	require.Eventually(t, func() bool { return exportertest.Flat(t, first.URL)["schedule.job.succeeded"] == 2 }, 10*time.Second, 20*time.Millisecond)

	require.NoError(t, first.Stop())
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the second exporter did not take over")
	}
	p.Run("job", "batch", t0.Add(2*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	require.Eventually(t, func() bool { return exportertest.Flat(t, second.URL)["schedule.job.succeeded"] == 3 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 3.0, exportertest.Flat(t, second.URL)["schedule.job.dispatched"])
}
