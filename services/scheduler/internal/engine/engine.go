// Package engine is the scheduler's core: one timer over a heap of next
// fires, the leader-only dispatch path (deadline, concurrency policy,
// cluster task-limit guard, claim in KV taskyard-state, runner call,
// outcome published with the run id as Nats-Msg-Id) and the takeover
// catch-up.
//
// Every fire of a schedule goes through that schedule's queue, drained by
// at most one goroutine at a time, so the fires of one schedule are decided
// in order while different schedules never wait on each other. Before a
// scheduled fire is run or skipped it is claimed: the schedule's
// ScheduleState in KV is updated with a revision check to last_fire = the
// fire's time. A new leader resumes after last_fire, so a fire is decided
// once even across a failover; a fire claimed but not decided (the leader
// died between the claim and the runner call) is re-run by the new leader
// with the same run id, which ECS de-duplicates through clientToken.
//
// The outcome of a scheduled fire (RunDispatched, RunSkipped,
// RunDispatchFailed) is published by a few outbox goroutines, not by the
// fire's own: at a minute or hour boundary thousands of fires are due in
// the same instant, and a JetStream publish with its ack costs several
// times what the path from the timer to the runner does. With the outbox
// the fires get the cores first and the outcomes follow, each still
// retried and de-duplicated by its run id. Manual triggers publish before
// they reply.
package engine

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/clock"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

// Leadership tells the engine whether it may dispatch.
type Leadership interface {
	// Leading is checked immediately before every claim.
	Leading() bool
	// Changes delivers true on gaining and false on losing leadership.
	Changes() <-chan bool
}

// Config wires an Engine.
type Config struct {
	Prefix   string
	Instance string
	Clock    clock.Clock
	Runner   runner.Runner
	// Profiles by name; a schedule naming an absent profile runs with a nil
	// profile (fine for exec, a dispatch failure for ecs).
	Profiles map[string]*schedule.Profile
	JS       jetstream.JetStream
	// State is KV taskyard-state.
	State  jetstream.KeyValue
	Leader Leadership
	Log    *slog.Logger
	Meter  metric.MeterProvider
	Tracer trace.TracerProvider
	// DispatchTimeout bounds one dispatch (claim, runner call) and,
	// separately, the publishing of its outcome. Default 2 minutes.
	DispatchTimeout time.Duration
	// Lookahead claims a fire this long before its time, so that the KV
	// round trip of the claim is not part of the dispatch lag; the runner
	// is still called at the fire time. 0 claims at the fire time.
	Lookahead time.Duration
}

// ErrNotLeader is returned by Trigger on an instance that does not lead.
var ErrNotLeader = errors.New("this scheduler instance is not the leader")

// ErrUnknownSchedule is returned for names not in KV taskyard-schedules.
var ErrUnknownSchedule = errors.New("unknown schedule")

// maxLateSkips bounds the RunSkipped events published for fires that are
// older than startingDeadline at takeover; the last one's detail says how
// many more there were.
const maxLateSkips = 100

type fireKind int

const (
	kindFire    fireKind = iota
	kindOutcome          // record a RunFinished outcome in the state
)

type fire struct {
	kind    fireKind
	at      time.Time
	trigger v1.Trigger
	// skip, when set, is the decision already taken (catch-up policy).
	skip   v1.SkipReason
	detail string
	// redo: the fire is already claimed but undecided (in-doubt after a
	// failover); run it without claiming again.
	redo    bool
	epoch   uint64
	outcome v1.Outcome
	runID   string
	reply   chan triggerResult // manual triggers wait for the decision
}

type triggerResult struct {
	runID string
	err   error
}

type entry struct {
	name string
	spec *v1.ScheduleSpec
	expr schedule.Expr // nil for manual schedules
	next time.Time
	hidx int // index in the heap, -1 when not in it

	queue []fire
	busy  bool

	// Leader state, touched only by the entry's worker (and by takeover
	// before any worker of the new epoch runs).
	st       *v1.ScheduleState
	rev      uint64
	stLoaded bool
}

