// Package deliver takes alerts from the ALERTS stream to the people who
// need them: routes by kind, severity, schedule, cluster and the
// schedule's channel hint to Slack (incoming webhook, or bot token with
// threads and annotations), generic webhooks (the Alert as protojson) and
// the log. Every channel has its own durable consumer, shared by the
// exitwatch replicas, so a slow or failing channel delays only itself;
// deliveries are retried with backoff and end in a dead-letter log when
// they cannot be made.
package deliver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// Channel sends one alert.
type Channel interface {
	Name() string
	Send(ctx context.Context, a *v1.Alert) error
}

// webhook POSTs the Alert as protojson.
type webhook struct {
	cfg ChannelConfig
	hc  *http.Client
}

func (w *webhook) Name() string { return w.cfg.Name }

func (w *webhook) Send(ctx context.Context, a *v1.Alert) error {
	body, err := protojson.Marshal(a)
	if err != nil {
		return permanent{err}
	}
	resp, data, err := postJSON(ctx, w.hc, w.cfg.URL, body, w.cfg.Headers)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", w.cfg.Name, err)
	}
	return classify(resp, data, "webhook "+w.cfg.Name)
}

// logChannel writes alerts to the daemon's log.
type logChannel struct {
	name string
	log  *slog.Logger
}

func (l *logChannel) Name() string { return l.name }

func (l *logChannel) Send(ctx context.Context, a *v1.Alert) error {
	level := slog.LevelInfo
	if !a.GetResolved() && a.GetSeverity() != v1.Severity_SEVERITY_INFO {
		level = slog.LevelWarn
	}
	attrs := []any{"kind", a.GetKind(), "severity", v1.SeverityName(a.GetSeverity()), "title", a.GetTitle(), "schedule", a.GetSchedule(),
		"cluster", a.GetCluster(), "run_id", a.GetRunId(), "dedupe_key", a.GetDedupeKey(), "resolved", a.GetResolved(), "text", a.GetText()}
	if a.GetRunbookUrl() != "" {
		attrs = append(attrs, "runbook_url", a.GetRunbookUrl())
	}
	if len(a.GetFields()) > 0 {
		attrs = append(attrs, "fields", a.GetFields())
	}
	l.log.Log(ctx, level, "alert", attrs...)
	return nil
}

// kvThreads keeps Slack thread timestamps in a KV bucket.
type kvThreads struct{ kv jetstream.KeyValue }

func threadKey(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return fmt.Sprintf("exitwatch.slack-thread.%016x", h.Sum64())
}

func (k kvThreads) Get(ctx context.Context, key string) (string, time.Time, bool, error) {
	e, err := k.kv.Get(ctx, threadKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	ts, at, ok := strings.Cut(string(e.Value()), " ")
	sec, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil {
		return "", time.Time{}, false, nil
	}
	return ts, time.Unix(sec, 0), true, nil
}

func (k kvThreads) Put(ctx context.Context, key, ts string, at time.Time) error {
	_, err := k.kv.Put(ctx, threadKey(key), []byte(ts+" "+strconv.FormatInt(at.Unix(), 10)))
	return err
}

// NewThreadStore returns the KV-backed thread store (bucket
// taskyard-snapshots).
func NewThreadStore(kv jetstream.KeyValue) ThreadStore { return kvThreads{kv: kv} }

// Deps are the dispatcher's collaborators.
type Deps struct {
	JS      jetstream.JetStream
	Threads ThreadStore
	Log     *slog.Logger
	Now     func() time.Time
	Meter   metric.Meter
	// HTTP is the client for webhooks and Slack (default: a client with
	// the channel's timeout).
	HTTP *http.Client
}

// Dispatcher runs one consumer per channel.
type Dispatcher struct {
	cfg    *Config
	d      Deps
	prefix string
	chans  map[string]Channel

	mu      sync.Mutex
	dlMu    sync.Mutex
	repeats map[string]time.Time

	delivered, failed metric.Int64Counter
}

// New builds the channels of cfg.
func New(cfg *Config, prefix string, d Deps) (*Dispatcher, error) {
	if prefix == "" {
		prefix = v1.DefaultPrefix
	}
	x := &Dispatcher{cfg: cfg, d: d, prefix: prefix, chans: map[string]Channel{}, repeats: map[string]time.Time{}}
	for _, c := range cfg.Channels {
		hc := d.HTTP
		if hc == nil {
			hc = &http.Client{Timeout: c.Timeout}
		}
		switch c.Type {
		case TypeSlackWebhook:
			x.chans[c.Name] = &slackWebhook{cfg: c, hc: hc, logLink: cfg.LogLink}
		case TypeSlackBot:
			x.chans[c.Name] = &slackBot{cfg: c, hc: hc, logLink: cfg.LogLink, threads: d.Threads, now: d.Now, log: d.Log}
		case TypeWebhook:
			x.chans[c.Name] = &webhook{cfg: c, hc: hc}
		case TypeLog:
			x.chans[c.Name] = &logChannel{name: c.Name, log: d.Log}
		default:
			return nil, fmt.Errorf("channel %s: unknown type %q", c.Name, c.Type)
		}
	}
	var err error
	if x.delivered, err = d.Meter.Int64Counter("exitwatch_alerts_delivered"); err != nil {
		return nil, err
	}
	if x.failed, err = d.Meter.Int64Counter("exitwatch_alerts_dead_lettered"); err != nil {
		return nil, err
	}
	return x, nil
}

func consumerName(channel string) string {
	var b strings.Builder
	for _, r := range channel {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return "exitwatch-deliver-" + b.String()
}

// Consumers creates the durable consumers (new ones start with the next
// alert). Call before anything publishes alerts, then Run.
func (x *Dispatcher) Consumers(ctx context.Context) (map[string]jetstream.Consumer, error) {
	out := map[string]jetstream.Consumer{}
	stream := v1.Streams(x.prefix).Alerts
	for name := range x.chans {
		c, err := x.d.JS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable:       consumerName(name),
			Description:   "exitwatch delivery to channel " + name,
			DeliverPolicy: jetstream.DeliverNewPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       2 * time.Minute,
			MaxAckPending: 1, // in order per channel: Slack threads need the first message first
			FilterSubject: v1.Subjects{Prefix: x.prefix}.Alerts(),
		})
		if err != nil {
			return nil, fmt.Errorf("create delivery consumer for %s: %w", name, err)
		}
		out[name] = c
	}
	return out, nil
}

