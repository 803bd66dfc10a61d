// Package stats counts what the logrouter sees and sends: LogStats per
// (cluster, service) window, published on taskyard.logs.stats.<cluster>.<service>,
// and Fluent-Bit-shaped input/output counters served on /api/v1/metrics
// and published as DaemonStats on taskyard.stats.logrouter.<instance>.
package stats

import (
	"strings"
	"sync"
	"time"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
)

type key struct{ cluster, service string }

type agg struct {
	records, bytes int64
	byLevel        counts
	byRun          counts
}

// counts are counters by name. The names given to add may point into
// memory reused after the call (an input frame): a name is copied when it
// is first inserted, and the counters are pointers so that adding to an
// existing name never assigns to the map — an assignment replaces the
// stored key with the (uncopied) key it is given.
type counts map[string]*int64

func (c counts) add(k string, n int64) {
	if p := c[k]; p != nil {
		*p += n
		return
	}
	c[strings.Clone(k)] = &n
}

func (c counts) values() map[string]int64 {
	if c == nil {
		return nil
	}
	m := make(map[string]int64, len(c))
	for k, p := range c {
		m[k] = *p
	}
	return m
}

// Window accumulates LogStats between publications.
type Window struct {
	mu    sync.Mutex
	start time.Time
	m     map[key]*agg
}

// NewWindow starts a window at now.
func NewWindow(now time.Time) *Window { return &Window{start: now, m: map[key]*agg{}} }

// Add counts events (size: bytes of each event's line).
func (w *Window) Add(evs []event.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var (
		a            *agg
		last         key
		level        string // the level of the pending run
		levelRecords int64
	)
	flushLevel := func() {
		if levelRecords == 0 {
			return
		}
		a.byLevel.add(level, levelRecords)
		levelRecords = 0
	}
	for i := range evs {
		e := &evs[i]
		// Consecutive events mostly share cluster, service and level: the
		// maps are looked up once per run of them.
		if a == nil || e.Cluster != last.cluster || e.Service != last.service {
			if a != nil {
				flushLevel()
			}
			last = key{e.Cluster, e.Service}
			a = w.m[last]
			if a == nil {
				a = &agg{byLevel: counts{}}
				// Strings may point into a whole input frame: keys are cloned on
				// insert so the window does not keep frames alive.
				w.m[key{strings.Clone(e.Cluster), strings.Clone(e.Service)}] = a
			}
		}
		if levelRecords > 0 && e.Level != level {
			flushLevel()
		}
		level = e.Level
		levelRecords++
		a.records++
		a.bytes += int64(len(e.Log))
		if e.RunID != "" {
			if a.byRun == nil {
				a.byRun = counts{}
			}
			a.byRun.add(e.RunID, 1)
		}
	}
	if a != nil {
		flushLevel()
	}
}

// Cut ends the window at now and returns its LogStats (one per cluster and
// service that logged), starting the next window.
func (w *Window) Cut(now time.Time, instance string) []*v1.LogStats {
	w.mu.Lock()
	m, start := w.m, w.start
	w.m, w.start = map[key]*agg{}, now
	w.mu.Unlock()
	out := make([]*v1.LogStats, 0, len(m))
	for k, a := range m {
		out = append(out, &v1.LogStats{
			Cluster:        k.cluster,
			Service:        k.service,
			Instance:       instance,
			WindowStart:    timestamppb.New(start),
			WindowEnd:      timestamppb.New(now),
			Records:        a.records,
			Bytes:          a.bytes,
			RecordsByLevel: a.byLevel.values(),
			RecordsByRun:   a.byRun.values(),
		})
	}
	return out
}
