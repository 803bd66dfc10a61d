package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/pipeline"
	"github.com/taskyard/taskyard/services/logrouter/internal/record"
	"github.com/taskyard/taskyard/services/logrouter/internal/route"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// readEvents reads every durable record of sp as events.
func readEvents(t *testing.T, sp *spool.Spool) []event.Event {
	t.Helper()
	rd := sp.NewReader()
	defer rd.Close()
	var out []event.Event
	for rd.Pending() {
		b, err := rd.Next(context.Background(), 1000, 1<<20, 0)
		require.NoError(t, err)
		for _, rec := range b.Records {
			var e event.Event
			require.NoError(t, e.Unmarshal(rec))
			out = append(out, e)
		}
	}
	return out
}

// TestTakeRoutesFramedRuns: records routed to different subsets of the
// outputs (so each output's records are not all next to each other in
// the arena) and spools small enough to need several appends reach every
// spool whole and in order, with the spool clock's append time.
func TestTakeRoutesFramedRuns(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var outs []*Output
	for i, quota := range []int64{1 << 30, 40 << 10, 1 << 30} {
		sp, err := spool.Open(spool.Options{Dir: t.TempDir(), MaxBytes: quota, SegmentBytes: 4 << 10, Now: func() time.Time { return now }})
		require.NoError(t, err)
		t.Cleanup(func() { sp.Close() })
		outs = append(outs, &Output{Name: fmt.Sprint("o", i), Spool: sp, Counters: &output.Counters{}})
	}
	in := &Ingest{
		Pipeline: pipeline.New(pipeline.Config{}),
		// o0 everything, o1 errors only, o2 the "web" container only.
		Routes:  &route.Table{NOutputs: 3, Routes: []route.Route{{Outputs: []int{0}}, {Level: "error", Outputs: []int{1}}, {Container: "web", Outputs: []int{2}}}},
		Outputs: outs,
		Now:     func() time.Time { return now },
	}
	var recs []Record
	want := make([][]string, 3)
	for i := 0; i < 300; i++ {
		level, ctr := "info", "worker"
		if i%3 == 0 {
			level = "error"
		}
		if i%7 < 3 {
			ctr = "web"
		}
		line := fmt.Sprintf(`{"level":%q,"i":%d,"pad":"%0*d"}`, level, i, i%50*4, 0)
		recs = append(recs, Record{Time: now.Add(time.Duration(i)), Record: record.Record{
			{Key: "log", Str: line, IsStr: true}, {Key: "container", Str: ctr, IsStr: true},
		}})
		want[0] = append(want[0], line)
		if level == "error" {
			want[1] = append(want[1], line)
		}
		if ctr == "web" {
			want[2] = append(want[2], line)
		}
	}
	wait, err := in.Take(context.Background(), &InputCounters{}, "tag", recs, 1)
	require.NoError(t, err)
	require.NoError(t, wait(context.Background()))
	for o, out := range outs {
		evs := readEvents(t, out.Spool)
		var got []string
		for _, e := range evs {
			got = append(got, e.Log)
			require.Equal(t, event.FlagJSON, e.Flags)
			require.Equal(t, e.Log, string(e.Attrs))
		}
		require.Equal(t, want[o], got, "output %d", o)
		require.True(t, now.Equal(out.Spool.Oldest()), "append time %v", out.Spool.Oldest())
		require.Zero(t, out.Counters.DroppedRecords.Load())
	}
}
