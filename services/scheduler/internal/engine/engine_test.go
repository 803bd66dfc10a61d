package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
	tnoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/clock"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

type leader struct {
	on atomic.Bool
	ch chan bool
}

func newLeader() *leader               { return &leader{ch: make(chan bool, 1)} }
func (l *leader) Leading() bool        { return l.on.Load() }
func (l *leader) Changes() <-chan bool { return l.ch }
func (l *leader) set(v bool)           { l.on.Store(v); l.ch <- v }

type stopCall struct {
	ids    []string
	reason string
}

// recRunner records runs; each run gets one task that stays active until
// the test publishes its STOPPED event.
type recRunner struct {
	mu    sync.Mutex
	runs  []runner.Request
	stops []stopCall
	load  int
	fail  []*v1.DispatchFailure
	// took, when set, is how far Run advances clk, as a slow RunTask would.
	took time.Duration
	clk  *clock.Manual
}

func (r *recRunner) Name() string { return "rec" }
func (r *recRunner) Run(_ context.Context, req runner.Request) (runner.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs = append(r.runs, req)
	if r.took > 0 {
		r.clk.Advance(r.took)
	}
	if r.fail != nil {
		return runner.Result{Failures: r.fail}, nil
	}
	return runner.Result{TaskIDs: []string{"task/" + req.RunID}, TaskDefinition: "taskyard-" + req.Spec.GetName() + ":1"}, nil
}
func (r *recRunner) Stop(_ context.Context, _ *v1.ScheduleSpec, _ *schedule.Profile, ids []string, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stops = append(r.stops, stopCall{ids, reason})
	return nil
}
func (r *recRunner) Active(context.Context, *v1.ScheduleSpec, *schedule.Profile) ([]runner.Task, error) {
	return nil, nil
}
func (r *recRunner) ClusterLoad(context.Context, *schedule.Profile) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.load, nil
}
func (r *recRunner) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}
func (r *recRunner) times() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Time
	for _, q := range r.runs {
		out = append(out, q.ScheduledAt)
	}
	return out
}

type harness struct {
	t      *testing.T
	eng    *Engine
	clk    *clock.Manual
	run    *recRunner
	lead   *leader
	state  jetstream.KeyValue
	mu     sync.Mutex
	events []proto.Message
	cancel context.CancelFunc // stops Run
	done   chan struct{}      // closed when Run returned
}

func newHarness(t *testing.T, now time.Time, profiles map[string]*schedule.Profile) *harness {
	return newHarnessAhead(t, now, profiles, 0)
}

