package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
)

type kvState struct {
	st  *v1.ScheduleState
	rev uint64
}

// takeover runs when this instance becomes leader: it reads every
// schedule's state, seeds the concurrency view from the runner, and queues
// the catch-up decisions before the timer loop resumes.
func (e *Engine) takeover(ctx context.Context) {
	started := time.Now()
	states, err := e.loadAllStates(ctx)
	if err != nil {
		// Without the states a catch-up could repeat fires: lead without
		// catching up; claims read each state themselves.
		e.log.Error("takeover: read schedule states, no catch-up this time", "err", err)
	}

	e.mu.Lock()
	specs := make([]*v1.ScheduleSpec, 0, len(e.entries))
	for _, en := range e.entries {
		specs = append(specs, en.spec)
	}
	e.mu.Unlock()
	e.seedActive(ctx, specs)
	doubts := e.inDoubt(ctx, specs, states)

	e.mu.Lock()
	defer e.mu.Unlock()
	e.epoch++
	e.leading = true
	now := e.cfg.Clock.Now()
	var caught, skipped int
	for name, en := range e.entries {
		s, has := states[name]
		if !en.busy && err == nil {
			en.st, en.rev, en.stLoaded = s.st, s.rev, true
		}
		if en.expr == nil {
			continue
		}
		if runID, ok := doubts[name]; ok {
			e.log.Warn("takeover: re-running a claimed fire with no published decision", "schedule", name, "run_id", runID)
			e.enqueue(en, fire{at: s.st.GetLastFire().AsTime(), trigger: v1.Trigger_TRIGGER_CATCHUP, redo: true, epoch: e.epoch})
		}
		var from time.Time
		switch {
		case err != nil:
		case has && s.st.GetLastFire() != nil:
			from = s.st.GetLastFire().AsTime()
		case en.spec.GetAppliedAt() != nil:
			from = en.spec.GetAppliedAt().AsTime()
		}
		if !from.IsZero() && from.Before(now) {
			p := PlanCatchUp(en.expr, from, now, deadline(en.spec), catchUpOf(en.spec))
			for i, t := range p.Late {
				detail := fmt.Sprintf("missed while no scheduler led; %s late at takeover, startingDeadline is %s", now.Sub(t).Round(time.Millisecond), deadline(en.spec))
				if i == len(p.Late)-1 && p.MoreLate > 0 {
					detail += fmt.Sprintf("; %d later fire(s) before the deadline window are not listed", p.MoreLate)
				}
				e.enqueue(en, fire{at: t, trigger: v1.Trigger_TRIGGER_CATCHUP, skip: v1.SkipReason_SKIP_REASON_DEADLINE_PASSED, detail: detail, epoch: e.epoch})
				skipped++
			}
			for _, t := range p.Skip {
				e.enqueue(en, fire{at: t, trigger: v1.Trigger_TRIGGER_CATCHUP, skip: v1.SkipReason_SKIP_REASON_DEADLINE_PASSED, detail: p.SkipDetail, epoch: e.epoch})
				skipped++
			}
			for _, t := range p.Run {
				e.enqueue(en, fire{at: t, trigger: v1.Trigger_TRIGGER_CATCHUP, epoch: e.epoch})
				caught++
			}
		}
		en.next = en.expr.Next(now)
		e.fix(en)
	}
	e.m.leader.Record(ctx, 1)
	e.log.Info("took over as leader", "schedules", len(e.entries), "catch_up_runs", caught, "catch_up_skips", skipped, "took", time.Since(started))
	e.poke()
}

func catchUpOf(spec *v1.ScheduleSpec) schedule.CatchUp {
	c := spec.GetTiming().GetCatchUp()
	switch schedule.CatchUpMode(c.GetMode()) {
	case schedule.CatchUpNone:
		return schedule.CatchUp{Mode: schedule.CatchUpNone}
	case schedule.CatchUpAll:
		m := int(c.GetMax())
		if m <= 0 {
			m = schedule.DefaultCatchUpMax
		}
		return schedule.CatchUp{Mode: schedule.CatchUpAll, Max: m}
	}
	return schedule.CatchUp{Mode: schedule.CatchUpLatest, Max: 1}
}

// CatchUpPlan is what a new leader does with the fires in (from, now].
type CatchUpPlan struct {
	// Late are fires older than startingDeadline (at most maxLateSkips of
	// them, oldest first); MoreLate counts the ones not listed.
	Late     []time.Time
	MoreLate int
	// Skip are fires within the deadline that the catchUp policy drops.
	Skip       []time.Time
	SkipDetail string
	// Run are the fires to dispatch, oldest first.
	Run []time.Time
}

