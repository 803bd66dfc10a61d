package engine

import (
	"fmt"

	"go.opentelemetry.io/otel/metric"
)

type metrics struct {
	fires         metric.Int64Counter
	skips         metric.Int64Counter
	lag           metric.Float64Histogram
	runErrors     metric.Int64Counter
	publishErrors metric.Int64Counter
	leader        metric.Int64Gauge
}

func newMetrics(mp metric.MeterProvider) (metrics, error) {
	m := mp.Meter("github.com/taskyard/taskyard/services/scheduler")
	var (
		out  metrics
		errs []error
		err  error
	)
	out.fires, err = m.Int64Counter("taskyard.scheduler.fires", metric.WithDescription("Fires decided (dispatched, skipped or failed), by trigger."), metric.WithUnit("{fire}"))
	errs = append(errs, err)
	out.skips, err = m.Int64Counter("taskyard.scheduler.skips", metric.WithDescription("Fires skipped, by reason."), metric.WithUnit("{fire}"))
	errs = append(errs, err)
	out.lag, err = m.Float64Histogram("taskyard.scheduler.dispatch.lag", metric.WithDescription("Time from a fire's scheduled time to the runner call."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
	errs = append(errs, err)
	out.runErrors, err = m.Int64Counter("taskyard.scheduler.runtask.errors", metric.WithDescription("Runs the runner could not start (API errors and RunTask failures[]), by runner and kind."), metric.WithUnit("{run}"))
	errs = append(errs, err)
	out.publishErrors, err = m.Int64Counter("taskyard.scheduler.publish.errors", metric.WithDescription("Run events that could not be published after retries."), metric.WithUnit("{message}"))
	errs = append(errs, err)
	out.leader, err = m.Int64Gauge("taskyard.scheduler.leader", metric.WithDescription("1 while this instance leads."))
	errs = append(errs, err)
	for _, err := range errs {
		if err != nil {
			return out, fmt.Errorf("scheduler metrics: %w", err)
		}
	}
	return out, nil
}