func newHarnessAhead(t *testing.T, now time.Time, profiles map[string]*schedule.Profile, ahead time.Duration) *harness {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	state, err := js.KeyValue(ctx, v1.Buckets("").State)
	require.NoError(t, err)

	h := &harness{t: t, clk: clock.NewManual(now), run: &recRunner{}, lead: newLeader(), state: state}
	sub, err := nc.Subscribe("taskyard.run.>", func(m *nats.Msg) {
		msg, err := v1.Decode("", m.Subject, m.Header, m.Data)
		if err == nil {
			h.mu.Lock()
			h.events = append(h.events, msg)
			h.mu.Unlock()
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	h.eng, err = New(Config{
		Clock: h.clk, Runner: h.run, Profiles: profiles, JS: js, State: state, Leader: h.lead,
		Log: logging.New(testLog{t}, -4, "scheduler"), Meter: noop.NewMeterProvider(), Tracer: tnoop.NewTracerProvider(),
		Instance: "test", Lookahead: ahead,
	})
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = h.eng.Run(rctx); close(done) }()
	h.cancel, h.done = cancel, done
	t.Cleanup(func() { cancel(); <-done })
	return h
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(string(p))
	}
	return len(p), nil
}

func (h *harness) skips() []*v1.RunSkipped {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*v1.RunSkipped
	for _, m := range h.events {
		if s, ok := m.(*v1.RunSkipped); ok {
			out = append(out, s)
		}
	}
	return out
}

func (h *harness) ofType(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.events {
		if string(m.ProtoReflect().Descriptor().Name()) == name {
			n++
		}
	}
	return n
}

// step moves the clock to the engine's next timer and waits until the
// number of decisions published grows by want.
func (h *harness) step(want int) time.Time {
	h.t.Helper()
	before := h.decisions()
	var at time.Time
	require.Eventually(h.t, func() bool {
		var ok bool
		at, ok = h.clk.NextTimer()
		return ok
	}, 5*time.Second, time.Millisecond, "engine waits on its timer")
	h.clk.Set(at)
	require.Eventually(h.t, func() bool { return h.decisions() >= before+want }, 5*time.Second, time.Millisecond)
	return at
}

func (h *harness) decisions() int {
	return h.ofType("RunDispatched") + h.ofType("RunSkipped") + h.ofType("RunDispatchFailed")
}

func spec(name, expr, tz string) *v1.ScheduleSpec {
	return &v1.ScheduleSpec{
		Name: name, Cluster: "dev", Type: "scheduled",
		Containers: []*v1.Container{{Name: "c", Image: "x", Essential: true}},
		Timing: &v1.Timing{
			Expression: expr, Timezone: tz, TaskCount: 1, Concurrency: "allow", Enabled: true,
			StartingDeadline: durationpb.New(5 * time.Minute), CatchUp: &v1.CatchUp{Mode: "latest", Max: 1},
		},
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	require.NoError(t, err)
	return v
}

// TestDispatchedCarriesDecisionTime: RunDispatched says when the fire was
// decided (the runner called) apart from when the runner returned.
func TestDispatchedCarriesDecisionTime(t *testing.T) {
	t.Parallel()
	h := newHarness(t, mustTime(t, "2026-06-01T10:00:30Z"), nil)
	h.run.clk, h.run.took = h.clk, 3*time.Second
	require.NoError(t, h.eng.Upsert(spec("slow", "rate(1 minute)", "UTC")))
	h.lead.set(true)
	at := h.step(1)
	var d *v1.RunDispatched
	h.mu.Lock()
	for _, m := range h.events {
		if x, ok := m.(*v1.RunDispatched); ok {
			d = x
		}
	}
	h.mu.Unlock()
	require.NotNil(t, d)
	require.True(t, at.Equal(d.GetScheduledAt().AsTime()))
	require.True(t, at.Equal(d.GetDecidedAt().AsTime()), "decided_at %s, want the fire time %s", d.GetDecidedAt().AsTime(), at)
	require.True(t, at.Add(3*time.Second).Equal(d.GetDispatchedAt().AsTime()), "dispatched_at %s, want the runner's return at %s", d.GetDispatchedAt().AsTime(), at.Add(3*time.Second))
}

func TestDSTThroughTimer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, expr, zone, start string
		want                    []string
	}{
		{"NY spring-forward skips 02:30", "cron(30 2 * * ? *)", "America/New_York", "2026-03-07T12:00:00-05:00",
			[]string{"2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"}},
		{"NY fall-back fires 01:30 once", "cron(30 1 * * ? *)", "America/New_York", "2026-10-31T12:00:00-04:00",
			[]string{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"}},
		{"NY fall-back every 30 min walks the repeated hour once", "*/30 1-2 1 11 *", "America/New_York", "2026-11-01T00:45:00-04:00",
			[]string{"2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T02:30:00-05:00"}},
		{"London spring-forward skips 01:30", "cron(30 1 * * ? *)", "Europe/London", "2026-03-28T12:00:00Z",
			[]string{"2026-03-30T01:30:00+01:00"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, mustTime(t, tc.start), nil)
			require.NoError(t, h.eng.Upsert(spec("dst", tc.expr, tc.zone)))
			h.lead.set(true)
			for _, w := range tc.want {
				at := h.step(1)
				require.True(t, mustTime(t, w).Equal(at), "timer at %s, want %s", at, w)
			}
			got := h.run.times()
			require.Len(t, got, len(tc.want))
			for i, w := range tc.want {
				require.True(t, mustTime(t, w).Equal(got[i]), "fire %d: %s, want %s", i, got[i], w)
			}
		})
	}
}

func TestCatchUpOnTakeover(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	for _, tc := range []struct {
		name    string
		catchUp *v1.CatchUp
		run     []int // minutes after t0
		skipped []int
	}{
		{"none", &v1.CatchUp{Mode: "none"}, nil, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"latest", &v1.CatchUp{Mode: "latest", Max: 1}, []int{10}, []int{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"all max 3", &v1.CatchUp{Mode: "all", Max: 3}, []int{8, 9, 10}, []int{1, 2, 3, 4, 5, 6, 7}},
		{"all", &v1.CatchUp{Mode: "all", Max: 10}, []int{6, 7, 8, 9, 10}, []int{1, 2, 3, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The previous leader decided the 10:00 fire and then nobody
			// led for 10.5 minutes; the deadline is 5 minutes.
			h := newHarness(t, t0.Add(10*time.Minute+30*time.Second), nil)
			st := &v1.ScheduleState{Schedule: "every-minute", LastFire: timestamppb.New(t0), LastRunId: v1.RunID("every-minute", t0, v1.Trigger_TRIGGER_SCHEDULE)}
			b, _ := proto.Marshal(st)
			_, err := h.state.Put(context.Background(), "every-minute", b)
			require.NoError(t, err)
			sp := spec("every-minute", "rate(1 minute)", "UTC")
			sp.Timing.CatchUp = tc.catchUp
			require.NoError(t, h.eng.Upsert(sp))
			h.lead.set(true)

			require.Eventually(t, func() bool { return h.decisions() == 10 }, 5*time.Second, time.Millisecond)
			var runs []int
			for _, at := range h.run.times() {
				runs = append(runs, int(at.Sub(t0)/time.Minute))
			}
			require.Equal(t, tc.run, runs)
			var skipped []int
			for _, s := range h.skips() {
				require.Equal(t, v1.SkipReason_SKIP_REASON_DEADLINE_PASSED, s.Reason)
				require.Equal(t, v1.Trigger_TRIGGER_CATCHUP, s.Trigger)
				require.NotEmpty(t, s.Detail)
				skipped = append(skipped, int(s.ScheduledAt.AsTime().Sub(t0)/time.Minute))
			}
			require.ElementsMatch(t, tc.skipped, skipped)
			for _, r := range h.run.runs {
				require.Equal(t, v1.Trigger_TRIGGER_CATCHUP, r.Trigger)
				require.Equal(t, v1.RunID("every-minute", r.ScheduledAt, v1.Trigger_TRIGGER_SCHEDULE), r.RunID, "a catch-up fire is the same run as the scheduled one")
			}
			// The state moved on to the newest decided fire; the next fire
			// is 10:11 and is dispatched normally.
			e, err := h.state.Get(context.Background(), "every-minute")
			require.NoError(t, err)
			require.NoError(t, proto.Unmarshal(e.Value(), st))
			require.True(t, t0.Add(10*time.Minute).Equal(st.LastFire.AsTime()))
			at := h.step(1)
			require.True(t, t0.Add(11*time.Minute).Equal(at))
		})
	}
}

func TestPlanCatchUpCapsLateSkips(t *testing.T) {
	t.Parallel()
	e, err := schedule.ParseExpr("rate(1 second)", time.UTC, time.Time{})
	require.NoError(t, err)
	t0 := mustTime(t, "2026-01-01T00:00:00Z")
	p := PlanCatchUp(e, t0, t0.Add(time.Hour), time.Minute, schedule.CatchUp{Mode: schedule.CatchUpAll, Max: 10})
	require.Len(t, p.Late, maxLateSkips)
	require.Equal(t, 3539-maxLateSkips, p.MoreLate) // 00:00:01 .. 00:58:59
	require.Len(t, p.Skip, 51)                      // 00:59:00 .. 00:59:50, exactly the deadline old counts as within
	require.Len(t, p.Run, 10)
	require.True(t, t0.Add(time.Hour).Equal(p.Run[9]))
	// No deadline: everything is within.
	p = PlanCatchUp(e, t0, t0.Add(time.Minute), 0, schedule.CatchUp{Mode: schedule.CatchUpLatest, Max: 1})
	require.Empty(t, p.Late)
	require.Len(t, p.Skip, 59)
	require.Len(t, p.Run, 1)
}

func TestDeadlinePassedWhenLate(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	h := newHarness(t, t0, nil)
	sp := spec("late", "rate(1 minute)", "UTC")
	sp.Timing.StartingDeadline = durationpb.New(90 * time.Second)
	require.NoError(t, h.eng.Upsert(sp))
	h.lead.set(true)
	h.step(1)
	require.Equal(t, 1, h.run.count())
	// The process stalls for ten minutes: the 10:02 fire is skipped as
	// too late; the fires within the deadline (10:10, 10:11) still run.
	h.clk.Set(t0.Add(11*time.Minute + 30*time.Second))
	require.Eventually(t, func() bool { return h.decisions() == 4 }, 5*time.Second, time.Millisecond)
	s := h.skips()
	require.Len(t, s, 1)
	require.Equal(t, v1.SkipReason_SKIP_REASON_DEADLINE_PASSED, s[0].Reason)
	require.True(t, t0.Add(2*time.Minute).Equal(s[0].ScheduledAt.AsTime()))
	got := h.run.times()
	require.True(t, t0.Add(10*time.Minute).Equal(got[1]))
	require.True(t, t0.Add(11*time.Minute).Equal(got[2]))
}

func TestConcurrencyPolicies(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	t.Run("forbid", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, t0, nil)
		sp := spec("f", "rate(1 minute)", "UTC")
		sp.Timing.Concurrency = "forbid"
		require.NoError(t, h.eng.Upsert(sp))
		h.lead.set(true)
		h.step(1) // 10:01 runs
		h.step(1) // 10:02: the 10:01 task is still RUNNING
		s := h.skips()
		require.Len(t, s, 1)
		require.Equal(t, v1.SkipReason_SKIP_REASON_CONCURRENCY_FORBID, s[0].Reason)
		require.Contains(t, s[0].Detail, h.run.runs[0].RunID)
		// The task stops: the next fire runs.
		h.eng.TaskEvent(&v1.TaskStateChanged{TaskArn: "task/" + h.run.runs[0].RunID, Schedule: "f", LastStatus: "STOPPED"})
		h.step(1)
		require.Equal(t, 2, h.run.count())
	})
	t.Run("replace", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, t0, nil)
		sp := spec("r", "rate(1 minute)", "UTC")
		sp.Timing.Concurrency = "replace"
		require.NoError(t, h.eng.Upsert(sp))
		h.lead.set(true)
		h.step(1)
		h.step(1)
		require.Equal(t, 2, h.run.count())
		require.Len(t, h.run.stops, 1)
		require.Equal(t, []string{"task/" + h.run.runs[0].RunID}, h.run.stops[0].ids)
		require.Contains(t, h.run.stops[0].reason, h.run.runs[1].RunID)
	})
	t.Run("allow", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, t0, nil)
		require.NoError(t, h.eng.Upsert(spec("a", "rate(1 minute)", "UTC")))
		h.lead.set(true)
		h.step(1)
		h.step(1)
		require.Equal(t, 2, h.run.count())
		require.Empty(t, h.run.stops)
		require.Len(t, h.eng.ActiveTasks("a"), 2)
	})
}

