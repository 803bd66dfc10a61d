package tracker_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecsevent"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/tracker"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
	"github.com/taskyard/taskyard/services/kit/logging"
)

// clock is an injected, settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// bus records what exitwatch publishes.
type bus struct {
	mu       sync.Mutex
	alerts   []*v1.Alert
	finished []*v1.RunFinished
	missed   []*v1.RunMissed
}

func (b *bus) Alerts() []*v1.Alert {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*v1.Alert(nil), b.alerts...)
}

func (b *bus) Finished() []*v1.RunFinished {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*v1.RunFinished(nil), b.finished...)
}

func (b *bus) Missed() []*v1.RunMissed {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*v1.RunMissed(nil), b.missed...)
}

func (b *bus) AlertsOf(kind string) []*v1.Alert {
	var out []*v1.Alert
	for _, a := range b.Alerts() {
		if a.GetKind() == kind {
			out = append(out, a)
		}
	}
	return out
}

type harness struct {
	t     *testing.T
	env   *natstest.Env
	clock *clock
	bus   *bus
	list  *watchlist.List
	store *runstore.Store
	tr    *tracker.Tracker
	ctx   context.Context
	wait  func()
}

var t0 = time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, cfg tracker.Config) *harness {
	t.Helper()
	env := natstest.Start(t)
	return addReplica(t, env, &clock{t: t0}, cfg)
}

// addReplica starts one more tracker on env (a second replica when env is
// shared).
func addReplica(t *testing.T, env *natstest.Env, clk *clock, cfg tracker.Config) *harness {
	t.Helper()
	return addReplicaCtx(t, context.Background(), env, clk, cfg, nil)
}

// addReplicaCtx starts a tracker that stops when parent ends (wait blocks
// until it did).
func addReplicaCtx(t *testing.T, parent context.Context, env *natstest.Env, clk *clock, cfg tracker.Config, stopper tracker.TaskStopper) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	h := &harness{t: t, env: env, clock: clk, bus: &bus{}, ctx: ctx}
	log := logging.Discard()
	h.list = watchlist.New(log, clk.Now)
	require.NoError(t, h.list.WatchSchedules(ctx, env.KV(t, "taskyard-schedules")))
	h.store = runstore.New(env.KV(t, "taskyard-runs"), log, time.Hour, clk.Now)
	require.NoError(t, h.store.Watch(ctx))
	if cfg.Tick == 0 {
		cfg.Tick = time.Hour // tests call Tick themselves
	}
	tr, err := tracker.New(cfg, tracker.Deps{JS: env.JS, Store: h.store, List: h.list, Log: log, Now: clk.Now, Meter: noop.NewMeterProvider().Meter("t"), Stopper: stopper})
	require.NoError(t, err)
	h.tr = tr
	sub, err := env.NC.Subscribe("taskyard.>", func(m *nats.Msg) {
		dm, err := v1.Decode("taskyard", m.Subject, m.Header, m.Data)
		if err != nil {
			return
		}
		h.bus.mu.Lock()
		defer h.bus.mu.Unlock()
		switch x := dm.(type) {
		case *v1.Alert:
			h.bus.alerts = append(h.bus.alerts, x)
		case *v1.RunFinished:
			h.bus.finished = append(h.bus.finished, x)
		case *v1.RunMissed:
			h.bus.missed = append(h.bus.missed, x)
		}
	})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	var once sync.Once
	var runErr error
	h.wait = func() {
		once.Do(func() {
			cancel()
			_ = sub.Unsubscribe()
			runErr = <-done
		})
		require.NoError(t, runErr)
	}
	t.Cleanup(h.wait)
	return h
}

func (h *harness) publish(subject string, m proto.Message, id string) {
	h.t.Helper()
	_, err := v1.Publish(context.Background(), h.env.JS, subject, m, id)
	require.NoError(h.t, err)
}

func (h *harness) applySchedule(spec *v1.ScheduleSpec) {
	h.t.Helper()
	data, err := proto.Marshal(spec)
	require.NoError(h.t, err)
	_, err = h.env.KV(h.t, "taskyard-schedules").Put(context.Background(), spec.GetName(), data)
	require.NoError(h.t, err)
	require.Eventually(h.t, func() bool {
		it, ok := h.list.Get(spec.GetName())
		return ok && it.Enabled == spec.GetTiming().GetEnabled()
	}, 5*time.Second, 10*time.Millisecond)
}

func spec(name, expr string) *v1.ScheduleSpec {
	return &v1.ScheduleSpec{
		Name: name, Cluster: "batch", Type: "scheduled",
		Containers: []*v1.Container{{Name: "app", Image: "busybox", Essential: true, Cpu: 256, Memory: 512}},
		Timing:     &v1.Timing{Expression: expr, Enabled: true, TaskCount: 1, Concurrency: "forbid", StartingDeadline: durationpb.New(time.Minute)},
		Alerts:     &v1.AlertSettings{Runbook: "https://runbooks.example.com/" + name, Severity: "critical", Channel: "#batch"},
	}
}

func dispatched(sched, runID string, at time.Time, taskIDs ...string) *v1.RunDispatched {
	return &v1.RunDispatched{RunId: runID, Schedule: sched, Cluster: "batch", ScheduledAt: timestamppb.New(at), DispatchedAt: timestamppb.New(at.Add(time.Second)),
		Trigger: v1.Trigger_TRIGGER_SCHEDULE, Runner: "ecs", TaskIds: taskIDs, TaskCount: 1}
}

func (h *harness) dispatch(d *v1.RunDispatched) {
	h.publish(v1.Subjects{}.RunDispatched(d.GetSchedule()), d, d.GetRunId())
}

func (h *harness) task(ev *v1.TaskStateChanged) {
	h.publish(v1.Subjects{}.Task(ev.GetCluster(), ev.GetSchedule()), ev, "")
}

// fixtureEvents parses a testdata/ecs-events file, in delivery order.
func fixtureEvents(t *testing.T, name string) []*v1.TaskStateChanged {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../testdata/ecs-events", name))
	require.NoError(t, err)
	var raws []json.RawMessage
	require.NoError(t, json.Unmarshal(data, &raws))
	var out []*v1.TaskStateChanged
	for _, r := range raws {
		ev, err := ecsevent.Parse(r)
		require.NoError(t, err)
		ev.Cluster = "batch"
		out = append(out, ev)
	}
	return out
}

func (h *harness) record(runID string) *v1.RunRecord {
	h.t.Helper()
	r, _, err := h.store.Fetch(context.Background(), runID)
	require.NoError(h.t, err)
	return r
}

func (h *harness) eventually(cond func() bool, msg string) {
	h.t.Helper()
	require.Eventually(h.t, cond, 10*time.Second, 10*time.Millisecond, msg)
}

// drained waits until the tracker consumed and acknowledged every event.
func (h *harness) drained() {
	h.t.Helper()
	h.eventually(func() bool {
		c, err := h.env.JS.Consumer(context.Background(), "RUNS", "exitwatch-tracker")
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "tracker consumer drained")
}