// Engine schedules and dispatches.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	subj   v1.Subjects
	tracer trace.Tracer
	m      metrics

	mu      sync.Mutex
	entries map[string]*entry
	heap    fireHeap
	leading bool
	epoch   uint64
	baseCtx context.Context
	wake    chan struct{}
	workers sync.WaitGroup
	// parked holds fires claimed ahead of their time, earliest first. Their
	// entry's worker has let its goroutine go (the entry stays busy); the
	// timer loop resumes each at its time on a fresh goroutine, so a burst
	// of claimed fires costs no parked goroutines and no timers.
	parked  parkedHeap
	running bool // Run's loop runs (fires may be parked)

	// outbox carries outcomes to the publisher goroutines while Run runs
	// (nil otherwise: outcomes are published inline).
	outbox     atomic.Pointer[chan outcomeMsg]
	publishers sync.WaitGroup

	amu     sync.Mutex
	active  map[string]map[string]string // schedule -> task id -> run id
	stopped map[string]time.Time         // task id -> when seen STOPPED
}

// outcomeMsg is one outcome waiting in the outbox.
type outcomeMsg struct {
	ctx     context.Context // carries the dispatch span for traceparent
	subject string
	msg     proto.Message
	id      string
}

// outboxPublishers is the number of goroutines publishing outcomes; each
// waits for its JetStream ack, so this many publishes are in flight.
const outboxPublishers = 4

// New builds an Engine; call Run.
func New(cfg Config) (*Engine, error) {
	if cfg.DispatchTimeout <= 0 {
		cfg.DispatchTimeout = 2 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	m, err := newMetrics(cfg.Meter)
	if err != nil {
		return nil, err
	}
	return &Engine{
		cfg:     cfg,
		log:     cfg.Log,
		subj:    v1.Subjects{Prefix: cfg.Prefix},
		tracer:  cfg.Tracer.Tracer("github.com/taskyard/taskyard/services/scheduler/internal/engine"),
		m:       m,
		entries: map[string]*entry{},
		wake:    make(chan struct{}, 1),
		active:  map[string]map[string]string{},
		stopped: map[string]time.Time{},
		baseCtx: context.Background(),
	}, nil
}

// ParseTiming returns the spec's expression (nil for manual schedules).
func ParseTiming(spec *v1.ScheduleSpec) (schedule.Expr, error) {
	t := spec.GetTiming()
	if t.GetExpression() == "" {
		return nil, nil
	}
	loc := time.UTC
	if tz := t.GetTimezone(); tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("schedule %s: timezone %q: %w", spec.GetName(), tz, err)
		}
		loc = l
	}
	var anchor time.Time
	if spec.GetAnchor() != nil {
		anchor = spec.GetAnchor().AsTime()
	}
	e, err := schedule.ParseExpr(t.GetExpression(), loc, anchor)
	if err != nil {
		return nil, fmt.Errorf("schedule %s: expression: %w", spec.GetName(), err)
	}
	return e, nil
}

func timingKey(s *v1.ScheduleSpec) string {
	if s == nil {
		return ""
	}
	return s.GetTiming().GetExpression() + "\x00" + s.GetTiming().GetTimezone() + "\x00" + s.GetAnchor().AsTime().String()
}

// Upsert adds or replaces a schedule. A changed expression, time zone or
// anchor restarts the schedule's fires from now.
func (e *Engine) Upsert(spec *v1.ScheduleSpec) error {
	expr, err := ParseTiming(spec)
	if err != nil {
		return err
	}
	now := e.cfg.Clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.entries[spec.GetName()]
	if !ok {
		en = &entry{name: spec.GetName(), hidx: -1}
		e.entries[en.name] = en
	}
	retime := !ok || timingKey(en.spec) != timingKey(spec)
	en.spec, en.expr = spec, expr
	if retime {
		en.next = time.Time{}
		if expr != nil {
			en.next = expr.Next(now)
		}
		e.fix(en)
	}
	e.poke()
	return nil
}

// Remove forgets a schedule.
func (e *Engine) Remove(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.entries[name]
	if !ok {
		return
	}
	en.next = time.Time{}
	e.fix(en)
	delete(e.entries, name)
	e.poke()
}

// Spec returns the schedule's spec as the engine knows it.
func (e *Engine) Spec(name string) (*v1.ScheduleSpec, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.entries[name]
	if !ok {
		return nil, false
	}
	return en.spec, true
}

// Len returns how many schedules the engine holds.
func (e *Engine) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.entries)
}

