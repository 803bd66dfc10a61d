// Package tracker follows every run from its dispatch decision to exactly
// one verdict. It consumes run and task events from the RUNS stream (a
// durable consumer shared by all exitwatch replicas), keeps each run's
// record in KV taskyard-runs with compare-and-set, publishes RunFinished
// and RunMissed, and raises the watch rules' alerts on
// taskyard.alert.<severity>.<kind>.
//
// Every decision to publish something is first written into the run
// record (RunRecord.alerted, e.g. "finished", "run_failed"); after the
// publish succeeds a "<kind>!" marker follows. Whoever wins the
// compare-and-set publishes, and a record with a decision but no marker is
// published again by the periodic sweep, so a crash between the two steps
// loses nothing and JetStream's Nats-Msg-Id de-duplication drops repeats.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/verdict"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
)

// Decision markers stored in RunRecord.alerted besides alert kinds.
const (
	markFinished = "finished"
	sentSuffix   = "!"
)

// Alert kinds.
const (
	KindRunFailed        = "run_failed"
	KindRunFailedToStart = "run_failed_to_start"
	KindStuckPending     = "task_stuck_pending"
	KindOverrun          = "run_overrun"
	KindMissed           = "run_missed"
	KindSkipped          = "run_skipped"
	KindNoSuccess        = "no_success"
	KindSilentRun        = "silent_run"
	KindOverlap          = "overlap"
	KindClusterCapacity  = "cluster_capacity"
	KindRecovered        = "recovered"
	KindSummary          = "summary"
)

// Cluster is what the rules know about a cluster profile.
type Cluster struct {
	// Name is the profile name (the cluster token of subjects).
	Name string
	// ECSCluster is the ECS cluster name the profile points at.
	ECSCluster string
	// TaskLimit is the profile's taskLimit; 0 disables cluster_capacity.
	TaskLimit int
}

// TaskStopper stops a task that ran past its timeout (ECS StopTask).
type TaskStopper interface {
	StopTask(ctx context.Context, cluster, taskArn, reason string) error
}

// Config tunes the tracker.
type Config struct {
	Prefix   string
	Instance string
	// LostAfter: a dispatched run with no task event after it is LOST.
	LostAfter time.Duration
	// StuckPendingAfter: a task not RUNNING this long after it was created
	// raises task_stuck_pending.
	StuckPendingAfter time.Duration
	// MissedGrace is added to a schedule's startingDeadline before an
	// expected fire with no decision is judged missed.
	MissedGrace time.Duration
	// SilentGrace is how long after a run finished its log counts may
	// still arrive before silent_run is judged.
	SilentGrace time.Duration
	// OverlapRuns is how many runs of a schedule with concurrency "allow"
	// may have tasks at once (forbid/replace allow one).
	OverlapRuns int
	// StopOverrun stops the tasks of a run past its timeout.
	StopOverrun bool
	// WatchUnmanaged raises exit alerts for tasks taskyard did not start.
	WatchUnmanaged bool
	// Clusters by profile name.
	Clusters map[string]Cluster
	// Workers process events in parallel, each run always on the same one.
	Workers int
	// Tick is how often time-based rules are evaluated.
	Tick time.Duration
	// SummaryEvery is the summary period; 0 disables the summary.
	SummaryEvery time.Duration
	// ReplayFrom: a newly created consumer starts this long ago.
	ReplayFrom time.Duration
	// MissedLookback bounds how far back expected fires are checked on a
	// fresh start.
	MissedLookback time.Duration
}