func TestClusterQuotaDisabledAndFailures(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	h := newHarness(t, t0, map[string]*schedule.Profile{"dev": {Name: "dev", Cluster: "dev", TaskLimit: 3}})
	sp := spec("q", "rate(1 minute)", "UTC")
	sp.Timing.TaskCount = 2
	require.NoError(t, h.eng.Upsert(sp))
	h.lead.set(true)
	h.run.mu.Lock()
	h.run.load = 2
	h.run.mu.Unlock()
	h.step(1)
	s := h.skips()
	require.Len(t, s, 1)
	require.Equal(t, v1.SkipReason_SKIP_REASON_CLUSTER_QUOTA, s[0].Reason)
	require.Contains(t, s[0].Detail, "taskLimit 3")

	h.run.mu.Lock()
	h.run.load = 1
	h.run.fail = []*v1.DispatchFailure{{Arn: "arn:aws:ecs:us-east-1:1:container-instance/x", Reason: "RESOURCE:MEMORY"}}
	h.run.mu.Unlock()
	h.step(1)
	require.Equal(t, 1, h.ofType("RunDispatchFailed"))

	sp2 := proto.Clone(sp).(*v1.ScheduleSpec)
	sp2.Timing.Enabled = false
	require.NoError(t, h.eng.Upsert(sp2))
	h.step(1)
	s = h.skips()
	require.Len(t, s, 2)
	require.Equal(t, v1.SkipReason_SKIP_REASON_DISABLED, s[1].Reason)
}

