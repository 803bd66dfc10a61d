package control_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/control"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/schedule"
)

func TestStatusStates(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	t0 := time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	list := watchlist.New(logging.Discard(), clock)
	store := runstore.New(env.KV(t, "taskyard-runs"), logging.Discard(), time.Hour, clock)
	require.NoError(t, store.Watch(context.Background()))
	hourly, err := schedule.ParseExpr("cron(0 * * * ? *)", time.UTC, time.Time{})
	require.NoError(t, err)
	for _, it := range []*watchlist.Item{
		{Kind: watchlist.KindSchedule, Name: "ok", Enabled: true, Expr: hourly, StartingDeadline: 5 * time.Minute},
		{Kind: watchlist.KindSchedule, Name: "broken", Enabled: true, Expr: hourly, StartingDeadline: 5 * time.Minute},
		{Kind: watchlist.KindSchedule, Name: "off", Enabled: false, Expr: hourly},
		{Kind: watchlist.KindSchedule, Name: "fresh", Enabled: true, Expr: hourly, StartingDeadline: 5 * time.Minute},
		{Kind: watchlist.KindCheck, Name: "ping", Enabled: true, Period: time.Hour, Grace: 10 * time.Minute},
	} {
		list.Put(it)
	}
	put := func(id, sched string, o v1.Outcome, at time.Time) {
		_, _, err := store.Update(context.Background(), id, func() *v1.RunRecord {
			return &v1.RunRecord{RunId: id, Schedule: sched, Trigger: v1.Trigger_TRIGGER_SCHEDULE, ScheduledAt: timestamppb.New(at),
				DispatchedAt: timestamppb.New(at), FinishedAt: timestamppb.New(at.Add(time.Minute)), Outcome: o}
		}, func(*v1.RunRecord) bool { return false })
		require.NoError(t, err)
	}
	put("ok-1", "ok", v1.Outcome_OUTCOME_SUCCEEDED, t0)
	put("broken-1", "broken", v1.Outcome_OUTCOME_FAILED, t0)
	put("ping-1", "ping", v1.Outcome_OUTCOME_SUCCEEDED, t0)

	states := func() map[string]*v1.WatchStatus {
		out := map[string]*v1.WatchStatus{}
		for _, s := range control.Status(control.Deps{List: list, Store: store, Now: clock, MissedGrace: time.Minute}) {
			out[s.GetName()] = s
		}
		return out
	}
	now = t0.Add(30 * time.Minute)
	s := states()
	require.Equal(t, "up", s["ok"].GetState())
	require.Equal(t, t0.Add(time.Hour), s["ok"].GetNextRun().AsTime())
	require.Equal(t, "down", s["broken"].GetState())
	require.Contains(t, s["broken"].GetDetail(), "broken-1 ended failed")
	require.Equal(t, "paused", s["off"].GetState())
	require.Equal(t, "new", s["fresh"].GetState())
	require.Equal(t, "up", s["ping"].GetState())

	now = t0.Add(time.Hour + 2*time.Minute) // the 04:00 fire is due, within deadline + grace
	s = states()
	require.Equal(t, "late", s["ok"].GetState())
	require.Equal(t, "late", s["ping"].GetState(), "ping due at 04:01, grace until 04:11")
	now = t0.Add(time.Hour + 7*time.Minute)
	s = states()
	require.Equal(t, "down", s["ok"].GetState())
	require.Equal(t, "late", s["ping"].GetState())
	now = t0.Add(time.Hour + 12*time.Minute)
	require.Equal(t, "down", states()["ping"].GetState())
}
