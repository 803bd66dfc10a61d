package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/telemetry"
	"github.com/taskyard/taskyard/services/logrouter/internal/ingest"
	"github.com/taskyard/taskyard/services/logrouter/internal/stats"
	"github.com/taskyard/taskyard/services/logrouter/internal/tail"
)

// metrics renders the counters as Fluent Bit's /api/v1/metrics, as
// DaemonStats, and as OpenTelemetry instruments for /metrics.
type metrics struct {
	startedAt      time.Time
	now            func() time.Time
	in             *ingest.Ingest
	outs           []*outputRT
	fw, http       *ingest.InputCounters
	hasFW, hasHTTP bool

	mu       sync.Mutex
	byReason map[string]int64
	// health: errors seen at the last /api/v1/health evaluation
	lastFailed int64
}

func (m *metrics) protocolError(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byReason == nil {
		m.byReason = map[string]int64{}
	}
	m.byReason[reason]++
}

// snapshot is Fluent Bit's shape: input / filter / output maps of
// counters per plugin instance.
func (m *metrics) snapshot() (in, filter, out map[string]map[string]int64, gauges map[string]float64) {
	in = map[string]map[string]int64{}
	if m.hasFW {
		c := map[string]int64{"records": m.fw.Records.Load(), "bytes": m.fw.Bytes.Load(), "protocol_errors": m.fw.ProtocolErrors.Load()}
		m.mu.Lock()
		for r, n := range m.byReason {
			c["protocol_errors_"+r] = n
		}
		m.mu.Unlock()
		in["forward.0"] = c
	}
	if m.hasHTTP {
		in["http.0"] = map[string]int64{"records": m.http.Records.Load(), "bytes": m.http.Bytes.Load(), "protocol_errors": m.http.ProtocolErrors.Load()}
	}
	pc := &m.in.Pipeline.C
	filter = map[string]map[string]int64{
		"pipeline": {
			"records":          pc.Records.Load(),
			"drop_records":     pc.DroppedNonJSON.Load(),
			"truncated":        pc.Truncated.Load(),
			"invalid_utf8":     pc.InvalidUTF8.Load(),
			"redacted_records": pc.Redacted.Load(),
			"unrouted_records": m.in.Unrouted.Load(),
		},
	}
	out = map[string]map[string]int64{}
	gauges = map[string]float64{}
	now := m.now()
	var spoolBytes int64
	var oldest float64
	for _, o := range m.outs {
		c := o.counters.Map()
		b := o.spool.Bytes()
		c["spool_bytes"] = b
		age := 0.0
		if t := o.spool.Oldest(); !t.IsZero() {
			age = max(now.Sub(t).Seconds(), 0)
		}
		c["oldest_spooled_seconds"] = int64(age)
		c["spool_corrupt_records"] = o.spool.Corrupt()
		out[o.cfg.Name] = c
		spoolBytes += b
		oldest = max(oldest, age)
	}
	gauges["spool_bytes"] = float64(spoolBytes)
	gauges["oldest_spooled_seconds"] = oldest
	gauges["uptime_seconds"] = now.Sub(m.startedAt).Seconds()
	return in, filter, out, gauges
}

func (m *metrics) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	in, filter, out, _ := m.snapshot()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"input": in, "filter": filter, "output": out})
}

// serveHealth answers like Fluent Bit's /api/v1/health: "ok" (200) or
// "error" (500). It is an error while an output has given up on records
// since the previous check (retries_failed grew) or a blocking spool is full.
func (m *metrics) serveHealth(w http.ResponseWriter, _ *http.Request) {
	var failed int64
	full := false
	for _, o := range m.outs {
		failed += o.counters.RetriesFailed.Load()
		if o.cfg.WhenFull != "drop_newest" && o.spool.Full() {
			full = true
		}
	}
	m.mu.Lock()
	grew := failed > m.lastFailed
	m.lastFailed = failed
	m.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	if grew || full {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("error\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func (m *metrics) serveUptime(w http.ResponseWriter, _ *http.Request) {
	up := int64(m.now().Sub(m.startedAt).Seconds())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"uptime_sec": up})
}