// maxWithin bounds the fires enumerated within the deadline window.
const maxWithin = 100_000

// PlanCatchUp applies startingDeadline dl (0: no deadline) and the catchUp
// policy c to the fires of expr in (from, now].
func PlanCatchUp(expr schedule.Expr, from, now time.Time, dl time.Duration, c schedule.CatchUp) CatchUpPlan {
	var p CatchUpPlan
	cutoff := from.Add(time.Nanosecond) // no late fires: within starts after from
	if dl > 0 && now.Add(-dl).After(from) {
		cutoff = now.Add(-dl)
	}
	t := from
	for {
		t = expr.Next(t)
		if t.IsZero() || !t.Before(cutoff) {
			break
		}
		if len(p.Late) < maxLateSkips {
			p.Late = append(p.Late, t)
			continue
		}
		// Count the rest without walking centuries of fires.
		p.MoreLate++
		if p.MoreLate >= 10_000 {
			break
		}
	}
	var within []time.Time
	// A fire exactly startingDeadline old is still within it.
	for t := expr.Next(cutoff.Add(-time.Nanosecond)); !t.IsZero() && !t.After(now) && len(within) < maxWithin; t = expr.Next(t) {
		within = append(within, t)
	}
	keep := c.Max
	if c.Mode == schedule.CatchUpNone {
		keep = 0
	}
	if keep > len(within) {
		keep = len(within)
	}
	p.Skip = within[:len(within)-keep]
	p.Run = within[len(within)-keep:]
	switch c.Mode {
	case schedule.CatchUpNone:
		p.SkipDetail = "missed while no scheduler led; catchUp is none"
	case schedule.CatchUpLatest:
		p.SkipDetail = "missed while no scheduler led; catchUp latest runs only the most recent missed fire"
	default:
		p.SkipDetail = fmt.Sprintf("missed while no scheduler led; catchUp all runs at most the %d most recent missed fires", c.Max)
	}
	return p
}

func (e *Engine) loadAllStates(ctx context.Context) (map[string]kvState, error) {
	out := map[string]kvState{}
	w, err := e.cfg.State.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch state: %w", err)
	}
	defer func() { _ = w.Stop() }()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case kve, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("state watch closed")
			}
			if kve == nil {
				return out, nil
			}
			st := &v1.ScheduleState{}
			if err := proto.Unmarshal(kve.Value(), st); err != nil {
				e.log.Warn("decode state", "key", kve.Key(), "err", err)
				continue
			}
			out[kve.Key()] = kvState{st: st, rev: kve.Revision()}
		case <-timeout.C:
			return nil, errors.New("reading state: timed out")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// inDoubt finds schedules whose last claimed fire (within its deadline) has
// no published decision: the previous leader died between claiming and
// publishing. Returns schedule -> run id.
func (e *Engine) inDoubt(ctx context.Context, specs []*v1.ScheduleSpec, states map[string]kvState) map[string]string {
	out := map[string]string{}
	if len(states) == 0 {
		return out
	}
	stream, err := e.cfg.JS.Stream(ctx, v1.Streams(e.cfg.Prefix).Runs)
	if err != nil {
		e.log.Warn("takeover: runs stream", "err", err)
		return out
	}
	now := e.cfg.Clock.Now()
	for _, spec := range specs {
		s, ok := states[spec.GetName()]
		if !ok || s.st.GetLastRunId() == "" || s.st.GetLastFire() == nil {
			continue
		}
		if dl := deadline(spec); dl > 0 && now.Sub(s.st.GetLastFire().AsTime()) > dl {
			continue
		}
		decided := false
		for _, subj := range []string{e.subj.RunDispatched(spec.GetName()), e.subj.RunSkipped(spec.GetName()), e.subj.RunDispatchFailed(spec.GetName())} {
			m, err := stream.GetLastMsgForSubject(ctx, subj)
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgNotFound) {
					e.log.Warn("takeover: last decision", "subject", subj, "err", err)
					decided = true // unknown: do not risk a second run
				}
				continue
			}
			if m.Header.Get("Nats-Msg-Id") == s.st.GetLastRunId() {
				decided = true
				break
			}
		}
		if !decided {
			out[spec.GetName()] = s.st.GetLastRunId()
		}
	}
	return out
}
