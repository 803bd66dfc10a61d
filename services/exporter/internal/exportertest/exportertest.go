// Package exportertest boots the exporter for tests: an embedded nats-server
// with JetStream, app.Run on a random 127.0.0.1 port with a settable clock,
// and helpers to publish real events and read the endpoints over HTTP.
package exportertest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/app"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/telemetry"
)

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock forward.
func (c *Clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// Set sets the clock.
func (c *Clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// T0 is the tests' epoch.
var T0 = time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)

// Bus is an embedded NATS with the taskyard streams and buckets.
type Bus struct {
	Server *server.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// StartBus starts an embedded nats-server (stopped at test end).
func StartBus(t testing.TB) *Bus {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	return &Bus{Server: srv, NC: nc, JS: js}
}

// Exporter is a running app.Run.
type Exporter struct {
	URL   string
	Tel   *telemetry.Telemetry
	stop  context.CancelFunc
	done  chan error
	close sync.Once
}

// Config returns the test configuration of an exporter instance.
func Config(b *Bus, instance string) app.Config {
	return app.Config{
		NATS:          natsconn.Config{URL: b.Server.ClientURL(), Prefix: v1.DefaultPrefix, Replicas: 1},
		Listen:        "127.0.0.1:0",
		Instance:      instance,
		FlushInterval: 50 * time.Millisecond,
		StaleAfter:    time.Minute,
		StatsInterval: time.Hour,
		LogLevel:      "info",
	}
}

// Start runs app.Run with cfg and clock until Stop or the end of the test,
// and waits until it is serving.
func Start(t testing.TB, cfg app.Config, clock *Clock) *Exporter {
	t.Helper()
	e, started := StartAsync(t, cfg, clock)
	select {
	case <-started:
	case err := <-e.done:
		e.stop()
		t.Fatalf("exporter stopped before it started: %v", err)
	case <-time.After(20 * time.Second):
		e.stop()
		t.Fatal("exporter did not start within 20s")
	}
	return e
}

// StartAsync runs app.Run like Start but returns at once, with a channel
// closed once the exporter serves.
func StartAsync(t testing.TB, cfg app.Config, clock *Clock) (*Exporter, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tel, err := telemetry.New(context.Background(), telemetry.Options{Service: "taskyard-exporter", Instance: cfg.Instance,
		Env: func(string) (string, bool) { return "", false }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	e := &Exporter{URL: "http://" + ln.Addr().String(), Tel: tel, stop: cancel, done: make(chan error, 1)}
	started := make(chan struct{})
	go func() {
		e.done <- app.Run(ctx, cfg, app.Deps{
			Log:       logging.New(io.Discard, 0, "exporter"),
			Telemetry: tel,
			Clock:     clock.Now,
			Listener:  ln,
			Started:   func(net.Addr) { close(started) },
		})
	}()
	t.Cleanup(func() { _ = e.Stop() })
	return e, started
}

// Stop cancels the exporter and returns Run's error.
func (e *Exporter) Stop() error {
	var err error = errors.New("already stopped")
	e.close.Do(func() {
		e.stop()
		select {
		case err = <-e.done:
		case <-time.After(20 * time.Second):
			err = errors.New("exporter did not stop within 20s")
		}
		_ = e.Tel.Shutdown(context.Background())
	})
	return err
}

// Get fetches path and returns the body; non-200 fails the test.
func Get(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return body
}

// Flat fetches /api/v1/metrics and flattens it to dotted keys.
func Flat(t testing.TB, base string) map[string]float64 {
	t.Helper()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(Get(t, base+"/api/v1/metrics"), &doc))
	out := map[string]float64{}
	flatten("", doc, out)
	return out
}

func flatten(prefix string, v any, out map[string]float64) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, c, out)
		}
	case float64:
		out[prefix] = x
	}
}

// Publisher publishes events the way the other daemons do.
type Publisher struct {
	t  testing.TB
	js jetstream.JetStream
	s  v1.Subjects
}

// Pub returns a publisher on b.
func (b *Bus) Pub(t testing.TB) *Publisher { return &Publisher{t: t, js: b.JS} }

// Publish publishes m on subject with msgID.
func (p *Publisher) Publish(subject string, m proto.Message, msgID string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := v1.Publish(ctx, p.js, subject, m, msgID)
	require.NoError(p.t, err)
}

// Run publishes a whole run of schedule on cluster: dispatched at
// scheduled+lag, then finished with outcome, exit code and duration.
func (p *Publisher) Run(schedule, cluster string, scheduled time.Time, lag time.Duration, outcome v1.Outcome, exit int32, dur time.Duration) string {
	p.t.Helper()
	id := p.Dispatch(schedule, cluster, scheduled, lag)
	p.Finish(schedule, cluster, id, scheduled, scheduled.Add(lag), outcome, exit, dur)
	return id
}

