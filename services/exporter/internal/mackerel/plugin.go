// Package mackerel is mackerel-plugin-taskyard: the exporter's document
// turned into Mackerel metrics with graph definitions (go-mackerel-plugin).
//
// Metric names are <prefix>.<graph>.<name>. Every graph here has a
// wildcard: for a graph without one, go-mackerel-plugin looks the value up
// under the bare metric name, not <graph>.<name>. It emits a
// wildcard metric only when its whole key matches the graph key plus the
// metric name with every '#' and '*' standing for one [-a-zA-Z0-9_]+
// token, and that match is not anchored at the end: so every token here is
// made of those characters (Fluent Bit's "s3.0" becomes "s3_0"), and no
// metric name of a graph is a prefix of another one after a '.' boundary
// (the document's failed_to_start is start_failed here, retries_failed is
// failed_retries), or it would be printed twice.
package mackerel

import (
	"context"
	"net/http"
	"time"

	mp "github.com/mackerelio/go-mackerel-plugin"

	"github.com/taskyard/taskyard/services/exporter/internal/aggregate"
	"github.com/taskyard/taskyard/services/exporter/internal/metricsjson"
)

// Plugin reads one exporter.
type Plugin struct {
	URL     string
	Header  http.Header
	Prefix  string
	Timeout time.Duration
}

// MetricKeyPrefix is the first token of every metric (default taskyard).
func (p Plugin) MetricKeyPrefix() string {
	if p.Prefix == "" {
		return "taskyard"
	}
	return p.Prefix
}

// runMetrics maps the graph's metric names to the document's schedule keys.
var runMetrics = []struct{ name, key, label string }{
	{"dispatched", "dispatched", "Dispatched"},
	{"succeeded", "succeeded", "Succeeded"},
	{"failed", "failed", "Failed"},
	{"start_failed", "failed_to_start", "Failed to start"},
	{"timed_out", "timed_out", "Timed out"},
	{"stopped", "stopped", "Stopped"},
	{"lost", "lost", "Lost"},
	{"missed", "missed", "Missed"},
	{"skipped", "skipped", "Skipped"},
	{"dispatch_failed", "dispatch_failed", "Dispatch failed"},
}

// outputMetrics maps the graph's metric names to Fluent Bit's output
// counters.
var outputMetrics = []struct{ name, key, label string }{
	{"proc_records", "proc_records", "Processed records"},
	{"errors", "errors", "Errors"},
	{"retries", "retries", "Retries"},
	{"failed_retries", "retries_failed", "Retries failed"},
	{"retried_records", "retried_records", "Retried records"},
	{"dropped_records", "dropped_records", "Dropped records"},
}

// GraphDefinition is the graph definition printed in meta mode.
func (p Plugin) GraphDefinition() map[string]mp.Graphs {
	runs := make([]mp.Metrics, 0, len(runMetrics))
	for _, m := range runMetrics {
		runs = append(runs, mp.Metrics{Name: m.name, Label: m.label, Diff: true})
	}
	outs := make([]mp.Metrics, 0, len(outputMetrics))
	for _, m := range outputMetrics {
		outs = append(outs, mp.Metrics{Name: m.name, Label: m.label, Diff: true})
	}
	return map[string]mp.Graphs{
		"runs.#": {Label: "taskyard runs per minute", Unit: mp.UnitFloat, Metrics: runs},
		"running": {Label: "taskyard running runs", Unit: mp.UnitInteger, Metrics: []mp.Metrics{
			{Name: "*", Label: "%1"}}},
		"last_duration": {Label: "taskyard last run duration", Unit: mp.UnitSeconds, Metrics: []mp.Metrics{
			{Name: "*", Label: "%1"}}},
		"since_last_success": {Label: "taskyard time since last success", Unit: mp.UnitSeconds, Metrics: []mp.Metrics{
			{Name: "*", Label: "%1"}}},
		"cluster.#": {Label: "taskyard cluster tasks", Unit: mp.UnitInteger, Metrics: []mp.Metrics{
			{Name: "running_tasks", Label: "Running tasks"},
			{Name: "task_limit", Label: "Task limit"}}},
		"logs.#": {Label: "taskyard log records per minute", Unit: mp.UnitFloat, Metrics: []mp.Metrics{
			{Name: "records", Label: "Records", Diff: true},
			{Name: "error_records", Label: "Error records", Diff: true}}},
		"output.#": {Label: "taskyard log outputs per minute", Unit: mp.UnitFloat, Metrics: outs},
		"alerts": {Label: "taskyard alerts per minute", Unit: mp.UnitFloat, Metrics: []mp.Metrics{
			{Name: "*", Label: "%1", Diff: true, Stacked: true}}},
		"daemons.#": {Label: "taskyard daemons up", Unit: mp.UnitInteger, Metrics: []mp.Metrics{
			{Name: "*", Label: "%1", Stacked: true}}},
	}
}

// FetchMetrics reads the exporter.
func (p Plugin) FetchMetrics() (map[string]float64, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	d, err := metricsjson.Fetch(context.Background(), p.URL, p.Header, timeout)
	if err != nil {
		return nil, err
	}
	return Metrics(d), nil
}

// Metrics flattens a document into the plugin's metric keys (without the
// prefix).
func Metrics(d *metricsjson.Doc) map[string]float64 {
	out := map[string]float64{}
	for name, s := range d.Schedule {
		n := aggregate.SafeName(name)
		for _, m := range runMetrics {
			if v, ok := s[m.key]; ok {
				out["runs."+n+"."+m.name] = v
			}
		}
		if v, ok := s["running"]; ok {
			out["running."+n] = v
		}
		if v, ok := s["last_duration_seconds"]; ok {
			out["last_duration."+n] = v
		}
		if v, ok := s["seconds_since_last_success"]; ok {
			out["since_last_success."+n] = v
		}
	}
	for name, c := range d.Cluster {
		n := aggregate.SafeName(name)
		for _, k := range []string{"running_tasks", "task_limit"} {
			if v, ok := c[k]; ok {
				out["cluster."+n+"."+k] = v
			}
		}
	}
	for name, l := range d.Logs {
		n := aggregate.SafeName(name)
		for _, k := range []string{"records", "error_records"} {
			if v, ok := l[k]; ok {
				out["logs."+n+"."+k] = v
			}
		}
	}
	for plugin, c := range d.Output {
		n := aggregate.SafeName(plugin) // "s3.0" → "s3_0": one token
		for _, m := range outputMetrics {
			if v, ok := c[m.key]; ok {
				out["output."+n+"."+m.name] += v
			}
		}
	}
	for sev, v := range d.Alerts {
		out["alerts."+aggregate.SafeName(sev)] = v
	}
	for daemon, insts := range d.Daemons {
		for inst, m := range insts {
			if v, ok := m["up"]; ok {
				out["daemons."+aggregate.SafeName(daemon)+"."+aggregate.SafeName(inst)] = v
			}
		}
	}
	return out
}