func (c *Config) defaults() {
	if c.Prefix == "" {
		c.Prefix = v1.DefaultPrefix
	}
	if c.LostAfter <= 0 {
		c.LostAfter = 15 * time.Minute
	}
	if c.StuckPendingAfter <= 0 {
		c.StuckPendingAfter = 10 * time.Minute
	}
	if c.MissedGrace <= 0 {
		c.MissedGrace = time.Minute
	}
	if c.SilentGrace <= 0 {
		c.SilentGrace = 2 * time.Minute
	}
	if c.OverlapRuns <= 0 {
		c.OverlapRuns = 2
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Tick <= 0 {
		c.Tick = 5 * time.Second
	}
	if c.ReplayFrom <= 0 {
		c.ReplayFrom = time.Hour
	}
	if c.MissedLookback <= 0 {
		c.MissedLookback = 24 * time.Hour
	}
}

// Deps are the tracker's collaborators.
type Deps struct {
	JS      jetstream.JetStream
	Store   *runstore.Store
	List    *watchlist.List
	Log     *slog.Logger
	Now     func() time.Time
	Stopper TaskStopper
	Meter   metric.Meter
	// Tracer traces event processing; the trace context of each event
	// (traceparent) continues into what it causes (verdict, alerts).
	Tracer trace.Tracer
}

// Tracker is the run tracker and rule engine.
type Tracker struct {
	cfg   Config
	d     Deps
	subj  v1.Subjects
	start time.Time

	busNanos atomic.Int64 // newest event time seen on the bus
	pending  atomic.Uint64

	mu          sync.Mutex
	unsentSince map[string]time.Time
	incidents   map[string]bool   // per-replica open incidents: no_success:, overlap:, capacity:
	overlapRun  map[string]string // schedule -> run id that opened its overlap incident
	lastSummary time.Time

	events   metric.Int64Counter
	alerts   metric.Int64Counter
	finished metric.Int64Counter
}

// New returns a tracker.
func New(cfg Config, d Deps) (*Tracker, error) {
	cfg.defaults()
	if d.Tracer == nil {
		d.Tracer = tracenoop.NewTracerProvider().Tracer("exitwatch")
	}
	t := &Tracker{cfg: cfg, d: d, subj: v1.Subjects{Prefix: cfg.Prefix}, start: d.Now(), unsentSince: map[string]time.Time{}, incidents: map[string]bool{}, overlapRun: map[string]string{}}
	var err error
	if t.events, err = d.Meter.Int64Counter("exitwatch_events", metric.WithDescription("events processed by the run tracker")); err != nil {
		return nil, err
	}
	if t.alerts, err = d.Meter.Int64Counter("exitwatch_alerts_published", metric.WithDescription("alerts published")); err != nil {
		return nil, err
	}
	if t.finished, err = d.Meter.Int64Counter("exitwatch_runs_finished", metric.WithDescription("verdicts published")); err != nil {
		return nil, err
	}
	return t, nil
}

// Now is the time the rules judge by: the wall clock while the consumer is
// caught up, the newest event time seen on the bus while it is working
// through a backlog (so bus lag raises no false alarm).
func (t *Tracker) Now() time.Time {
	wall := t.d.Now()
	if t.pending.Load() > 0 {
		if b := t.busNanos.Load(); b != 0 && time.Unix(0, b).Before(wall) {
			return time.Unix(0, b).UTC()
		}
	}
	return wall
}

func (t *Tracker) seen(ts *timestamppb.Timestamp) {
	if ts == nil {
		return
	}
	n := ts.AsTime().UnixNano()
	for {
		cur := t.busNanos.Load()
		if n <= cur || t.busNanos.CompareAndSwap(cur, n) {
			return
		}
	}
}

type job struct {
	msg jetstream.Msg
	m   proto.Message
}

// Run consumes events and evaluates the time rules until ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	streams := v1.Streams(t.cfg.Prefix)
	start := t.d.Now().Add(-t.cfg.ReplayFrom)
	runs, err := t.d.JS.CreateOrUpdateConsumer(ctx, streams.Runs, jetstream.ConsumerConfig{
		Durable:        "exitwatch-tracker",
		Description:    "exitwatch run tracker (shared by replicas)",
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        30 * time.Second,
		MaxAckPending:  20000,
		FilterSubjects: []string{t.subj.RunDispatched("*"), t.subj.RunSkipped("*"), t.subj.RunDispatchFailed("*"), t.subj.Tasks()},
	})
	if err != nil && isStartChange(err) {
		runs, err = t.d.JS.Consumer(ctx, streams.Runs, "exitwatch-tracker")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("create tracker consumer: %w", err)
	}
	stats, err := t.d.JS.CreateOrUpdateConsumer(ctx, streams.Stats, jetstream.ConsumerConfig{
		Durable:        "exitwatch-logstats",
		Description:    "exitwatch log volume per run (shared by replicas)",
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        30 * time.Second,
		FilterSubjects: []string{t.subj.LogStatsAll()},
	})
	if err != nil && isStartChange(err) {
		stats, err = t.d.JS.Consumer(ctx, streams.Stats, "exitwatch-logstats")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("create logstats consumer: %w", err)
	}

	shards := make([]chan job, t.cfg.Workers)
	var wg sync.WaitGroup
	for i := range shards {
		shards[i] = make(chan job, 256)
		wg.Add(1)
		go func(ch chan job) {
			defer wg.Done()
			for j := range ch {
				t.process(ctx, j)
			}
		}(shards[i])
	}
	dispatch := func(msg jetstream.Msg) {
		if md, err := msg.Metadata(); err == nil {
			t.pending.Store(md.NumPending)
		}
		m, err := v1.Decode(t.cfg.Prefix, msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			t.d.Log.Warn("undecodable event dropped", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			return
		}
		h := fnv.New32a()
		h.Write([]byte(shardKey(m)))
		select {
		case shards[h.Sum32()%uint32(len(shards))] <- job{msg: msg, m: m}:
		case <-ctx.Done():
		}
	}
	runCtx, err := runs.Consume(dispatch, jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("consume run events: %w", err)
	}
	statsCtx, err := stats.Consume(dispatch, jetstream.PullMaxMessages(200))
	if err != nil {
		runCtx.Stop()
		return fmt.Errorf("consume log stats: %w", err)
	}
	tick := time.NewTicker(t.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			runCtx.Stop()
			statsCtx.Stop()
			<-runCtx.Closed()
			<-statsCtx.Closed()
			for _, ch := range shards {
				close(ch)
			}
			wg.Wait()
			return nil
		case <-tick.C:
			t.Tick(ctx)
		}
	}
}