// fix puts en into, moves it within, or takes it out of the heap. e.mu held.
func (e *Engine) fix(en *entry) {
	switch {
	case en.next.IsZero() && en.hidx >= 0:
		heap.Remove(&e.heap, en.hidx)
	case en.next.IsZero():
	case en.hidx >= 0:
		heap.Fix(&e.heap, en.hidx)
	default:
		heap.Push(&e.heap, en)
	}
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Leading reports whether the engine currently acts as leader.
func (e *Engine) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading && e.cfg.Leader.Leading()
}

// Run is the timer loop. It returns when ctx is done, after the fires
// being dispatched have been decided.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	// Dispatches outlive ctx: a fire that was claimed is run and published
	// even when the instance is told to stop, or it would be lost.
	e.baseCtx = context.WithoutCancel(ctx)
	out := make(chan outcomeMsg, 4096)
	e.outbox.Store(&out)
	e.running = true
	e.mu.Unlock()
	for i := 0; i < outboxPublishers; i++ {
		e.publishers.Add(1)
		go e.publishOutbox(out)
	}
	// Last: every claimed fire is decided, then every outcome published.
	defer func() {
		e.outbox.Store(nil)
		close(out)
		e.publishers.Wait()
	}()
	defer e.workers.Wait()
	defer func() {
		e.mu.Lock()
		e.leading = false
		e.epoch++
		e.running = false
		// Claimed fires are still run, each at its time.
		for len(e.parked) > 0 {
			p := heap.Pop(&e.parked).(*parkedFire)
			go func() {
				if wait := p.f.at.Sub(e.cfg.Clock.Now()); wait > 0 {
					t := e.cfg.Clock.NewTimer(wait)
					<-t.C()
				}
				e.resume(p)
			}()
		}
		e.mu.Unlock()
	}()

	var timer clock.Timer
	stop := func() {
		if timer != nil {
			timer.Stop()
			timer = nil
		}
	}
	defer stop()
	for {
		var tc <-chan time.Time
		e.mu.Lock()
		now := e.cfg.Clock.Now()
		// Claimed fires run even after leadership was lost: they were
		// decided while leading. They start after e.mu is released.
		due := e.popDue(now)
		var next time.Time
		if len(e.parked) > 0 {
			next = e.parked[0].f.at
		}
		if e.leading {
			e.fireDue(now, now.Add(e.cfg.Lookahead))
			if len(e.heap) > 0 {
				if at := e.heap[0].next.Add(-e.cfg.Lookahead); next.IsZero() || at.Before(next) {
					next = at
				}
			}
		}
		if !next.IsZero() {
			stop()
			timer = e.cfg.Clock.NewTimer(next.Sub(e.cfg.Clock.Now()))
			tc = timer.C()
		}
		e.mu.Unlock()
		for _, p := range due {
			go e.resume(p)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tc:
		case <-e.wake:
		case leading := <-e.cfg.Leader.Changes():
			if leading {
				e.takeover(ctx)
			} else {
				e.mu.Lock()
				e.leading = false
				e.epoch++
				e.mu.Unlock()
				e.m.leader.Record(ctx, 0)
			}
		}
	}
}

// fireDue queues every fire due by horizon (now plus the lookahead). e.mu
// held.
func (e *Engine) fireDue(now, horizon time.Time) {
	for len(e.heap) > 0 && !e.heap[0].next.After(horizon) {
		en := e.heap[0]
		at := en.next
		f := fire{at: at, trigger: v1.Trigger_TRIGGER_SCHEDULE, epoch: e.epoch}
		next := en.expr.Next(at)
		if dl := deadline(en.spec); dl > 0 && now.Sub(at) > dl {
			// Far behind (the process was suspended): skip this one and
			// resume with the fires still within the deadline.
			f.skip = v1.SkipReason_SKIP_REASON_DEADLINE_PASSED
			f.detail = fmt.Sprintf("fire is %s late, startingDeadline is %s", now.Sub(at).Round(time.Millisecond), dl)
			next = en.expr.Next(now.Add(-dl - time.Nanosecond))
		}
		en.next = next
		e.fix(en)
		e.enqueue(en, f)
	}
}

// enqueue appends f to the entry's queue and starts its worker. e.mu held.
func (e *Engine) enqueue(en *entry, f fire) {
	en.queue = append(en.queue, f)
	if en.busy {
		return
	}
	en.busy = true
	e.workers.Add(1)
	go e.work(en)
}

