package ingest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/pipeline"
	"github.com/taskyard/taskyard/services/logrouter/internal/record"
	"github.com/taskyard/taskyard/services/logrouter/internal/route"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
	"github.com/taskyard/taskyard/services/logrouter/internal/stats"
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

// TestReusedFrameMemory: frames decoded into one forward.Buffers and
// taken one after the other (so each decode overwrites the memory of the
// frame before, and each take reuses the encoding arena of the one before
// once its append is durable) reach the spool whole, and the LogStats
// window keeps every cluster, service, level and run id right.
func TestReusedFrameMemory(t *testing.T) {
	t.Parallel()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { sp.Close() })
	win := stats.NewWindow(time.Now())
	in := &Ingest{Pipeline: pipeline.New(pipeline.Config{}), Routes: &route.Table{NOutputs: 1}, Window: win,
		Outputs: []*Output{{Name: "o", Spool: sp, Counters: &output.Counters{}}}}
	h := in.Forward(&InputCounters{})
	var bf forward.Buffers
	var want []string
	for k := 0; k < 6; k++ {
		var es [][]byte
		for i := 0; i < 100+50*k; i++ {
			line := fmt.Sprintf(`{"level":"%s","frame":%d,"i":%d}`, []string{"info", "error"}[k%2], k, i)
			want = append(want, line)
			es = append(es, fwtest.Entry(time.Now(), map[string]any{
				"log": line, "cluster": fmt.Sprint("cluster-", k), "service": fmt.Sprint("svc-", k), "taskyard_run_id": fmt.Sprint("run-", k),
			}, fwtest.EventTimeFix))
		}
		frame := fwtest.PackedForward("app", es, fmt.Sprint("c", k), true)
		bf.Reset()
		f, err := forward.DecodeFrameInto(frame, forward.Limits{}, &bf)
		require.NoError(t, err)
		wait, err := h.Accept(context.Background(), f, len(frame))
		require.NoError(t, err)
		require.NoError(t, wait(context.Background()))
	}
	bf.Reset()
	var got []string
	for _, e := range readEvents(t, sp) {
		got = append(got, e.Log)
		require.Equal(t, "run-"+strings.TrimPrefix(e.Cluster, "cluster-"), e.RunID)
	}
	require.Equal(t, want, got)
	byCluster := map[string]string{}
	for _, ls := range win.Cut(time.Now(), "i") {
		var runs []string
		for r := range ls.RecordsByRun {
			runs = append(runs, r)
		}
		byCluster[ls.Cluster] = fmt.Sprintf("%s %d %v %v", ls.Service, ls.Records, ls.RecordsByLevel, runs)
	}
	require.Len(t, byCluster, 6)
	for k := 0; k < 6; k++ {
		lvl := []string{"info", "error"}[k%2]
		require.Equal(t, fmt.Sprintf("svc-%d %d map[%s:%d] [run-%d]", k, 100+50*k, lvl, 100+50*k, k), byCluster[fmt.Sprint("cluster-", k)])
	}
}