func isStartChange(err error) bool {
	// An existing durable keeps its position; updating the start time of
	// it is refused, which is what we want.
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeConsumerCreate || strings.Contains(err.Error(), "can not be updated")
}

func shardKey(m proto.Message) string {
	switch m := m.(type) {
	case *v1.RunDispatched:
		return m.GetRunId()
	case *v1.RunSkipped:
		return m.GetRunId()
	case *v1.RunDispatchFailed:
		return m.GetRunId()
	case *v1.TaskStateChanged:
		if m.GetRunId() != "" {
			return m.GetRunId()
		}
		return m.GetTaskArn()
	}
	return ""
}

func (t *Tracker) process(ctx context.Context, j job) {
	ctx, span := t.d.Tracer.Start(v1.ContextFromHeader(ctx, j.msg.Headers()), "exitwatch.track "+string(j.m.ProtoReflect().Descriptor().Name()),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attribute.String("messaging.destination.name", j.msg.Subject())))
	defer span.End()
	var err error
	switch m := j.m.(type) {
	case *v1.RunDispatched:
		t.seen(m.GetDispatchedAt())
		err = t.OnDispatched(ctx, m)
	case *v1.RunSkipped:
		t.seen(m.GetDecidedAt())
		err = t.OnSkipped(ctx, m)
	case *v1.RunDispatchFailed:
		t.seen(m.GetFailedAt())
		err = t.OnDispatchFailed(ctx, m)
	case *v1.TaskStateChanged:
		t.seen(m.GetEventTime())
		err = t.OnTask(ctx, m)
	case *v1.LogStats:
		t.seen(m.GetWindowEnd())
		err = t.OnLogStats(ctx, m)
	}
	t.events.Add(ctx, 1, metric.WithAttributes(attribute.String("type", string(j.m.ProtoReflect().Descriptor().Name()))))
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		span.RecordError(err)
		t.d.Log.Error("event not processed, will be redelivered", "subject", j.msg.Subject(), "err", err)
		_ = j.msg.NakWithDelay(time.Second)
		return
	}
	_ = j.msg.Ack()
}

func has(r *v1.RunRecord, mark string) bool { return slices.Contains(r.GetAlerted(), mark) }

