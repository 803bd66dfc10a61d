// Package watchlist is what exitwatch knows it should be watching: the
// schedules applied to KV taskyard-schedules (kept current by a KV watch)
// and the ping checks from the checks file, with the settings the rules
// need (expected fires, deadlines, timeout, expectations, alert routing).
package watchlist

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
)

// Kind says where an item comes from.
type Kind string

const (
	// KindSchedule is a schedule applied to KV taskyard-schedules.
	KindSchedule Kind = "schedule"
	// KindCheck is a ping check from the checks file.
	KindCheck Kind = "check"
)

// Item is one watched schedule or check.
type Item struct {
	Kind    Kind
	Name    string
	Cluster string
	Enabled bool
	// Expr gives the expected fires; nil for manual schedules and period
	// checks.
	Expr schedule.Expr
	// Period is a check's expected ping interval (period checks).
	Period time.Duration
	// Grace is how long after startingDeadline (schedules) or the expected
	// ping (checks) a fire may still arrive.
	Grace            time.Duration
	StartingDeadline time.Duration
	Timeout          time.Duration
	TaskCount        int
	Concurrency      string
	Runbook          string
	Severity         v1.Severity
	Channel          string
	SucceedWithin    time.Duration
	Logs             bool
	// Essential maps container names to their essential flag; nil when
	// unknown.
	Essential map[string]bool
	AppliedAt time.Time
	// Since is when the item was applied, or re-enabled, or — for a ping
	// check, which has no apply time — first seen enabled by this process,
	// whichever is latest: no success is expected and no ping is due
	// before it. A restart of exitwatch does not move it for schedules, so
	// it does not restart their succeedWithin windows.
	Since time.Time
	// EnabledAt is when this process saw the item go from disabled to
	// enabled (zero when it was enabled when first seen): fires before it
	// fell into the disabled time and are never judged missed.
	EnabledAt time.Time
}

// IsEssential reports whether container name decides the run. Containers
// not in the schedule (an injected log router) do not.
func (it *Item) IsEssential(name string) bool {
	if it == nil || it.Essential == nil {
		return true
	}
	return it.Essential[name]
}

// List holds the items. Safe for concurrent use.
type List struct {
	mu    sync.RWMutex
	items map[string]*Item
	now   func() time.Time
	log   *slog.Logger
}

// New returns an empty list.
func New(log *slog.Logger, now func() time.Time) *List {
	return &List{items: map[string]*Item{}, now: now, log: log}
}

// Get returns the item called name.
func (l *List) Get(name string) (*Item, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	it, ok := l.items[name]
	return it, ok
}

// All returns every item sorted by name.
func (l *List) All() []*Item {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]*Item, 0, len(l.items))
	for _, it := range l.items {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Put adds or replaces an item, keeping Since while it stays enabled.
func (l *List) Put(it *Item) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	prev := l.items[it.Name]
	if prev != nil {
		it.EnabledAt = prev.EnabledAt
		if !prev.Enabled && it.Enabled {
			it.EnabledAt = now
		}
	}
	switch {
	case !it.Enabled:
		it.Since = time.Time{}
	case prev != nil && prev.Enabled && !prev.Since.IsZero():
		it.Since = prev.Since
	case prev == nil && !it.AppliedAt.IsZero():
		// First seen by this process, enabled since it was applied (or
		// re-enabled, which is an apply too).
		it.Since = it.AppliedAt
	default:
		it.Since = now
	}
	if it.AppliedAt.After(it.Since) {
		it.Since = it.AppliedAt
	}
	l.items[it.Name] = it
}

// Delete removes an item.
func (l *List) Delete(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.items, name)
}