// Run delivers until ctx ends.
func (x *Dispatcher) Run(ctx context.Context, consumers map[string]jetstream.Consumer) error {
	var ccs []jetstream.ConsumeContext
	for name, c := range consumers {
		ch := x.chans[name]
		cc, err := c.Consume(func(msg jetstream.Msg) { x.handle(ctx, ch, msg) }, jetstream.PullMaxMessages(16))
		if err != nil {
			for _, c := range ccs {
				c.Stop()
			}
			return fmt.Errorf("consume alerts for %s: %w", name, err)
		}
		ccs = append(ccs, cc)
	}
	<-ctx.Done()
	for _, c := range ccs {
		c.Stop()
	}
	for _, c := range ccs {
		<-c.Closed()
	}
	return nil
}

func (x *Dispatcher) handle(ctx context.Context, ch Channel, msg jetstream.Msg) {
	m, err := v1.Decode(x.prefix, msg.Subject(), msg.Headers(), msg.Data())
	a, ok := m.(*v1.Alert)
	if err != nil || !ok {
		x.d.Log.Warn("undecodable alert dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	targets := x.cfg.ChannelsFor(a)
	routed := false
	for _, t := range targets {
		if t == ch.Name() {
			routed = true
		}
	}
	if !routed {
		_ = msg.Ack()
		return
	}
	if x.suppressed(ch.Name(), a) {
		x.d.Log.Debug("repeat suppressed", "channel", ch.Name(), "dedupe_key", a.GetDedupeKey())
		_ = msg.Ack()
		return
	}
	err = x.send(ctx, ch, a, func() { _ = msg.InProgress() })
	if ctx.Err() != nil {
		return // shutting down: redelivered to whoever runs next
	}
	if err != nil {
		x.deadLetter(ctx, ch.Name(), a, err)
	} else {
		x.delivered.Add(ctx, 1, metric.WithAttributes(attribute.String("channel", ch.Name())))
	}
	_ = msg.Ack()
}

// suppressed applies the channel's SuppressRepeats window.
func (x *Dispatcher) suppressed(channel string, a *v1.Alert) bool {
	var window time.Duration
	for _, c := range x.cfg.Channels {
		if c.Name == channel {
			window = c.SuppressRepeats
		}
	}
	if window <= 0 || a.GetDedupeKey() == "" {
		return false
	}
	key := channel + "\x00" + a.GetDedupeKey() + "\x00" + strconv.FormatBool(a.GetResolved())
	now := x.d.Now()
	x.mu.Lock()
	defer x.mu.Unlock()
	if at, ok := x.repeats[key]; ok && now.Sub(at) < window {
		return true
	}
	x.repeats[key] = now
	for k, at := range x.repeats {
		if now.Sub(at) > window {
			delete(x.repeats, k)
		}
	}
	return false
}

// send tries until success, a permanent error or Retry.MaxElapsed.
func (x *Dispatcher) send(ctx context.Context, ch Channel, a *v1.Alert, progress func()) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = x.cfg.Retry.Initial
	bo.MaxInterval = time.Minute
	op := func() (struct{}, error) {
		progress()
		err := ch.Send(ctx, a)
		switch {
		case err == nil:
			return struct{}{}, nil
		case IsPermanent(err):
			return struct{}{}, backoff.Permanent(err)
		}
		var ra retryAfter
		if errors.As(err, &ra) && ra.after > 0 {
			x.d.Log.Warn("alert delivery rate limited", "channel", ch.Name(), "retry_after", ra.after)
			return struct{}{}, backoff.RetryAfter(int(ra.after / time.Second))
		}
		x.d.Log.Warn("alert delivery failed, retrying", "channel", ch.Name(), "kind", a.GetKind(), "err", err)
		return struct{}{}, err
	}
	_, err := backoff.Retry(ctx, op, backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(x.cfg.Retry.MaxElapsed))
	return err
}

// deadLetter records an alert that could not be delivered.
func (x *Dispatcher) deadLetter(ctx context.Context, channel string, a *v1.Alert, cause error) {
	x.failed.Add(ctx, 1, metric.WithAttributes(attribute.String("channel", channel)))
	js, _ := protojson.Marshal(a)
	x.d.Log.Error("alert undeliverable", "channel", channel, "kind", a.GetKind(), "dedupe_key", a.GetDedupeKey(), "err", cause, "alert", json.RawMessage(js))
	if x.cfg.DeadLetter == "" {
		return
	}
	line, _ := json.Marshal(map[string]any{"time": x.d.Now().UTC().Format(time.RFC3339Nano), "channel": channel, "error": cause.Error(), "alert": json.RawMessage(js)})
	x.dlMu.Lock()
	defer x.dlMu.Unlock()
	f, err := os.OpenFile(x.cfg.DeadLetter, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		x.d.Log.Error("dead-letter file", "path", x.cfg.DeadLetter, "err", err)
		return
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		x.d.Log.Error("dead-letter file", "path", x.cfg.DeadLetter, "err", err)
	}
}