// OnDispatched records a dispatched run.
func (t *Tracker) OnDispatched(ctx context.Context, d *v1.RunDispatched) error {
	rec, _, err := t.d.Store.Update(ctx, d.GetRunId(), func() *v1.RunRecord { return &v1.RunRecord{RunId: d.GetRunId()} }, func(r *v1.RunRecord) bool {
		if r.GetDispatchedAt() != nil {
			return false
		}
		r.Schedule, r.Cluster, r.Trigger = d.GetSchedule(), d.GetCluster(), d.GetTrigger()
		r.ScheduledAt, r.DispatchedAt = d.GetScheduledAt(), d.GetDispatchedAt()
		r.Timeout, r.TaskCount, r.Runner = d.GetTimeout(), d.GetTaskCount(), d.GetRunner()
		if n := len(d.GetTaskIds()); n > 0 {
			// The runner names the tasks it started: that many verdicts
			// make the run's verdict.
			r.TaskCount = int32(n)
		}
		if r.GetOutcome() == v1.Outcome_OUTCOME_UNSPECIFIED && r.GetFinishedAt() != nil {
			// A fire judged missed (or skipped) arrived after all.
			r.FinishedAt, r.Reason = nil, ""
		}
		for _, id := range d.GetTaskIds() {
			if taskIndex(r, id) < 0 {
				r.Tasks = append(r.Tasks, &v1.TaskStateChanged{TaskArn: id, RunId: d.GetRunId(), Schedule: d.GetSchedule(), Cluster: d.GetCluster()})
			}
		}
		return true
	})
	if err != nil || rec == nil {
		return err
	}
	return t.evaluate(ctx, rec, t.Now())
}

// OnSkipped records a skipped fire and raises run_skipped (except for
// disabled schedules, which are silent by design).
func (t *Tracker) OnSkipped(ctx context.Context, s *v1.RunSkipped) error {
	rec, changed, err := t.d.Store.Update(ctx, s.GetRunId(), func() *v1.RunRecord { return &v1.RunRecord{RunId: s.GetRunId()} }, func(r *v1.RunRecord) bool {
		if r.GetDispatchedAt() != nil || strings.HasPrefix(r.GetReason(), "skipped") {
			return false // the first decision wins
		}
		r.Schedule, r.Cluster, r.Trigger, r.ScheduledAt = s.GetSchedule(), s.GetCluster(), s.GetTrigger(), s.GetScheduledAt()
		r.FinishedAt = s.GetDecidedAt()
		if r.FinishedAt == nil {
			r.FinishedAt = timestamppb.New(t.d.Now())
		}
		r.Reason = "skipped: " + skipReason(s.GetReason())
		if s.GetDetail() != "" {
			r.Reason += ": " + s.GetDetail()
		}
		if s.GetReason() != v1.SkipReason_SKIP_REASON_DISABLED && !has(r, KindSkipped) {
			r.Alerted = append(r.Alerted, KindSkipped)
		}
		return true
	})
	if err != nil || !changed {
		return err
	}
	return t.flush(ctx, rec)
}

func skipReason(r v1.SkipReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "SKIP_REASON_"))
}

// OnDispatchFailed records a run the runner could not start.
func (t *Tracker) OnDispatchFailed(ctx context.Context, f *v1.RunDispatchFailed) error {
	var parts []string
	for _, x := range f.GetFailures() {
		s := x.GetReason()
		if x.GetDetail() != "" {
			s += " (" + x.GetDetail() + ")"
		}
		if x.GetArn() != "" {
			s += " on " + x.GetArn()
		}
		parts = append(parts, s)
	}
	if f.GetError() != "" {
		parts = append(parts, f.GetError())
	}
	why := strings.Join(parts, "; ")
	rec, changed, err := t.d.Store.Update(ctx, f.GetRunId(), func() *v1.RunRecord { return &v1.RunRecord{RunId: f.GetRunId()} }, func(r *v1.RunRecord) bool {
		if !runstore.Open(r) && r.GetOutcome() != v1.Outcome_OUTCOME_UNSPECIFIED {
			return false
		}
		if strings.HasPrefix(r.GetReason(), "dispatch failed") {
			return false
		}
		r.Schedule, r.Cluster, r.Trigger, r.ScheduledAt = f.GetSchedule(), f.GetCluster(), f.GetTrigger(), f.GetScheduledAt()
		r.Runner = f.GetRunner()
		if len(f.GetTaskIds()) > 0 {
			// Part of taskCount started: wait for those tasks, remember why
			// the rest did not.
			r.Reason = "dispatch failed for part of the tasks: " + why
			if r.DispatchedAt == nil {
				r.DispatchedAt = f.GetFailedAt()
			}
			r.FinishedAt = nil
			r.TaskCount = int32(len(f.GetTaskIds()))
			for _, id := range f.GetTaskIds() {
				if taskIndex(r, id) < 0 {
					r.Tasks = append(r.Tasks, &v1.TaskStateChanged{TaskArn: id, RunId: f.GetRunId()})
				}
			}
			return true
		}
		r.Outcome = v1.Outcome_OUTCOME_FAILED_TO_START
		r.Reason = "dispatch failed: " + why
		r.FinishedAt = f.GetFailedAt()
		if r.FinishedAt == nil {
			r.FinishedAt = timestamppb.New(t.d.Now())
		}
		r.Alerted = append(r.Alerted, markFinished, KindRunFailedToStart)
		return true
	})
	if err != nil || !changed {
		return err
	}
	if rec.GetOutcome() != v1.Outcome_OUTCOME_UNSPECIFIED {
		return t.flush(ctx, rec)
	}
	return t.evaluate(ctx, rec, t.Now())
}