func (e *Engine) work(en *entry) {
	defer e.workers.Done()
	for {
		e.mu.Lock()
		if len(en.queue) == 0 {
			en.busy = false
			e.mu.Unlock()
			return
		}
		f := en.queue[0]
		en.queue[0] = fire{}
		en.queue = en.queue[1:]
		spec, epoch, base := en.spec, e.epoch, e.baseCtx
		e.mu.Unlock()

		if f.epoch != epoch || !e.cfg.Leader.Leading() {
			if f.reply != nil {
				f.reply <- triggerResult{err: ErrNotLeader}
			}
			continue
		}
		ctx, cancel := context.WithTimeout(base, e.cfg.DispatchTimeout)
		switch f.kind {
		case kindOutcome:
			e.recordOutcome(ctx, en, f)
		default:
			c := e.prepare(ctx, en, spec, f)
			if c.err == nil && c.claimed && f.at.After(e.cfg.Clock.Now()) {
				// Claimed ahead of time: the timer loop resumes this
				// entry's work at the fire time on a new goroutine. The
				// entry stays busy and this worker stays counted.
				e.mu.Lock()
				if e.running {
					c.cancel = cancel
					heap.Push(&e.parked, &parkedFire{en: en, spec: spec, f: f, c: c})
					e.workers.Add(1) // carried by the parked fire
					e.mu.Unlock()
					e.poke()
					return
				}
				e.mu.Unlock() // Run is ending: wait here (finish does)
			}
			runID, err := c.runID, c.err
			if c.claimed {
				runID, err = e.finish(c.ctx, spec, f, c)
			}
			c.span.End()
			if f.reply != nil {
				f.reply <- triggerResult{runID: runID, err: err}
			}
		}
		cancel()
	}
}

// parkedFire is a claimed fire waiting for its time.
type parkedFire struct {
	en   *entry
	spec *v1.ScheduleSpec
	f    fire
	c    prepared
	idx  int
}

type parkedHeap []*parkedFire

func (h parkedHeap) Len() int           { return len(h) }
func (h parkedHeap) Less(i, j int) bool { return h[i].f.at.Before(h[j].f.at) }
func (h parkedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx, h[j].idx = i, j }
func (h *parkedHeap) Push(x any)        { p := x.(*parkedFire); p.idx = len(*h); *h = append(*h, p) }
func (h *parkedHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}

// popDue takes every parked fire whose time has come, earliest first.
// e.mu held.
func (e *Engine) popDue(now time.Time) []*parkedFire {
	var due []*parkedFire
	for len(e.parked) > 0 && !e.parked[0].f.at.After(now) {
		due = append(due, heap.Pop(&e.parked).(*parkedFire))
	}
	return due
}

// resume finishes a parked fire and goes on with its entry's queue.
func (e *Engine) resume(p *parkedFire) {
	runID, err := e.finish(p.c.ctx, p.spec, p.f, p.c)
	p.c.span.End()
	if p.f.reply != nil {
		p.f.reply <- triggerResult{runID: runID, err: err}
	}
	p.c.cancel()
	// Continue as the entry's worker (the WaitGroup count carried over).
	e.work(p.en)
}

func deadline(spec *v1.ScheduleSpec) time.Duration {
	if d := spec.GetTiming().GetStartingDeadline(); d != nil {
		return d.AsDuration()
	}
	return schedule.DefaultStartingDeadline
}

func enabled(spec *v1.ScheduleSpec) bool {
	return spec.GetTiming() == nil || spec.GetTiming().GetEnabled()
}

// prepared is a fire after its claim.
type prepared struct {
	ctx     context.Context // carries the dispatch span
	span    trace.Span
	runID   string
	claimed bool // go on to decide and run (false: decided before, or err)
	err     error
	cancel  context.CancelFunc // set when parked
}

// prepare starts the fire's span and claims it (scheduled fires only).
func (e *Engine) prepare(ctx context.Context, en *entry, spec *v1.ScheduleSpec, f fire) prepared {
	runID := v1.RunID(spec.GetName(), f.at, f.trigger)
	ctx, span := e.tracer.Start(ctx, "scheduler.dispatch", trace.WithAttributes(
		attribute.String("taskyard.schedule", spec.GetName()),
		attribute.String("taskyard.run_id", runID),
		attribute.String("taskyard.trigger", f.trigger.String()),
		attribute.String("taskyard.scheduled_at", f.at.UTC().Format(time.RFC3339Nano)),
	))
	c := prepared{ctx: ctx, span: span, runID: runID, claimed: true}
	if f.trigger != v1.Trigger_TRIGGER_MANUAL && !f.redo {
		ok, err := e.claim(ctx, en, f, runID, e.cfg.Clock.Now())
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "claim")
			e.log.Error("claim fire", "schedule", spec.GetName(), "run_id", runID, "err", err)
			c.claimed, c.err = false, err
		} else if !ok {
			c.claimed = false // decided before (by us or a previous leader)
		}
	}
	return c
}

