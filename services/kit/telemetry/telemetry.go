// Package telemetry sets up a daemon's OpenTelemetry providers: a meter
// provider read by a Prometheus exporter (served on /metrics) and, when
// OTEL_EXPORTER_OTLP_ENDPOINT (or the _METRICS_/_TRACES_ variants) is set,
// OTLP/HTTP export of metrics and traces configured by the standard OTEL_*
// variables. Nothing is registered globally: the providers are passed to
// the code that instruments itself.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Telemetry holds a daemon's providers.
type Telemetry struct {
	Meter    metric.MeterProvider
	Tracer   trace.TracerProvider
	Registry *prometheus.Registry

	shutdown []func(context.Context) error
}

// Options name the daemon and instance on every metric and span.
type Options struct {
	Service  string
	Instance string
	Version  string
	// Env reads the environment (os.LookupEnv when nil).
	Env func(string) (string, bool)
}

// New builds the providers. OTLP export is on when an OTLP endpoint
// variable is set; tracing is a no-op otherwise.
func New(ctx context.Context, o Options) (*Telemetry, error) {
	env := o.Env
	if env == nil {
		env = os.LookupEnv
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(o.Service),
		semconv.ServiceInstanceID(o.Instance),
		semconv.ServiceVersion(o.Version),
	))
	if err != nil {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	t := &Telemetry{Registry: prometheus.NewRegistry()}
	promExp, err := otelprom.New(otelprom.WithRegisterer(t.Registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)}

	has := func(keys ...string) bool {
		for _, k := range keys {
			if v, ok := env(k); ok && v != "" {
				return true
			}
		}
		return false
	}
	if has("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
		exp, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp metric exporter: %w", err)
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(30*time.Second))))
	}
	mp := sdkmetric.NewMeterProvider(mopts...)
	t.Meter = mp
	t.shutdown = append(t.shutdown, mp.Shutdown)

	if has("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithBatcher(exp))
		t.Tracer = tp
		t.shutdown = append(t.shutdown, tp.Shutdown)
	} else {
		t.Tracer = noop.NewTracerProvider()
	}
	return t, nil
}

// Handler serves the Prometheus exposition of the meter provider.
func (t *Telemetry) Handler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{})
}

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Noop returns providers that record nothing, for tests and tools.
func Noop() *Telemetry {
	t, err := New(context.Background(), Options{Service: "noop", Env: func(string) (string, bool) { return "", false }})
	if err != nil {
		panic(err) // cannot happen without OTLP
	}
	return t
}
