package runstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/kit/logging"
)

// Two stores (two replicas) increment one record concurrently: with
// compare-and-set no increment is lost, although each works from its own
// (often stale) mirror.
func TestCompareAndSetUnderContention(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	now := func() time.Time { return time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC) }
	ctx := context.Background()
	var stores []*runstore.Store
	for range 2 {
		s := runstore.New(env.KV(t, "taskyard-runs"), logging.Discard(), time.Hour, now)
		require.NoError(t, s.Watch(ctx))
		stores = append(stores, s)
	}
	const perWorker = 25
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func(s *runstore.Store) {
			defer wg.Done()
			for range perWorker {
				_, changed, err := s.Update(ctx, "r1", func() *v1.RunRecord { return &v1.RunRecord{RunId: "r1", Schedule: "s"} }, func(r *v1.RunRecord) bool {
					r.LogRecords++
					return true
				})
				require.NoError(t, err)
				require.True(t, changed)
			}
		}(stores[i%2])
	}
	wg.Wait()
	r, _, err := stores[0].Fetch(ctx, "r1")
	require.NoError(t, err)
	require.EqualValues(t, 4*perWorker, r.GetLogRecords())
	require.Eventually(t, func() bool { x, ok := stores[1].Get("r1"); return ok && x.GetLogRecords() == 4*perWorker }, 5*time.Second, 10*time.Millisecond, "the other replica's mirror catches up")

	// Without create, a missing record is left alone.
	rec, changed, err := stores[0].Update(ctx, "nope", nil, func(*v1.RunRecord) bool { return true })
	require.NoError(t, err)
	require.False(t, changed)
	require.Nil(t, rec)
}

func TestAggregatesAndPrune(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	t0 := time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)
	clock := t0
	s := runstore.New(env.KV(t, "taskyard-runs"), logging.Discard(), 10*time.Minute, func() time.Time { return clock })
	ctx := context.Background()
	require.NoError(t, s.Watch(ctx))
	put := func(id string, r *v1.RunRecord) {
		_, _, err := s.Update(ctx, id, func() *v1.RunRecord { return r }, func(*v1.RunRecord) bool { return false })
		require.NoError(t, err)
	}
	put("a", &v1.RunRecord{RunId: "a", Schedule: "s", Trigger: v1.Trigger_TRIGGER_SCHEDULE, ScheduledAt: timestamppb.New(t0),
		DispatchedAt: timestamppb.New(t0), FinishedAt: timestamppb.New(t0.Add(time.Minute)), Outcome: v1.Outcome_OUTCOME_SUCCEEDED})
	put("b", &v1.RunRecord{RunId: "b", Schedule: "s", Trigger: v1.Trigger_TRIGGER_SCHEDULE, ScheduledAt: timestamppb.New(t0.Add(time.Hour)),
		DispatchedAt: timestamppb.New(t0.Add(time.Hour)), FinishedAt: timestamppb.New(t0.Add(61 * time.Minute)), Outcome: v1.Outcome_OUTCOME_FAILED})
	put("c", &v1.RunRecord{RunId: "c", Schedule: "s", Trigger: v1.Trigger_TRIGGER_SCHEDULE, ScheduledAt: timestamppb.New(t0.Add(2 * time.Hour)),
		FinishedAt: timestamppb.New(t0.Add(2*time.Hour + 5*time.Minute)), Reason: runstore.MissedReasonPrefix + ": x"})
	put("d", &v1.RunRecord{RunId: "d", Schedule: "s", Trigger: v1.Trigger_TRIGGER_MANUAL, ScheduledAt: timestamppb.New(t0.Add(3 * time.Hour)), DispatchedAt: timestamppb.New(t0.Add(3 * time.Hour))})
	agg := s.Agg("s")
	require.Equal(t, t0.Add(time.Minute), agg.LastSuccess)
	require.Equal(t, v1.Outcome_OUTCOME_FAILED, agg.LastOutcome)
	require.Equal(t, "b", agg.LastRunID)
	require.Equal(t, t0.Add(2*time.Hour), agg.LastDecided, "manual runs are not fires")
	require.Equal(t, t0.Add(2*time.Hour), agg.LastMissed)
	require.Equal(t, t0.Add(3*time.Hour), agg.LastActivity)
	require.Equal(t, 4, s.Len())
	fin := s.Finished(t0, t0.Add(2*time.Hour))
	require.Equal(t, 1, fin[""].Succeeded)
	require.Equal(t, 1, fin[""].Failed)
	require.True(t, fin[""].Failing["s"])
	require.Empty(t, s.Finished(t0.Add(2*time.Hour), t0.Add(3*time.Hour)))
	s.Prune(t0.Add(3*time.Hour), nil)
	require.Equal(t, 1, s.Len(), "finished records go after their retention; the open one stays")
	_, ok := s.Get("d")
	require.True(t, ok)
	require.Equal(t, agg, s.Agg("s"), "aggregates outlive pruning")
}