// finish decides a claimed fire at its time (the caller has waited for
// it): skip, or call the runner, then publish the outcome. It returns the
// run id.
func (e *Engine) finish(ctx context.Context, spec *v1.ScheduleSpec, f fire, c prepared) (string, error) {
	runID, span := c.runID, c.span
	trig := attribute.String("trigger", triggerName(f.trigger))
	if wait := f.at.Sub(e.cfg.Clock.Now()); wait > 0 {
		// Not parked (no Run loop, or resumed at shutdown early): wait.
		t := e.cfg.Clock.NewTimer(wait)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
		}
	}
	now := e.cfg.Clock.Now()
	skip, detail := f.skip, f.detail
	var active []string
	if skip == v1.SkipReason_SKIP_REASON_UNSPECIFIED {
		skip, detail, active = e.decide(ctx, spec, f, now)
	}
	if skip != v1.SkipReason_SKIP_REASON_UNSPECIFIED {
		e.m.fires.Add(ctx, 1, metric.WithAttributes(trig))
		span.SetAttributes(attribute.String("taskyard.decision", "skipped"), attribute.String("taskyard.skip_reason", skip.String()))
		e.m.skips.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", skipName(skip))))
		e.emit(ctx, f, e.subj.RunSkipped(spec.GetName()), &v1.RunSkipped{
			RunId: runID, Schedule: spec.GetName(), Cluster: spec.GetCluster(),
			ScheduledAt: timestamppb.New(f.at), DecidedAt: timestamppb.New(now),
			Trigger: f.trigger, Reason: skip, Detail: detail, Instance: e.cfg.Instance,
		}, runID)
		if f.trigger == v1.Trigger_TRIGGER_MANUAL {
			return runID, fmt.Errorf("run %s skipped: %s: %s", runID, skipName(skip), detail)
		}
		return runID, nil
	}

	profile := e.cfg.Profiles[spec.GetCluster()]
	if spec.GetTiming().GetConcurrency() == string(schedule.ConcurrencyReplace) && len(active) > 0 {
		reason := "taskyard: replaced by run " + runID
		if err := e.cfg.Runner.Stop(ctx, spec, profile, active, reason); err != nil {
			e.log.Warn("stop replaced tasks", "schedule", spec.GetName(), "run_id", runID, "tasks", active, "err", err)
		}
	}

	req := runner.Request{
		RunID: runID, Spec: spec, Profile: profile, ScheduledAt: f.at, Trigger: f.trigger,
		TraceParent: traceParent(ctx),
	}
	start := e.cfg.Clock.Now()
	res, err := e.cfg.Runner.Run(ctx, req)
	e.addActive(spec.GetName(), runID, res.TaskIDs)
	done := e.cfg.Clock.Now()
	// Everything below (metrics, building and publishing the outcome) is
	// off the dispatch lag of this fire but not of the others due at the
	// same instant, which wait for a core: at a minute boundary thousands
	// of fires wake together. Yield so that they reach the runner first.
	runtime.Gosched()
	e.m.fires.Add(ctx, 1, metric.WithAttributes(trig))
	if f.trigger != v1.Trigger_TRIGGER_MANUAL {
		e.m.lag.Record(ctx, start.Sub(f.at).Seconds(), metric.WithAttributes(trig))
	}
	if err != nil || len(res.Failures) > 0 {
		kind := "failures"
		if err != nil {
			kind = "api"
			span.RecordError(err)
		}
		span.SetStatus(codes.Error, "dispatch failed")
		span.SetAttributes(attribute.String("taskyard.decision", "dispatch_failed"))
		e.m.runErrors.Add(ctx, 1, metric.WithAttributes(attribute.String("runner", e.cfg.Runner.Name()), attribute.String("kind", kind)))
		msg := &v1.RunDispatchFailed{
			RunId: runID, Schedule: spec.GetName(), Cluster: spec.GetCluster(),
			ScheduledAt: timestamppb.New(f.at), FailedAt: timestamppb.New(done),
			Trigger: f.trigger, Runner: e.cfg.Runner.Name(), Failures: res.Failures,
			Instance: e.cfg.Instance, TaskIds: res.TaskIDs,
		}
		if err != nil {
			msg.Error = err.Error()
		}
		e.log.Warn("dispatch failed", "schedule", spec.GetName(), "run_id", runID, "err", msg.Error, "failures", len(res.Failures))
		e.emit(ctx, f, e.subj.RunDispatchFailed(spec.GetName()), msg, runID)
		if f.trigger == v1.Trigger_TRIGGER_MANUAL {
			return runID, fmt.Errorf("run %s: dispatch failed: %s", runID, failureText(msg))
		}
		return runID, nil
	}
	span.SetAttributes(attribute.String("taskyard.decision", "dispatched"), attribute.Int("taskyard.tasks", len(res.TaskIDs)))
	msg := &v1.RunDispatched{
		RunId: runID, Schedule: spec.GetName(), Cluster: spec.GetCluster(),
		ScheduledAt: timestamppb.New(f.at), DecidedAt: timestamppb.New(start), DispatchedAt: timestamppb.New(done),
		Trigger: f.trigger, Runner: e.cfg.Runner.Name(), TaskIds: res.TaskIDs,
		TaskDefinition: res.TaskDefinition, Instance: e.cfg.Instance,
		TaskCount: taskCount(spec),
	}
	if to := spec.GetTiming().GetTimeout(); to != nil && to.AsDuration() > 0 {
		msg.Timeout = durationpb.New(to.AsDuration())
	}
	e.log.Info("dispatched", "schedule", spec.GetName(), "run_id", runID, "trigger", triggerName(f.trigger), "scheduled_at", f.at, "lag", start.Sub(f.at), "tasks", len(res.TaskIDs))
	e.emit(ctx, f, e.subj.RunDispatched(spec.GetName()), msg, runID)
	return runID, nil
}