func TestNotLeaderDoesNotFire(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	h := newHarness(t, t0, nil)
	require.NoError(t, h.eng.Upsert(spec("n", "rate(1 minute)", "UTC")))
	h.clk.Set(t0.Add(3 * time.Minute))
	_, err := h.eng.Trigger(context.Background(), "n")
	require.ErrorIs(t, err, ErrNotLeader)
	require.Zero(t, h.run.count())
	// Becoming leader catches up from applied_at... none here (no state,
	// no applied_at): the next fire is 10:04.
	h.lead.set(true)
	at := h.step(1)
	require.True(t, t0.Add(4*time.Minute).Equal(at))
	id, err := h.eng.Trigger(context.Background(), "n")
	require.NoError(t, err)
	require.Contains(t, id, "-m-")
}

func TestClaimAheadRunsOnTime(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	h := newHarnessAhead(t, t0, nil, 300*time.Millisecond)
	require.NoError(t, h.eng.Upsert(spec("ahead", "rate(1 minute)", "UTC")))
	h.lead.set(true)
	fireAt := t0.Add(time.Minute)

	// The engine wakes 300 ms early and claims the fire in KV...
	var at time.Time
	require.Eventually(t, func() bool { var ok bool; at, ok = h.clk.NextTimer(); return ok }, 5*time.Second, time.Millisecond)
	require.True(t, fireAt.Add(-300*time.Millisecond).Equal(at))
	h.clk.Set(at)
	require.Eventually(t, func() bool {
		e, err := h.state.Get(context.Background(), "ahead")
		if err != nil {
			return false
		}
		st := &v1.ScheduleState{}
		return proto.Unmarshal(e.Value(), st) == nil && st.LastFire.AsTime().Equal(fireAt)
	}, 5*time.Second, time.Millisecond)
	// ...but calls the runner only at the fire time.
	require.Eventually(t, func() bool { n, ok := h.clk.NextTimer(); return ok && n.Equal(fireAt) }, 5*time.Second, time.Millisecond)
	require.Zero(t, h.run.count())
	h.clk.Set(fireAt)
	require.Eventually(t, func() bool { return h.run.count() == 1 }, 5*time.Second, time.Millisecond)
	require.True(t, fireAt.Equal(h.run.times()[0]))
}

