// Package ingest is the path from an input to the spools: every record
// goes through the pipeline, is counted for LogStats, offered to live
// tails, matched against the routes, encoded once, and appended to the
// spool of every output it routes to. The returned wait reports when all
// of those appends are durable; inputs ack only then.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/pipeline"
	"github.com/taskyard/taskyard/services/logrouter/internal/record"
	"github.com/taskyard/taskyard/services/logrouter/internal/route"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
	"github.com/taskyard/taskyard/services/logrouter/internal/stats"
	"github.com/taskyard/taskyard/services/logrouter/internal/tail"
)

// Output is one destination's spool as seen by the inputs.
type Output struct {
	Name     string
	Spool    *spool.Spool
	Counters *output.Counters
}

// InputCounters are Fluent Bit's input plugin counters.
type InputCounters struct {
	Records, Bytes, ProtocolErrors atomic.Int64
}

// Ingest connects inputs to spools.
type Ingest struct {
	Pipeline *pipeline.Pipeline
	Routes   *route.Table
	Outputs  []*Output
	Window   *stats.Window
	Tail     *tail.Registry
	// Unrouted counts records no route matched.
	Unrouted atomic.Int64
	// Now is the clock of the spool records' append time (time.Now when nil).
	Now func() time.Time
}

// Record is an input-neutral record.
type Record struct {
	Time   time.Time
	Record record.Record
}

// Accept implements forward.Handler for input counters c.
func (in *Ingest) Forward(c *InputCounters) forward.Handler { return fwHandler{in, c} }

type fwHandler struct {
	in *Ingest
	c  *InputCounters
}

func (h fwHandler) Accept(ctx context.Context, f *forward.Frame, wire int) (func(context.Context) error, error) {
	return h.in.take(ctx, h.c, f.Tag, len(f.Entries), func(i int) (time.Time, record.Record) {
		return f.Entries[i].Time, f.Entries[i].Record
	}, wire)
}

// Take processes records from one input message of wire bytes.
func (in *Ingest) Take(ctx context.Context, c *InputCounters, tag string, recs []Record, wire int) (func(context.Context) error, error) {
	return in.take(ctx, c, tag, len(recs), func(i int) (time.Time, record.Record) { return recs[i].Time, recs[i].Record }, wire)
}

// evPool holds the event slices of finished takes (events are only needed
// until they are encoded). Slices for more than maxPooledEvents are not kept.
var evPool = sync.Pool{New: func() any { return new([]event.Event) }}

const maxPooledEvents = 4096

// take processes the n records rec(0) … rec(n-1).
func (in *Ingest) take(ctx context.Context, c *InputCounters, tag string, n int, rec func(int) (time.Time, record.Record), wire int) (func(context.Context) error, error) {
	c.Records.Add(int64(n))
	c.Bytes.Add(int64(wire))
	evp := evPool.Get().(*[]event.Event)
	evs := *evp
	if cap(evs) < n {
		evs = make([]event.Event, 0, n)
	}
	defer func() {
		if cap(evs) <= maxPooledEvents {
			// Drop the strings (they point into the input frame) before reuse.
			clear(evs[:n])
			*evp = evs[:0]
			evPool.Put(evp)
		}
	}()
	evs = evs[:0]
	var memo pipeline.Memo
	for i := 0; i < n; i++ {
		t, r := rec(i)
		evs = evs[:len(evs)+1]
		if !in.Pipeline.ProcessWith(&memo, tag, t, r, &evs[len(evs)-1]) {
			evs = evs[:len(evs)-1]
		}
	}
	if in.Window != nil {
		in.Window.Add(evs)
	}
	if in.Tail != nil {
		in.Tail.Offer(evs)
	}
	// Every routed event is encoded once, framed as a spool record (the
	// checksum computed here, in the input's goroutine), into one arena;
	// per output the records it routes to are spans of the arena, and
	// records next to each other go to the spool as one run.
	type span struct{ start, end int }
	per := make([][]span, len(in.Outputs))
	size := 0
	for i := range evs {
		e := &evs[i]
		size += 64 + spool.HeaderLen + len(e.Tag) + len(e.Cluster) + len(e.Service) + len(e.Container) + len(e.Task) + len(e.Source) + len(e.Level) + len(e.RunID) + len(e.Log) + len(e.Attrs)
	}
	arena := getArena(size)
	now := time.Now()
	if in.Now != nil {
		now = in.Now()
	}
	for i := range evs {
		set := in.Routes.Match(&evs[i])
		if set == 0 {
			in.Unrouted.Add(1)
			continue
		}
		var start int
		arena, start = spool.BeginFrame(arena)
		arena = evs[i].AppendBinary(arena)
		spool.EndFrame(arena, start, now)
		for o := range in.Outputs {
			if set&(1<<o) != 0 {
				per[o] = append(per[o], span{start, len(arena)})
			}
		}
	}
	var commits []*spool.Commit
	for o, rs := range per {
		if len(rs) == 0 {
			continue
		}
		out := in.Outputs[o]
		// Append in pieces of at most a quarter of the quota, so a frame
		// larger than a small spool still gets through piece by piece.
		for len(rs) > 0 {
			n, size := 0, int64(0)
			for n < len(rs) && (n == 0 || size+int64(rs[n].end-rs[n].start) <= out.Spool.MaxBytes()/4) {
				size += int64(rs[n].end - rs[n].start)
				n++
			}
			var runs [][]byte
			runStart := rs[0].start
			for k := 1; k <= n; k++ {
				if k == n || rs[k].start != rs[k-1].end {
					runs = append(runs, arena[runStart:rs[k-1].end:rs[k-1].end])
					if k < n {
						runStart = rs[k].start
					}
				}
			}
			cm, err := out.Spool.AppendFramed(ctx, runs)
			if errors.Is(err, spool.ErrFull) {
				out.Counters.DroppedRecords.Add(int64(n))
				rs = rs[n:]
				continue
			}
			if errors.Is(err, spool.ErrTooLarge) {
				// One record beyond the whole quota can never be spooled.
				out.Counters.DroppedRecords.Add(1)
				rs = rs[1:]
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("spool %s: %w", out.Name, err)
			}
			commits = append(commits, cm)
			rs = rs[n:]
		}
	}
	if len(commits) == 0 {
		putArena(arena)
		return func(context.Context) error { return nil }, nil
	}
	var recycled atomic.Bool
	return func(ctx context.Context) error {
		for _, cm := range commits {
			if err := cm.Wait(ctx); err != nil {
				return err
			}
		}
		// Every append is written: the spools hold no reference to the
		// arena any more. (Not when a wait failed, nor when nobody waits:
		// then the garbage collector frees it.)
		if recycled.CompareAndSwap(false, true) {
			putArena(arena)
		}
		return nil
	}, nil
}

// arenaPool holds the encoding arenas of takes whose appends are durable.
var arenaPool sync.Pool

// maxPooledArena bounds the arenas kept for reuse (a 1,000-record frame
// of FireLens records needs ~0.5 MB).
const maxPooledArena = 8 << 20

func getArena(size int) []byte {
	if p, _ := arenaPool.Get().(*[]byte); p != nil && cap(*p) >= size {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

func putArena(b []byte) {
	if cap(b) == 0 || cap(b) > maxPooledArena {
		return
	}
	arenaPool.Put(&b)
}