// decide applies enabled, startingDeadline, the concurrency policy and the
// cluster task-limit guard. It returns the schedule's active task ids for
// the replace policy.
func (e *Engine) decide(ctx context.Context, spec *v1.ScheduleSpec, f fire, now time.Time) (v1.SkipReason, string, []string) {
	if f.trigger != v1.Trigger_TRIGGER_MANUAL {
		if !enabled(spec) {
			return v1.SkipReason_SKIP_REASON_DISABLED, "schedule is disabled", nil
		}
		if dl := deadline(spec); dl > 0 && now.Sub(f.at) > dl {
			return v1.SkipReason_SKIP_REASON_DEADLINE_PASSED, fmt.Sprintf("decided %s after the fire time, startingDeadline is %s", now.Sub(f.at).Round(time.Millisecond), dl), nil
		}
	}
	active, runs := e.activeTasks(spec.GetName())
	if len(active) > 0 && spec.GetTiming().GetConcurrency() == string(schedule.ConcurrencyForbid) {
		return v1.SkipReason_SKIP_REASON_CONCURRENCY_FORBID, fmt.Sprintf("%d task(s) of run(s) %v not STOPPED", len(active), runs), nil
	}
	if p := e.cfg.Profiles[spec.GetCluster()]; p != nil && p.TaskLimit > 0 {
		load, err := e.cfg.Runner.ClusterLoad(ctx, p)
		switch {
		case err != nil:
			// Unknown load: dispatch and let ECS decide rather than
			// silently skip.
			e.log.Warn("cluster load", "cluster", p.Name, "err", err)
		case load+int(taskCount(spec)) > p.TaskLimit:
			return v1.SkipReason_SKIP_REASON_CLUSTER_QUOTA, fmt.Sprintf("cluster %s runs %d task(s); %d more would exceed taskLimit %d", p.Name, load, taskCount(spec), p.TaskLimit), nil
		}
	}
	return v1.SkipReason_SKIP_REASON_UNSPECIFIED, "", active
}

func taskCount(spec *v1.ScheduleSpec) int32 {
	if n := spec.GetTiming().GetTaskCount(); n > 0 {
		return n
	}
	return 1
}

