// Package control answers exitwatch's request/reply subjects:
// <prefix>.ctl.exitwatch.status (every schedule and ping check: up, late,
// down, paused or new, with the last and next run). Every replica answers
// in a queue group, so one reply comes back.
package control

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
)

// Deps are what the answers are computed from.
type Deps struct {
	List  *watchlist.List
	Store *runstore.Store
	// Rules gives the rules' clock (bus time while lagging).
	Rules interface{ Now() time.Time }
	Log   *slog.Logger
	Now   func() time.Time
	// MissedGrace is added to startingDeadline for late vs down.
	MissedGrace time.Duration
}

// Serve answers until ctx ends.
func Serve(ctx context.Context, nc *nats.Conn, prefix string, d Deps) error {
	subj := v1.Subjects{Prefix: prefix}.Ctl("exitwatch", "status")
	sub, err := nc.QueueSubscribe(subj, "exitwatch", func(m *nats.Msg) {
		reply := &v1.StatusReply{Entries: Status(d)}
		data, err := proto.Marshal(reply)
		if err != nil {
			d.Log.Error("encode status reply", "err", err)
			return
		}
		if err := m.Respond(data); err != nil {
			d.Log.Warn("status reply", "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subj, err)
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

func failing(o v1.Outcome) bool {
	return o != v1.Outcome_OUTCOME_UNSPECIFIED && o != v1.Outcome_OUTCOME_SUCCEEDED
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Status computes the status of every watched schedule and check.
func Status(d Deps) []*v1.WatchStatus {
	now := d.Now()
	if d.Rules != nil {
		now = d.Rules.Now()
	}
	grace := d.MissedGrace
	if grace <= 0 {
		grace = time.Minute
	}
	var out []*v1.WatchStatus
	for _, it := range d.List.All() {
		agg := d.Store.Agg(it.Name)
		s := &v1.WatchStatus{Name: it.Name, Kind: string(it.Kind), Cluster: it.Cluster, LastOutcome: agg.LastOutcome, LastRunId: agg.LastRunID}
		last := agg.LastFinished
		if agg.LastActivity.After(last) {
			last = agg.LastActivity
		}
		s.LastRun = ts(last)
		var next, deadline time.Time
		switch {
		case it.Kind == watchlist.KindCheck && it.Period > 0:
			base := last
			if base.IsZero() {
				base = it.Since
			}
			next = base.Add(it.Period)
			deadline = next.Add(it.Grace)
		case it.Kind == watchlist.KindCheck && it.Expr != nil:
			base := last
			if base.IsZero() {
				base = it.Since
			}
			next = it.Expr.Next(base)
			deadline = next.Add(it.Grace)
		case it.Expr != nil:
			from := agg.LastDecided
			if from.IsZero() || from.Before(it.Since) {
				from = it.Since
			}
			next = it.Expr.Next(from)
			deadline = next.Add(it.StartingDeadline + grace)
		}
		s.NextRun = ts(next)
		switch {
		case !it.Enabled:
			s.State = "paused"
		case agg.LastMissed.After(agg.LastFinished):
			s.State, s.Detail = "down", "missed the fire expected at "+agg.LastMissed.UTC().Format(time.RFC3339)
		case failing(agg.LastOutcome):
			s.State, s.Detail = "down", "last run "+agg.LastRunID+" ended "+outcomeName(agg.LastOutcome)
		case !next.IsZero() && now.After(deadline):
			s.State, s.Detail = "down", "expected at "+next.UTC().Format(time.RFC3339)
		case !next.IsZero() && now.After(next):
			s.State, s.Detail = "late", "expected at "+next.UTC().Format(time.RFC3339)
		case it.SucceedWithin > 0 && !agg.LastSuccess.IsZero() && now.Sub(agg.LastSuccess) > it.SucceedWithin:
			s.State, s.Detail = "down", "no success within "+it.SucceedWithin.String()
		case last.IsZero():
			s.State = "new"
		default:
			s.State = "up"
		}
		if s.State != "paused" && it.Kind == watchlist.KindSchedule && !next.IsZero() {
			// While the next fire is not due yet it is the next run; once
			// it is, show the one after.
			if !now.Before(next) {
				s.NextRun = ts(it.Expr.Next(now))
			}
		}
		out = append(out, s)
	}
	return out
}

func outcomeName(o v1.Outcome) string {
	switch o {
	case v1.Outcome_OUTCOME_FAILED:
		return "failed"
	case v1.Outcome_OUTCOME_FAILED_TO_START:
		return "failed to start"
	case v1.Outcome_OUTCOME_TIMED_OUT:
		return "timed out"
	case v1.Outcome_OUTCOME_STOPPED:
		return "stopped"
	case v1.Outcome_OUTCOME_LOST:
		return "lost"
	}
	return "succeeded"
}