// register exposes the counters as OTel observable instruments.
func (m *metrics) register(t *telemetry.Telemetry) error {
	meter := t.Meter.Meter("github.com/taskyard/taskyard/services/logrouter")
	inRec, err := meter.Int64ObservableCounter("logrouter_input_records", metric.WithDescription("records received per input"))
	if err != nil {
		return err
	}
	inBytes, err := meter.Int64ObservableCounter("logrouter_input_bytes", metric.WithDescription("bytes received per input"), metric.WithUnit("By"))
	if err != nil {
		return err
	}
	outC, err := meter.Int64ObservableCounter("logrouter_output", metric.WithDescription("Fluent-Bit-shaped output counters (counter attribute: proc_records, proc_bytes, errors, retries, retries_failed, dropped_records, retried_records)"))
	if err != nil {
		return err
	}
	spoolB, err := meter.Int64ObservableGauge("logrouter_spool_bytes", metric.WithDescription("bytes spooled and not yet delivered per output"), metric.WithUnit("By"))
	if err != nil {
		return err
	}
	oldest, err := meter.Float64ObservableGauge("logrouter_spool_oldest_seconds", metric.WithDescription("age of the oldest spooled record per output"), metric.WithUnit("s"))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		in, _, out, _ := m.snapshot()
		for name, c := range in {
			a := metric.WithAttributes(attribute.String("input", name))
			o.ObserveInt64(inRec, c["records"], a)
			o.ObserveInt64(inBytes, c["bytes"], a)
		}
		for name, c := range out {
			for k, v := range c {
				switch k {
				case "spool_bytes":
					o.ObserveInt64(spoolB, v, metric.WithAttributes(attribute.String("output", name)))
				case "oldest_spooled_seconds":
					o.ObserveFloat64(oldest, float64(v), metric.WithAttributes(attribute.String("output", name)))
				case "spool_corrupt_records":
				default:
					o.ObserveInt64(outC, v, metric.WithAttributes(attribute.String("output", name), attribute.String("counter", k)))
				}
			}
		}
		return nil
	}, inRec, inBytes, outC, spoolB, oldest)
	return err
}

// publisher sends LogStats and DaemonStats every interval.
type publisher struct {
	js       jetstream.JetStream
	subj     v1.Subjects
	instance string
	window   *stats.Window
	m        *metrics
	now      func() time.Time
	log      *slog.Logger
}

func (p *publisher) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Last window and counters on the way out.
			fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			p.publish(fctx)
			cancel()
			return
		case <-t.C:
			p.publish(ctx)
		}
	}
}

func (p *publisher) publish(ctx context.Context) {
	now := p.now()
	for _, ls := range p.window.Cut(now, p.instance) {
		if _, err := v1.Publish(ctx, p.js, p.subj.LogStats(ls.Cluster, ls.Service), ls, ""); err != nil {
			p.log.Warn("publish log stats", "cluster", ls.Cluster, "service", ls.Service, "err", err)
		}
	}
	in, filter, out, gauges := p.m.snapshot()
	ds := &v1.DaemonStats{
		Daemon: "logrouter", Instance: p.instance,
		Time: timestamppb.New(now), StartedAt: timestamppb.New(p.m.startedAt),
		Input: conv(in), Filter: conv(filter), Output: conv(out), Gauges: gauges,
	}
	if _, err := v1.Publish(ctx, p.js, p.subj.DaemonStats("logrouter", p.instance), ds, ""); err != nil {
		p.log.Warn("publish daemon stats", "err", err)
	}
}

func conv(m map[string]map[string]int64) map[string]*v1.PluginCounters {
	out := make(map[string]*v1.PluginCounters, len(m))
	for k, c := range m {
		out[k] = &v1.PluginCounters{Counters: c}
	}
	return out
}

// handleTail registers or renews a live tail and replies with AckReply.
func handleTail(msg *nats.Msg, reg *tail.Registry, log *slog.Logger) {
	var req v1.TailRequest
	reply := &v1.AckReply{}
	switch err := proto.Unmarshal(msg.Data, &req); {
	case err != nil:
		reply.Error = "decode TailRequest: " + err.Error()
	case req.GetInbox() == "":
		reply.Error = "TailRequest.inbox is required"
	default:
		reg.Add(&req)
		log.Debug("live tail registered", "inbox", req.GetInbox(), "cluster", req.GetCluster(), "service", req.GetService(), "level", req.GetLevel())
	}
	if msg.Reply != "" {
		b, _ := proto.Marshal(reply)
		_ = msg.Respond(b)
	}
}