// claim records f as decided in KV taskyard-state. It returns false when
// the fire was already decided.
func (e *Engine) claim(ctx context.Context, en *entry, f fire, runID string, now time.Time) (bool, error) {
	var (
		attempted []*timestamppb.Timestamp // updated_at of writes whose outcome we do not know
		lastErr   error
	)
	for attempt := 0; attempt < 6; attempt++ {
		if !en.stLoaded {
			if err := e.loadState(ctx, en); err != nil {
				lastErr = err
				if !sleepCtx(ctx, time.Duration(50<<attempt)*time.Millisecond) {
					break
				}
				continue
			}
		}
		if st := en.st; st != nil && st.GetLastFire() != nil && !f.at.After(st.GetLastFire().AsTime()) {
			// Decided before — unless it is our own write whose reply was
			// lost (same run id, and the updated_at we wrote, to the
			// nanosecond).
			mine := false
			for _, at := range attempted {
				mine = mine || (st.GetLastRunId() == runID && proto.Equal(st.GetUpdatedAt(), at))
			}
			return mine, nil
		}
		if !e.cfg.Leader.Leading() {
			return false, nil
		}
		st := &v1.ScheduleState{Schedule: en.name}
		if en.st != nil {
			st = proto.Clone(en.st).(*v1.ScheduleState)
		}
		st.LastFire = timestamppb.New(f.at)
		st.LastRunId = runID
		st.UpdatedAt = timestamppb.New(now.Add(time.Duration(attempt)))
		st.NextFire = nil
		if en.expr != nil {
			if n := en.expr.Next(f.at); !n.IsZero() {
				st.NextFire = timestamppb.New(n)
			}
		}
		data, err := proto.Marshal(st)
		if err != nil {
			return false, err
		}
		var rev uint64
		if en.rev == 0 {
			rev, err = e.cfg.State.Create(ctx, en.name, data)
		} else {
			rev, err = e.cfg.State.Update(ctx, en.name, data, en.rev)
		}
		if err == nil {
			en.st, en.rev = st, rev
			return true, nil
		}
		en.stLoaded = false
		if isConflict(err) {
			continue
		}
		// Timeout or disconnect: the write may or may not have happened;
		// re-read and retry.
		attempted, lastErr = append(attempted, st.UpdatedAt), err
		if !sleepCtx(ctx, time.Duration(50<<attempt)*time.Millisecond) {
			break
		}
	}
	if lastErr == nil {
		lastErr = errors.New("too many concurrent updates")
	}
	return false, fmt.Errorf("claim %s in state: %w", runID, lastErr)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Engine) loadState(ctx context.Context, en *entry) error {
	kve, err := e.cfg.State.Get(ctx, en.name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		en.st, en.rev = nil, 0
	case err != nil:
		return fmt.Errorf("read state of %s: %w", en.name, err)
	default:
		st := &v1.ScheduleState{}
		if err := proto.Unmarshal(kve.Value(), st); err != nil {
			return fmt.Errorf("decode state of %s: %w", en.name, err)
		}
		en.st, en.rev = st, kve.Revision()
	}
	en.stLoaded = true
	return nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}

// recordOutcome stores a finished run's outcome in the schedule's state.
func (e *Engine) recordOutcome(ctx context.Context, en *entry, f fire) {
	for attempt := 0; attempt < 5; attempt++ {
		if !en.stLoaded {
			if err := e.loadState(ctx, en); err != nil {
				e.log.Warn("record outcome", "schedule", en.name, "err", err)
				return
			}
		}
		st := &v1.ScheduleState{Schedule: en.name}
		if en.st != nil {
			st = proto.Clone(en.st).(*v1.ScheduleState)
		}
		st.LastOutcome = f.outcome
		st.UpdatedAt = timestamppb.New(e.cfg.Clock.Now())
		data, _ := proto.Marshal(st)
		var rev uint64
		var err error
		if en.rev == 0 {
			rev, err = e.cfg.State.Create(ctx, en.name, data)
		} else {
			rev, err = e.cfg.State.Update(ctx, en.name, data, en.rev)
		}
		if err == nil {
			en.st, en.rev = st, rev
			return
		}
		if !isConflict(err) {
			e.log.Warn("record outcome", "schedule", en.name, "err", err)
			return
		}
		en.stLoaded = false
	}
}

// RunFinished records a run's outcome as the schedule's last outcome (leader
// only; other instances ignore it).
func (e *Engine) RunFinished(rf *v1.RunFinished) {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.entries[rf.GetSchedule()]
	if !ok || !e.leading {
		return
	}
	e.enqueue(en, fire{kind: kindOutcome, outcome: rf.GetOutcome(), runID: rf.GetRunId(), epoch: e.epoch})
}