// claimAhead moves the clock to the engine's claim-ahead wake-up and
// waits until n schedules have claimed fireAt in KV.
func (h *harness) claimAhead(fireAt time.Time, names ...string) {
	h.t.Helper()
	var at time.Time
	require.Eventually(h.t, func() bool { var ok bool; at, ok = h.clk.NextTimer(); return ok && at.Before(fireAt) }, 5*time.Second, time.Millisecond)
	h.clk.Set(at)
	for _, name := range names {
		require.Eventually(h.t, func() bool {
			e, err := h.state.Get(context.Background(), name)
			if err != nil {
				return false
			}
			st := &v1.ScheduleState{}
			return proto.Unmarshal(e.Value(), st) == nil && st.LastFire.AsTime().Equal(fireAt)
		}, 10*time.Second, time.Millisecond, "claim of %s", name)
	}
}

// TestParkedBurstRunsAtItsTime: a few hundred fires due at the same
// instant are claimed ahead, parked, and all handed to the runner at the
// fire time, each once, with every outcome published.
func TestParkedBurstRunsAtItsTime(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	h := newHarnessAhead(t, t0, nil, 500*time.Millisecond)
	var names []string
	for i := 0; i < 300; i++ {
		name := fmt.Sprintf("burst-%03d", i)
		names = append(names, name)
		require.NoError(t, h.eng.Upsert(spec(name, "rate(1 minute)", "UTC")))
	}
	h.lead.set(true)
	fireAt := t0.Add(time.Minute)
	h.claimAhead(fireAt, names...)
	require.Zero(t, h.run.count(), "nothing runs before the fire time")
	h.clk.Set(fireAt)
	require.Eventually(t, func() bool { return h.ofType("RunDispatched") == len(names) }, 10*time.Second, time.Millisecond)
	require.Equal(t, len(names), h.run.count())
	for _, at := range h.run.times() {
		require.True(t, fireAt.Equal(at))
	}
	seen := map[string]bool{}
	h.mu.Lock()
	for _, m := range h.events {
		if d, ok := m.(*v1.RunDispatched); ok {
			require.False(t, seen[d.GetRunId()], "run %s published twice", d.GetRunId())
			seen[d.GetRunId()] = true
		}
	}
	h.mu.Unlock()
}

