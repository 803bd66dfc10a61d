// Package promexport exposes the exporter's state as OpenTelemetry
// instruments, served as Prometheus exposition on /metrics by the kit's
// telemetry handler (and pushed over OTLP when that is configured).
//
// Counters are observable: each collection reads the store, so Prometheus
// sees the same monotonic, restart-surviving totals as /api/v1/metrics.
// The two histograms (run duration, dispatch lag) are recorded as events are
// applied and, like any process-local histogram, start empty when the
// process starts.
package promexport

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/aggregate"
)

// ScopeName is the instrumentation scope of the exporter's instruments.
const ScopeName = "github.com/taskyard/taskyard/services/exporter"

// OutputCounters are the Fluent Bit output counters exported as
// taskyard_output_<name>_total; InputCounters likewise for inputs.
var (
	OutputCounters = []string{"proc_records", "proc_bytes", "errors", "retries", "retries_failed", "dropped_records", "retried_records"}
	InputCounters  = []string{"records", "bytes"}
)

// Metrics holds the instruments. It implements aggregate.Observer.
type Metrics struct {
	meter       metric.Meter
	runDuration metric.Float64Histogram
	dispatchLag metric.Float64Histogram
}

// New creates the histograms. Call Observe once the store exists.
func New(mp metric.MeterProvider) (*Metrics, error) {
	m := &Metrics{meter: mp.Meter(ScopeName)}
	var err error
	m.runDuration, err = m.meter.Float64Histogram("taskyard_run_duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of finished runs, by schedule and outcome."),
		metric.WithExplicitBucketBoundaries(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400))
	if err != nil {
		return nil, fmt.Errorf("run duration histogram: %w", err)
	}
	m.dispatchLag, err = m.meter.Float64Histogram("taskyard_dispatch_lag",
		metric.WithUnit("s"),
		metric.WithDescription("Time from a fire's scheduled time to its dispatch, by schedule."),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
	if err != nil {
		return nil, fmt.Errorf("dispatch lag histogram: %w", err)
	}
	return m, nil
}

// OutcomeName is the lower-case label of an outcome ("failed_to_start").
func OutcomeName(o v1.Outcome) string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_"))
}

// RunFinished records a run's duration.
func (m *Metrics) RunFinished(schedule string, outcome v1.Outcome, d time.Duration) {
	m.runDuration.Record(context.Background(), d.Seconds(), metric.WithAttributes(
		attribute.String("schedule", schedule), attribute.String("outcome", OutcomeName(outcome))))
}

// RunDispatched records a dispatch lag.
func (m *Metrics) RunDispatched(schedule string, lag time.Duration) {
	m.dispatchLag.Record(context.Background(), max(lag.Seconds(), 0), metric.WithAttributes(attribute.String("schedule", schedule)))
}