func taskIndex(r *v1.RunRecord, arn string) int {
	for i, x := range r.GetTasks() {
		if x.GetTaskArn() == arn {
			return i
		}
	}
	return -1
}

// UnmanagedRunID is the pseudo run id of a task taskyard did not start.
func UnmanagedRunID(taskArn string) string {
	h := fnv.New64a()
	h.Write([]byte(taskArn))
	return fmt.Sprintf("ext-%016x", h.Sum64())
}

// OnTask applies a task state change: newer versions replace older ones,
// duplicates and older versions delivered late are ignored.
func (t *Tracker) OnTask(ctx context.Context, ev *v1.TaskStateChanged) error {
	runID := ev.GetRunId()
	if runID == "" {
		if !t.cfg.WatchUnmanaged {
			return nil
		}
		if len(t.cfg.Clusters) > 0 {
			// Only the clusters of the cluster profiles are watched.
			if _, ok := t.cfg.Clusters[t.clusterOf(ev.GetCluster())]; !ok {
				return nil
			}
		}
		runID = UnmanagedRunID(ev.GetTaskArn())
	}
	create := func() *v1.RunRecord {
		return &v1.RunRecord{RunId: runID, Schedule: ev.GetSchedule(), Cluster: ev.GetCluster(), Runner: ev.GetSource()}
	}
	rec, changed, err := t.d.Store.Update(ctx, runID, create, func(r *v1.RunRecord) bool {
		i := taskIndex(r, ev.GetTaskArn())
		if i >= 0 && r.Tasks[i].GetLastStatus() != "" && r.Tasks[i].GetVersion() >= ev.GetVersion() {
			return false
		}
		if i >= 0 {
			r.Tasks[i] = ev
		} else {
			r.Tasks = append(r.Tasks, ev)
		}
		if r.Cluster == "" {
			r.Cluster = ev.GetCluster()
		}
		if r.Schedule == "" {
			r.Schedule = ev.GetSchedule()
		}
		if ev.GetStartedAt() != nil && (r.StartedAt == nil || ev.GetStartedAt().AsTime().Before(r.StartedAt.AsTime())) {
			r.StartedAt = ev.GetStartedAt()
		}
		return true
	})
	if err != nil || !changed {
		return err
	}
	return t.evaluate(ctx, rec, t.Now())
}

