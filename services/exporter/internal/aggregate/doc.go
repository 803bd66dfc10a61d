// Package aggregate is the exporter's state: every run, task, alert, log
// volume and daemon counter event folded into per-schedule, per-cluster,
// per-service and per-daemon-instance entities, and rendered as the
// Fluent-Bit-shaped JSON of GET /api/v1/metrics.
//
// # Entities and idempotence
//
// State is split into small entities (one schedule, one cluster, one
// (cluster, service) log volume, one daemon instance, the alert counts).
// Each entity remembers, per JetStream stream, the sequence of the last
// message it applied. Apply skips a message for an entity whose recorded
// sequence is at or past the message's, so applying the same message twice
// never counts twice — whether it comes back as a JetStream redelivery or
// after a restart that replays from the consumer's ack floor. The ingest
// package persists dirty entities before it acknowledges the messages they
// contain; together that gives exactly-once counting across restarts (see
// package ingest for the full argument).
//
// # Monotonic counters from daemon reports
//
// Daemon reports (DaemonStats) carry counters that restart at zero when the
// reporting daemon restarts. An instance entity keeps a base per counter:
// when a report's started_at changes, or a counter goes down, the previous
// value is added to the base, so base+current — what is rendered — never
// decreases and `mackerel-plugin-json -diff` never sees a false reset.
package aggregate