// TestParkedFireRunsAfterLeadershipLossAndOnShutdown: a fire claimed
// ahead is decided; it is run at its time even when the leadership is lost
// or the engine is told to stop in between.
func TestParkedFireRunsAfterLeadershipLossAndOnShutdown(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	fireAt := t0.Add(time.Minute)

	h := newHarnessAhead(t, t0, nil, 500*time.Millisecond)
	require.NoError(t, h.eng.Upsert(spec("lost", "rate(1 minute)", "UTC")))
	h.lead.set(true)
	h.claimAhead(fireAt, "lost")
	h.lead.set(false)
	require.Eventually(t, func() bool { return !h.eng.Leading() }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { n, ok := h.clk.NextTimer(); return ok && n.Equal(fireAt) }, 5*time.Second, time.Millisecond)
	require.Zero(t, h.run.count())
	h.clk.Set(fireAt)
	require.Eventually(t, func() bool { return h.run.count() == 1 && h.ofType("RunDispatched") == 1 }, 5*time.Second, time.Millisecond)

	h2 := newHarnessAhead(t, t0, nil, 500*time.Millisecond)
	require.NoError(t, h2.eng.Upsert(spec("stopping", "rate(1 minute)", "UTC")))
	h2.lead.set(true)
	h2.claimAhead(fireAt, "stopping")
	h2.cancel()
	select {
	case <-h2.done:
		t.Fatal("Run returned before its claimed fire was run")
	case <-time.After(100 * time.Millisecond):
	}
	require.Eventually(t, func() bool { n, ok := h2.clk.NextTimer(); return ok && n.Equal(fireAt) }, 5*time.Second, time.Millisecond)
	h2.clk.Set(fireAt)
	<-h2.done
	require.Equal(t, 1, h2.run.count())
	require.True(t, fireAt.Equal(h2.run.times()[0]))
	require.Eventually(t, func() bool { return h2.ofType("RunDispatched") == 1 }, 5*time.Second, time.Millisecond, "the outcome is published before Run returns")
}

func TestRunFinishedRecordsLastOutcome(t *testing.T) {
	t.Parallel()
	t0 := mustTime(t, "2026-06-01T10:00:00Z")
	h := newHarness(t, t0, nil)
	require.NoError(t, h.eng.Upsert(spec("o", "rate(1 minute)", "UTC")))
	h.lead.set(true)
	h.step(1)
	runID := h.run.runs[0].RunID
	h.eng.RunFinished(&v1.RunFinished{RunId: runID, Schedule: "o", Outcome: v1.Outcome_OUTCOME_FAILED})
	require.Eventually(t, func() bool {
		e, err := h.state.Get(context.Background(), "o")
		if err != nil {
			return false
		}
		st := &v1.ScheduleState{}
		return proto.Unmarshal(e.Value(), st) == nil && st.LastOutcome == v1.Outcome_OUTCOME_FAILED && st.LastRunId == runID
	}, 5*time.Second, time.Millisecond)
	// The next claim keeps working on top of the outcome write.
	h.step(1)
	require.Equal(t, 2, h.run.count())
}