// FromSpec converts an applied schedule with schedule.ScheduleFromProto,
// so exitwatch computes the same fires as the scheduler, to the second.
//
// ScheduleFromProto applies the file rules without the cluster profile, so
// it refuses some specs the scheduler accepted with theirs (no container
// memory on an EXTERNAL cluster, say). exitwatch must still watch them:
// then the item is built from the spec's fields directly, the expression
// parsed the same way (time zone, anchor).
func FromSpec(spec *v1.ScheduleSpec) (*Item, error) {
	if s, err := schedule.ScheduleFromProto(spec); err == nil {
		return FromSchedule(s, spec.GetAppliedAt().AsTime()), nil
	}
	t := spec.GetTiming()
	it := &Item{
		Kind:             KindSchedule,
		Name:             spec.GetName(),
		Cluster:          spec.GetCluster(),
		Enabled:          t.GetEnabled(),
		StartingDeadline: t.GetStartingDeadline().AsDuration(),
		Timeout:          t.GetTimeout().AsDuration(),
		TaskCount:        int(t.GetTaskCount()),
		Concurrency:      t.GetConcurrency(),
		Runbook:          spec.GetAlerts().GetRunbook(),
		Channel:          spec.GetAlerts().GetChannel(),
		Severity:         v1.Severity_SEVERITY_CRITICAL,
		SucceedWithin:    spec.GetExpectations().GetSucceedWithin().AsDuration(),
		Logs:             spec.GetExpectations().GetLogs(),
		Essential:        map[string]bool{},
	}
	if spec.GetAppliedAt() != nil {
		it.AppliedAt = spec.GetAppliedAt().AsTime()
	}
	if it.StartingDeadline <= 0 {
		it.StartingDeadline = schedule.DefaultStartingDeadline
	}
	if it.TaskCount <= 0 {
		it.TaskCount = 1
	}
	if sev, err := v1.ParseSeverity(spec.GetAlerts().GetSeverity()); err == nil {
		it.Severity = sev
	}
	for _, c := range spec.GetContainers() {
		it.Essential[c.GetName()] = c.GetEssential()
	}
	if spec.GetType() != string(schedule.TypeManual) && t.GetExpression() != "" {
		expr, err := exprOf(spec)
		if err != nil {
			return nil, fmt.Errorf("schedule %s: schedule.expression: %w", spec.GetName(), err)
		}
		it.Expr = expr
	}
	return it, nil
}

// exprOf parses the spec's expression as ScheduleFromProto does: in the
// schedule's time zone, rate() anchored at spec.anchor.
func exprOf(spec *v1.ScheduleSpec) (schedule.Expr, error) {
	loc := time.UTC
	if tz := spec.GetTiming().GetTimezone(); tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("timezone %q: %w", tz, err)
		}
		loc = l
	}
	var anchor time.Time
	if spec.GetAnchor() != nil {
		anchor = spec.GetAnchor().AsTime()
	}
	return schedule.ParseExpr(spec.GetTiming().GetExpression(), loc, anchor)
}

// FromSchedule converts a parsed schedule; appliedAt may be zero.
func FromSchedule(s *schedule.Schedule, appliedAt time.Time) *Item {
	t := s.Timing
	it := &Item{
		Kind:             KindSchedule,
		Name:             s.Name,
		Cluster:          s.Cluster,
		Enabled:          t.Enabled,
		StartingDeadline: t.StartingDeadline,
		Timeout:          t.Timeout,
		TaskCount:        t.TaskCount,
		Concurrency:      string(t.Concurrency),
		Runbook:          s.Alerts.Runbook,
		Channel:          s.Alerts.Channel,
		Severity:         v1.Severity_SEVERITY_CRITICAL,
		SucceedWithin:    s.Expectations.SucceedWithin,
		Logs:             s.Expectations.Logs,
		Essential:        map[string]bool{},
	}
	if appliedAt.Unix() > 0 {
		it.AppliedAt = appliedAt
	}
	if it.StartingDeadline <= 0 {
		it.StartingDeadline = schedule.DefaultStartingDeadline
	}
	if it.TaskCount <= 0 {
		it.TaskCount = 1
	}
	if sev, err := v1.ParseSeverity(string(s.Alerts.Severity)); err == nil {
		it.Severity = sev
	}
	for _, c := range s.Containers {
		it.Essential[c.Name] = c.Essential
	}
	if s.Type != schedule.TypeManual {
		it.Expr = t.Expression
	}
	return it
}

// WatchSchedules keeps the schedule items in step with the bucket until ctx
// ends. It returns once the initial values are loaded.
func (l *List) WatchSchedules(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch schedules: %w", err)
	}
	loaded := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		first := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if first {
						first = false
						close(loaded)
					}
					continue
				}
				if e.Operation() != jetstream.KeyValuePut {
					l.Delete(e.Key())
					continue
				}
				spec := &v1.ScheduleSpec{}
				if err := proto.Unmarshal(e.Value(), spec); err != nil {
					l.log.Warn("undecodable schedule spec", "key", e.Key(), "err", err)
					continue
				}
				it, err := FromSpec(spec)
				if err != nil {
					l.log.Warn("schedule not watchable", "schedule", e.Key(), "err", err)
					continue
				}
				l.Put(it)
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
