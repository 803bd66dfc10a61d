// Package kit is the small runtime every taskyard daemon shares. It has no
// code of its own; its packages are:
//
//   - config: flags with TASKYARD_* environment fallbacks, and problem lists
//     for Validate methods that report everything at once;
//   - logging: log/slog JSON with a `level` field;
//   - telemetry: OpenTelemetry meter and tracer providers, Prometheus
//     handler, OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set;
//   - natsconn: NATS connection (creds, TLS, reconnect forever, events
//     logged), the embedded nats-server with JetStream, and idempotent
//     creation of taskyard's streams and buckets;
//   - health: the /healthz, /readyz (+ /metrics) HTTP server;
//   - lifecycle: actors in an errgroup, graceful shutdown with a timeout;
//   - schedule: the schedule language (files, profiles, expressions, Fargate
//     sizing) shared by the scheduler, exitwatch and the CLI.
package kit