// Dispatch publishes RunDispatched and returns the run id (task "task-<id>").
func (p *Publisher) Dispatch(schedule, cluster string, scheduled time.Time, lag time.Duration) string {
	p.t.Helper()
	id := v1.RunID(schedule, scheduled, v1.Trigger_TRIGGER_SCHEDULE)
	p.Publish(p.s.RunDispatched(schedule), &v1.RunDispatched{
		RunId: id, Schedule: schedule, Cluster: cluster, ScheduledAt: timestamppb.New(scheduled),
		DispatchedAt: timestamppb.New(scheduled.Add(lag)), Trigger: v1.Trigger_TRIGGER_SCHEDULE, Runner: "exec",
		TaskIds: []string{"task-" + id}, TaskCount: 1,
	}, id)
	return id
}

// Finish publishes RunFinished of run id.
func (p *Publisher) Finish(schedule, cluster, id string, scheduled, started time.Time, outcome v1.Outcome, exit int32, dur time.Duration) {
	p.t.Helper()
	p.Publish(p.s.RunFinished(schedule), &v1.RunFinished{
		RunId: id, Schedule: schedule, Cluster: cluster, ScheduledAt: timestamppb.New(scheduled),
		StartedAt: timestamppb.New(started), FinishedAt: timestamppb.New(started.Add(dur)), Outcome: outcome,
		Containers: []*v1.ContainerExit{{Name: "app", ExitCode: exit, HasExitCode: outcome != v1.Outcome_OUTCOME_FAILED_TO_START, Essential: true}},
		Duration:   durationpb.New(dur), TaskIds: []string{"task-" + id}, Trigger: v1.Trigger_TRIGGER_SCHEDULE,
	}, "finished:"+id)
}

// LogStats publishes one window of log volume.
func (p *Publisher) LogStats(cluster, service, instance string, end time.Time, byLevel map[string]int64, bytes int64) {
	p.t.Helper()
	var n int64
	for _, c := range byLevel {
		n += c
	}
	p.Publish(p.s.LogStats(cluster, service), &v1.LogStats{
		Cluster: cluster, Service: service, Instance: instance, WindowStart: timestamppb.New(end.Add(-10 * time.Second)),
		WindowEnd: timestamppb.New(end), Records: n, Bytes: bytes, RecordsByLevel: byLevel,
	}, "")
}

// Stats publishes a logrouter-style DaemonStats.
func (p *Publisher) Stats(daemon, instance string, at, started time.Time, output map[string]map[string]int64) {
	p.t.Helper()
	m := &v1.DaemonStats{Daemon: daemon, Instance: instance, Time: timestamppb.New(at), StartedAt: timestamppb.New(started),
		Input:  map[string]*v1.PluginCounters{"forward.0": {Counters: map[string]int64{"records": 0, "bytes": 0}}},
		Output: map[string]*v1.PluginCounters{}}
	var recs int64
	for name, c := range output {
		m.Output[name] = &v1.PluginCounters{Counters: c}
		recs += c["proc_records"]
	}
	m.Input["forward.0"].Counters["records"] = recs
	m.Input["forward.0"].Counters["bytes"] = recs * 100
	p.Publish(p.s.DaemonStats(daemon, instance), m, "")
}

// Alert publishes an alert.
func (p *Publisher) Alert(sev v1.Severity, kind, schedule string, resolved bool) {
	p.t.Helper()
	p.Publish(p.s.Alert(sev, kind), &v1.Alert{DedupeKey: kind + "/" + schedule, Severity: sev, Kind: kind, Schedule: schedule, Resolved: resolved}, "")
}

// BuildTool builds the main package pkg (a `tool` of this module's go.mod,
// such as github.com/mackerelio/mackerel-plugin-json) into a temporary
// directory and returns the binary's path. It is the binary `go tool
// mackerel-plugin-json` runs, built once per test.
func BuildTool(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build %s: %s", pkg, b)
	return out
}

// Line is one line of a Mackerel plugin's output.
type Line struct {
	Value float64
	Time  int64
}

// ParseOutput parses "name\tvalue\ttime" lines; a name printed twice fails
// the test.
func ParseOutput(t testing.TB, out []byte) map[string]Line {
	t.Helper()
	m := map[string]Line{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "\t")
		require.Len(t, f, 3, "line %q", l)
		v, err := strconv.ParseFloat(f[1], 64)
		require.NoError(t, err, "line %q", l)
		ts, err := strconv.ParseInt(f[2], 10, 64)
		require.NoError(t, err, "line %q", l)
		_, dup := m[f[0]]
		require.False(t, dup, "metric %s printed twice", f[0])
		m[f[0]] = Line{Value: v, Time: ts}
	}
	return m
}