// Trigger runs the schedule now (manual trigger) and returns the run id
// once the run is dispatched, or the reason it was not.
func (e *Engine) Trigger(ctx context.Context, name string) (string, error) {
	e.mu.Lock()
	en, ok := e.entries[name]
	if !ok {
		e.mu.Unlock()
		return "", fmt.Errorf("%w %q", ErrUnknownSchedule, name)
	}
	if !e.leading || !e.cfg.Leader.Leading() {
		e.mu.Unlock()
		return "", ErrNotLeader
	}
	reply := make(chan triggerResult, 1)
	e.enqueue(en, fire{at: e.cfg.Clock.Now(), trigger: v1.Trigger_TRIGGER_MANUAL, epoch: e.epoch, reply: reply})
	e.mu.Unlock()
	select {
	case r := <-reply:
		return r.runID, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Next returns the schedule's next fire as the engine will dispatch it
// (zero when not leading or when it has none).
func (e *Engine) Next(name string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if en, ok := e.entries[name]; ok && e.leading {
		return en.next
	}
	return time.Time{}
}

// emit publishes the outcome of f: through the outbox for scheduled fires
// while Run runs, inline for manual triggers (whose caller is told the
// outcome only once it is published) and when there is no outbox.
func (e *Engine) emit(ctx context.Context, f fire, subject string, m proto.Message, msgID string) {
	if f.reply == nil {
		if out := e.outbox.Load(); out != nil {
			// The dispatch's own context ends when dispatch returns; the
			// outcome keeps only its values (the span, for traceparent).
			*out <- outcomeMsg{ctx: context.WithoutCancel(ctx), subject: subject, msg: m, id: msgID}
			return
		}
	}
	e.publish(ctx, subject, m, msgID)
}

// publishOutbox publishes outcomes until the outbox is closed and empty.
func (e *Engine) publishOutbox(out <-chan outcomeMsg) {
	defer e.publishers.Done()
	for o := range out {
		ctx, cancel := context.WithTimeout(o.ctx, e.cfg.DispatchTimeout)
		e.publish(ctx, o.subject, o.msg, o.id)
		cancel()
	}
}

func (e *Engine) publish(ctx context.Context, subject string, m proto.Message, msgID string) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if _, err = v1.Publish(ctx, e.cfg.JS, subject, m, msgID); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			attempt = 5
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		}
	}
	e.m.publishErrors.Add(ctx, 1)
	e.log.Error("publish outcome", "subject", subject, "msg_id", msgID, "err", err)
}

func traceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

func triggerName(t v1.Trigger) string {
	switch t {
	case v1.Trigger_TRIGGER_SCHEDULE:
		return "schedule"
	case v1.Trigger_TRIGGER_MANUAL:
		return "manual"
	case v1.Trigger_TRIGGER_CATCHUP:
		return "catchup"
	}
	return "unspecified"
}

func skipName(r v1.SkipReason) string {
	switch r {
	case v1.SkipReason_SKIP_REASON_CONCURRENCY_FORBID:
		return "concurrency_forbid"
	case v1.SkipReason_SKIP_REASON_DEADLINE_PASSED:
		return "deadline_passed"
	case v1.SkipReason_SKIP_REASON_DISABLED:
		return "disabled"
	case v1.SkipReason_SKIP_REASON_CLUSTER_QUOTA:
		return "cluster_quota"
	}
	return "unspecified"
}

func failureText(m *v1.RunDispatchFailed) string {
	if m.GetError() != "" {
		return m.GetError()
	}
	s := ""
	for i, f := range m.GetFailures() {
		if i > 0 {
			s += "; "
		}
		s += f.GetReason()
		if f.GetDetail() != "" {
			s += " (" + f.GetDetail() + ")"
		}
	}
	return s
}

// fireHeap orders entries by next fire.
type fireHeap []*entry

func (h fireHeap) Len() int           { return len(h) }
func (h fireHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h fireHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *fireHeap) Push(x any) {
	en := x.(*entry)
	en.hidx = len(*h)
	*h = append(*h, en)
}
func (h *fireHeap) Pop() any {
	old := *h
	n := len(old)
	en := old[n-1]
	old[n-1] = nil
	en.hidx = -1
	*h = old[:n-1]
	return en
}