// OnLogStats adds a window's log records to the runs it names.
func (t *Tracker) OnLogStats(ctx context.Context, s *v1.LogStats) error {
	for runID, n := range s.GetRecordsByRun() {
		if n <= 0 {
			continue
		}
		// Log counts can overtake the dispatch event (another consumer):
		// the record is created here and completed by the dispatch.
		_, _, err := t.d.Store.Update(ctx, runID, func() *v1.RunRecord { return &v1.RunRecord{RunId: runID} }, func(r *v1.RunRecord) bool {
			r.LogRecords += n
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// realTasks are the tasks an event was seen for (dispatch placeholders
// have no status yet).
func realTasks(r *v1.RunRecord) []*v1.TaskStateChanged {
	var out []*v1.TaskStateChanged
	for _, x := range r.GetTasks() {
		if x.GetLastStatus() != "" {
			out = append(out, x)
		}
	}
	return out
}

// allStopped reports whether every task an event was seen for is STOPPED,
// and when the last one stopped.
func allStopped(r *v1.RunRecord) (bool, time.Time) {
	tasks := realTasks(r)
	if len(tasks) == 0 {
		return false, time.Time{}
	}
	var last time.Time
	for _, x := range tasks {
		if x.GetLastStatus() != "STOPPED" {
			return false, time.Time{}
		}
		if x.GetEventTime() != nil && x.GetEventTime().AsTime().After(last) {
			last = x.GetEventTime().AsTime()
		}
	}
	return true, last
}

func (t *Tracker) item(r *v1.RunRecord) *watchlist.Item {
	if it, ok := t.d.List.Get(r.GetSchedule()); ok {
		return it
	}
	return nil
}

func timeoutOf(r *v1.RunRecord, it *watchlist.Item) time.Duration {
	if r.GetTimeout() != nil {
		return r.GetTimeout().AsDuration()
	}
	if it != nil {
		return it.Timeout
	}
	return 0
}

// evaluate finalizes a run whose tasks all stopped.
func (t *Tracker) evaluate(ctx context.Context, rec *v1.RunRecord, now time.Time) error {
	if !runstore.Open(rec) {
		return t.flush(ctx, rec)
	}
	stopped, lastStop := allStopped(rec)
	if !stopped {
		return nil
	}
	expected := int(rec.GetTaskCount())
	if expected <= 0 {
		expected = 1
	}
	known := rec.GetDispatchedAt() != nil || strings.HasPrefix(rec.GetRunId(), "ext-") || strings.HasPrefix(rec.GetReason(), "dispatch failed")
	switch {
	case known && len(realTasks(rec)) >= expected:
	case !known && !lastStop.IsZero() && now.Sub(lastStop) > time.Minute:
		// The dispatch event never came (scheduler died after RunTask).
	default:
		return nil
	}
	return t.finalize(ctx, rec.GetRunId(), func(r *v1.RunRecord) *verdict.Result {
		if ok, _ := allStopped(r); !ok {
			return nil
		}
		it := t.item(r)
		res := verdict.Run(realTasks(r), it.IsEssential, timeoutOf(r, it))
		if res.Outcome == v1.Outcome_OUTCOME_SUCCEEDED && strings.HasPrefix(r.GetReason(), "dispatch failed") {
			res.Outcome, res.Reason = v1.Outcome_OUTCOME_FAILED_TO_START, strings.TrimPrefix(r.GetReason(), "dispatch failed for part of the tasks: ")
			res.Reason = "some tasks failed to start: " + res.Reason
		}
		if has(r, KindOverrun) && res.Outcome != v1.Outcome_OUTCOME_FAILED && strings.Contains(res.StoppedReason, verdict.StopReasonTimeout) {
			res.Outcome = v1.Outcome_OUTCOME_TIMED_OUT
		}
		return &res
	})
}

func failing(o v1.Outcome) bool {
	return o != v1.Outcome_OUTCOME_UNSPECIFIED && o != v1.Outcome_OUTCOME_SUCCEEDED
}

// finalize writes the verdict judge returns (nil: not yet) with
// compare-and-set; only the winner publishes.
func (t *Tracker) finalize(ctx context.Context, runID string, judge func(r *v1.RunRecord) *verdict.Result) error {
	rec, changed, err := t.d.Store.Update(ctx, runID, nil, func(r *v1.RunRecord) bool {
		if !runstore.Open(r) {
			return false
		}
		res := judge(r)
		if res == nil {
			return false
		}
		r.Outcome, r.Reason, r.Containers = res.Outcome, res.Reason, res.Containers
		if !res.StartedAt.IsZero() && r.StartedAt == nil {
			r.StartedAt = timestamppb.New(res.StartedAt)
		}
		fin := res.FinishedAt
		if fin.IsZero() {
			fin = t.Now()
		}
		r.FinishedAt = timestamppb.New(fin)
		r.Alerted = append(r.Alerted, markFinished)
		switch {
		case res.Outcome == v1.Outcome_OUTCOME_FAILED_TO_START:
			r.Alerted = append(r.Alerted, KindRunFailedToStart)
		case failing(res.Outcome):
			r.Alerted = append(r.Alerted, KindRunFailed)
		default:
			agg := t.d.Store.Agg(r.GetSchedule())
			if r.GetSchedule() != "" && agg.LastRunID != r.GetRunId() && (failing(agg.LastOutcome) || agg.LastMissed.After(agg.LastFinished)) {
				r.Alerted = append(r.Alerted, KindRecovered)
			}
		}
		return true
	})
	if err != nil || !changed {
		return err
	}
	t.finished.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", rec.GetOutcome().String())))
	return t.flush(ctx, rec)
}

// decide adds an alert kind to a run's record (once) and publishes it.
func (t *Tracker) decide(ctx context.Context, runID, kind string) error {
	rec, changed, err := t.d.Store.Update(ctx, runID, nil, func(r *v1.RunRecord) bool {
		if has(r, kind) {
			return false
		}
		r.Alerted = append(r.Alerted, kind)
		return true
	})
	if err != nil || !changed {
		return err
	}
	return t.flush(ctx, rec)
}

// unsent lists the decisions of a record not yet marked published.
func unsent(r *v1.RunRecord) []string {
	var out []string
	for _, a := range r.GetAlerted() {
		if strings.HasSuffix(a, sentSuffix) {
			continue
		}
		if !has(r, a+sentSuffix) {
			out = append(out, a)
		}
	}
	return out
}

// flush publishes a record's unsent decisions, then marks them sent.
func (t *Tracker) flush(ctx context.Context, rec *v1.RunRecord) error {
	todo := unsent(rec)
	if len(todo) == 0 {
		return nil
	}
	for _, kind := range todo {
		if err := t.publishDecision(ctx, rec, kind); err != nil {
			return err
		}
	}
	_, _, err := t.d.Store.Update(ctx, rec.GetRunId(), nil, func(r *v1.RunRecord) bool {
		changed := false
		for _, k := range todo {
			if !has(r, k+sentSuffix) {
				r.Alerted = append(r.Alerted, k+sentSuffix)
				changed = true
			}
		}
		return changed
	})
	t.mu.Lock()
	delete(t.unsentSince, rec.GetRunId())
	t.mu.Unlock()
	return err
}

func (t *Tracker) publishDecision(ctx context.Context, r *v1.RunRecord, kind string) error {
	switch kind {
	case markFinished:
		return t.publishFinished(ctx, r)
	case KindMissed:
		m := &v1.RunMissed{Schedule: r.GetSchedule(), Cluster: r.GetCluster(), ExpectedAt: r.GetScheduledAt(), DetectedAt: r.GetFinishedAt(), Why: r.GetReason(), RunId: r.GetRunId()}
		if _, err := v1.Publish(ctx, t.d.JS, t.subj.RunMissed(r.GetSchedule()), m, "missed:"+r.GetRunId()); err != nil {
			return err
		}
	}
	a := t.runAlert(r, kind)
	if a == nil {
		return nil
	}
	return t.PublishAlert(ctx, a, kind+":"+r.GetRunId())
}

func (t *Tracker) publishFinished(ctx context.Context, r *v1.RunRecord) error {
	f := &v1.RunFinished{
		RunId: r.GetRunId(), Schedule: r.GetSchedule(), Cluster: r.GetCluster(), ScheduledAt: r.GetScheduledAt(),
		StartedAt: r.GetStartedAt(), FinishedAt: r.GetFinishedAt(), Outcome: r.GetOutcome(), Containers: r.GetContainers(),
		Reason: r.GetReason(), LogRecords: r.GetLogRecords(), Trigger: r.GetTrigger(),
	}
	if d := duration(r); d > 0 {
		f.Duration = durationpb.New(d)
	}
	for _, x := range r.GetTasks() {
		f.TaskIds = append(f.TaskIds, x.GetTaskArn())
		if x.GetStopCode() != "" && f.StopCode == "" {
			f.StopCode, f.StoppedReason = x.GetStopCode(), x.GetStoppedReason()
		}
	}
	sched := r.GetSchedule()
	if sched == "" {
		sched = v1.NoSchedule
	}
	_, err := v1.Publish(ctx, t.d.JS, t.subj.RunFinished(sched), f, "finished:"+r.GetRunId())
	return err
}

func duration(r *v1.RunRecord) time.Duration {
	if r.GetFinishedAt() == nil {
		return 0
	}
	from := r.GetStartedAt()
	if from == nil {
		from = r.GetDispatchedAt()
	}
	if from == nil {
		return 0
	}
	return r.GetFinishedAt().AsTime().Sub(from.AsTime())
}

// PublishAlert publishes an alert with msgID as its Nats-Msg-Id.
func (t *Tracker) PublishAlert(ctx context.Context, a *v1.Alert, msgID string) error {
	if a.Time == nil {
		a.Time = timestamppb.New(t.d.Now())
	}
	if _, err := v1.Publish(ctx, t.d.JS, t.subj.Alert(a.GetSeverity(), a.GetKind()), a, msgID); err != nil {
		return err
	}
	t.alerts.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", a.GetKind())))
	return nil
}