// Observe registers the observable instruments reading store. now is the
// clock; a daemon instance whose last report is older than staleAfter is
// down.
func (m *Metrics) Observe(store *aggregate.Store, now func() time.Time, staleAfter time.Duration, fluentDaemon string) error {
	mt := m.meter
	runs, err := mt.Int64ObservableCounter("taskyard_runs", metric.WithDescription("Runs by schedule and outcome: dispatched, skipped, dispatch_failed, missed and the verdicts succeeded, failed, failed_to_start, timed_out, stopped, lost."))
	if err != nil {
		return err
	}
	running, err := mt.Int64ObservableGauge("taskyard_schedule_running", metric.WithDescription("Runs of the schedule dispatched and not finished."))
	if err != nil {
		return err
	}
	logRecords, err := mt.Int64ObservableCounter("taskyard_log_records", metric.WithDescription("Log records routed by the logrouters, by cluster, service and level."))
	if err != nil {
		return err
	}
	logBytes, err := mt.Int64ObservableCounter("taskyard_log", metric.WithUnit("By"), metric.WithDescription("Log bytes routed by the logrouters, by cluster and service."))
	if err != nil {
		return err
	}
	alerts, err := mt.Int64ObservableCounter("taskyard_alerts", metric.WithDescription("Alerts raised, by severity and kind (resolutions not counted)."))
	if err != nil {
		return err
	}
	clusterRunning, err := mt.Int64ObservableGauge("taskyard_cluster_running_tasks", metric.WithDescription("Tasks of the cluster not known to be stopped."))
	if err != nil {
		return err
	}
	clusterLimit, err := mt.Int64ObservableGauge("taskyard_cluster_task_limit", metric.WithDescription("taskLimit of the cluster profile (absent: no limit)."))
	if err != nil {
		return err
	}
	up, err := mt.Int64ObservableGauge("taskyard_daemon_up", metric.WithDescription("1 when the daemon instance reported within the stale window, else 0."))
	if err != nil {
		return err
	}
	insts := []metric.Observable{runs, running, logRecords, logBytes, alerts, clusterRunning, clusterLimit, up}
	outputs := map[string]metric.Int64ObservableCounter{}
	for _, c := range OutputCounters {
		o, err := mt.Int64ObservableCounter("taskyard_output_"+c, metric.WithDescription("Fluent Bit output counter "+c+", summed over the logrouter instances, by output plugin instance."))
		if err != nil {
			return err
		}
		outputs[c] = o
		insts = append(insts, o)
	}
	inputs := map[string]metric.Int64ObservableCounter{}
	for _, c := range InputCounters {
		o, err := mt.Int64ObservableCounter("taskyard_input_"+c, metric.WithDescription("Fluent Bit input counter "+c+", summed over the logrouter instances, by input plugin instance."))
		if err != nil {
			return err
		}
		inputs[c] = o
		insts = append(insts, o)
	}

	_, err = mt.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t := now()
		store.Read(func(v aggregate.View) {
			for _, s := range v.Schedules {
				sa := attribute.String("schedule", s.Name)
				for _, c := range []struct {
					outcome string
					n       int64
				}{
					{"dispatched", s.Dispatched}, {"skipped", s.Skipped}, {"dispatch_failed", s.DispatchFailed}, {"missed", s.Missed},
					{"succeeded", s.Succeeded}, {"failed", s.Failed}, {"failed_to_start", s.FailedToStart},
					{"timed_out", s.TimedOut}, {"stopped", s.Stopped}, {"lost", s.Lost},
				} {
					o.ObserveInt64(runs, c.n, metric.WithAttributes(sa, attribute.String("outcome", c.outcome)))
				}
				o.ObserveInt64(running, int64(len(s.Active)), metric.WithAttributes(sa))
			}
			for _, l := range v.Logs {
				ca, sv := attribute.String("cluster", l.Cluster), attribute.String("service", l.Service)
				for lvl, n := range l.Levels {
					o.ObserveInt64(logRecords, n, metric.WithAttributes(ca, sv, attribute.String("level", lvl)))
				}
				var leveled int64
				for _, n := range l.Levels {
					leveled += n
				}
				if rest := l.Records - leveled; rest > 0 {
					o.ObserveInt64(logRecords, rest, metric.WithAttributes(ca, sv, attribute.String("level", "unknown")))
				}
				o.ObserveInt64(logBytes, l.Bytes, metric.WithAttributes(ca, sv))
			}
			for k, n := range v.Alerts.ByKind {
				sev, kind, _ := strings.Cut(k, "/")
				o.ObserveInt64(alerts, n, metric.WithAttributes(attribute.String("severity", sev), attribute.String("kind", kind)))
			}
			for _, c := range v.Clusters {
				o.ObserveInt64(clusterRunning, c.Running(), metric.WithAttributes(attribute.String("cluster", c.Name)))
			}
			for name, l := range v.Limits {
				if l > 0 {
					o.ObserveInt64(clusterLimit, l, metric.WithAttributes(attribute.String("cluster", name)))
				}
			}
			outTotal, inTotal := aggregate.Counters{}, aggregate.Counters{}
			for _, d := range v.Daemons {
				u := int64(0)
				if staleAfter <= 0 || t.Sub(d.Time) <= staleAfter {
					u = 1
				}
				o.ObserveInt64(up, u, metric.WithAttributes(attribute.String("daemon", d.Daemon), attribute.String("instance", d.Instance)))
				if d.Daemon == fluentDaemon {
					addCounters(outTotal, d.Total("output"))
					addCounters(inTotal, d.Total("input"))
				}
			}
			observeSection(o, outputs, outTotal)
			observeSection(o, inputs, inTotal)
		})
		return nil
	}, insts...)
	return err
}

func addCounters(dst, src aggregate.Counters) {
	for p, m := range src {
		if dst[p] == nil {
			dst[p] = map[string]int64{}
		}
		for k, v := range m {
			dst[p][k] += v
		}
	}
}

func observeSection(o metric.Observer, insts map[string]metric.Int64ObservableCounter, c aggregate.Counters) {
	for plugin, m := range c {
		for name, inst := range insts {
			if v, ok := m[name]; ok {
				o.ObserveInt64(inst, v, metric.WithAttributes(attribute.String("name", plugin)))
			}
		}
	}
}
