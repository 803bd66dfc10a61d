// Package runstore keeps run records in KV taskyard-runs with
// compare-and-set, and mirrors the bucket in memory through a KV watch so
// every exitwatch replica sees every run (the event consumer is shared
// between replicas, the picture is not).
package runstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// MissedReasonPrefix starts the reason of a record created for a missed
// fire.
const MissedReasonPrefix = "missed"

// maxAttempts bounds the compare-and-set retry loop of Update.
const maxAttempts = 50

// ErrConflict is returned when Update lost the race maxAttempts times.
var ErrConflict = errors.New("run record kept changing under compare-and-set")

type entry struct {
	rec *v1.RunRecord
	rev uint64
}

// ScheduleAgg is what the store remembers per schedule (and ping check)
// beyond the open runs.
type ScheduleAgg struct {
	// LastDecided is the newest scheduled_at of a schedule-triggered run
	// record (dispatched, skipped, failed or missed).
	LastDecided time.Time
	// LastSuccess is when the newest SUCCEEDED run finished.
	LastSuccess time.Time
	// LastFinished, LastOutcome and LastRunID describe the newest verdict.
	LastFinished time.Time
	LastOutcome  v1.Outcome
	LastRunID    string
	// LastActivity is the newest dispatch, start or finish of any run.
	LastActivity time.Time
	// LastMissed is the newest expected fire judged missed.
	LastMissed time.Time
}

// Store is the KV bucket plus its in-memory mirror. Records handed out are
// shared: never modify them, Update gives mutate a private copy.
type Store struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	retain time.Duration
	now    func() time.Time

	mu     sync.RWMutex
	runs   map[string]entry
	aggs   map[string]*ScheduleAgg
	ready  bool
	closed map[string]time.Time // finished run -> when it may be dropped
	// done counts verdicts per minute of finishing and cluster, so the
	// summary does not need the finished records themselves.
	done map[int64]map[string]*Counts
}

// Counts are the verdicts of one cluster in a time window.
type Counts struct {
	Succeeded, Failed int
	// Failing lists the schedules with a failed run.
	Failing map[string]bool
}

// New returns a store over kv. Finished records stay in memory for retain
// after they finished (summary window, silent-run grace).
func New(kv jetstream.KeyValue, log *slog.Logger, retain time.Duration, now func() time.Time) *Store {
	return &Store{kv: kv, log: log, retain: retain, now: now, runs: map[string]entry{}, aggs: map[string]*ScheduleAgg{}, closed: map[string]time.Time{}, done: map[int64]map[string]*Counts{}}
}

// Open reports whether a record is a run still waiting for its verdict.
func Open(r *v1.RunRecord) bool {
	return r.GetOutcome() == v1.Outcome_OUTCOME_UNSPECIFIED && r.GetFinishedAt() == nil
}

// Watch mirrors the bucket until ctx ends. It returns once the initial
// values are loaded (Ready), then keeps updating in the background.
func (s *Store) Watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch run records: %w", err)
	}
	loaded := make(chan struct{})
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						s.mu.Lock()
						s.ready = true
						s.mu.Unlock()
						close(loaded)
					}
					continue
				}
				if e.Operation() != jetstream.KeyValuePut {
					s.mu.Lock()
					delete(s.runs, e.Key())
					s.mu.Unlock()
					continue
				}
				rec := &v1.RunRecord{}
				if err := proto.Unmarshal(e.Value(), rec); err != nil {
					s.log.Warn("undecodable run record", "key", e.Key(), "err", err)
					continue
				}
				s.put(e.Key(), rec, e.Revision())
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

// Ready reports whether the initial load finished.
func (s *Store) Ready() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ready
}

func (s *Store) put(key string, rec *v1.RunRecord, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, known := s.runs[key]
	if known && cur.rev >= rev {
		return
	}
	if (!known || Open(cur.rec)) && rec.GetOutcome() != v1.Outcome_OUTCOME_UNSPECIFIED && rec.GetFinishedAt() != nil {
		s.count(rec)
	}
	s.runs[key] = entry{rec: rec, rev: rev}
	s.aggregate(rec)
	if !Open(rec) {
		fin := rec.GetFinishedAt().AsTime()
		if rec.GetFinishedAt() == nil {
			fin = s.now()
		}
		s.closed[key] = fin.Add(s.retain)
	} else {
		delete(s.closed, key)
	}
}

func after(a time.Time, ts interface{ AsTime() time.Time }, valid bool) time.Time {
	if !valid {
		return a
	}
	if t := ts.AsTime(); t.After(a) {
		return t
	}
	return a
}

func (s *Store) aggregate(r *v1.RunRecord) {
	name := r.GetSchedule()
	if name == "" {
		return
	}
	a := s.aggs[name]
	if a == nil {
		a = &ScheduleAgg{}
		s.aggs[name] = a
	}
	if tr := r.GetTrigger(); (tr == v1.Trigger_TRIGGER_SCHEDULE || tr == v1.Trigger_TRIGGER_CATCHUP) && r.GetScheduledAt() != nil {
		a.LastDecided = after(a.LastDecided, r.GetScheduledAt(), true)
	}
	if strings.HasPrefix(r.GetReason(), MissedReasonPrefix) && r.GetDispatchedAt() == nil && r.GetScheduledAt() != nil {
		a.LastMissed = after(a.LastMissed, r.GetScheduledAt(), true)
	}
	a.LastActivity = after(a.LastActivity, r.GetDispatchedAt(), r.GetDispatchedAt() != nil)
	a.LastActivity = after(a.LastActivity, r.GetStartedAt(), r.GetStartedAt() != nil)
	if r.GetOutcome() != v1.Outcome_OUTCOME_UNSPECIFIED && r.GetFinishedAt() != nil {
		fin := r.GetFinishedAt().AsTime()
		a.LastActivity = after(a.LastActivity, r.GetFinishedAt(), true)
		if !fin.Before(a.LastFinished) {
			a.LastFinished, a.LastOutcome, a.LastRunID = fin, r.GetOutcome(), r.GetRunId()
		}
		if r.GetOutcome() == v1.Outcome_OUTCOME_SUCCEEDED && fin.After(a.LastSuccess) {
			a.LastSuccess = fin
		}
	}
}

// count adds a verdict to the per-minute counters. A record seen
// finished for the first time by this process counts once (a record pruned
// from memory and seen again may count twice; the summary is a report, not
// a ledger).
func (s *Store) count(r *v1.RunRecord) {
	fin := r.GetFinishedAt().AsTime()
	if s.now().Sub(fin) > 24*time.Hour {
		return
	}
	m := fin.Unix() / 60
	per := s.done[m]
	if per == nil {
		per = map[string]*Counts{}
		s.done[m] = per
	}
	c := per[r.GetCluster()]
	if c == nil {
		c = &Counts{Failing: map[string]bool{}}
		per[r.GetCluster()] = c
	}
	if r.GetOutcome() == v1.Outcome_OUTCOME_SUCCEEDED {
		c.Succeeded++
	} else {
		c.Failed++
		if r.GetSchedule() != "" {
			c.Failing[r.GetSchedule()] = true
		}
	}
}

// Finished returns the verdicts per cluster of runs that finished in
// (from, to], at minute resolution.
func (s *Store) Finished(from, to time.Time) map[string]*Counts {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]*Counts{}
	for m, per := range s.done {
		if m*60 < from.Unix() || m*60 >= to.Unix() {
			continue
		}
		for cl, c := range per {
			o := out[cl]
			if o == nil {
				o = &Counts{Failing: map[string]bool{}}
				out[cl] = o
			}
			o.Succeeded += c.Succeeded
			o.Failed += c.Failed
			for f := range c.Failing {
				o.Failing[f] = true
			}
		}
	}
	return out
}

// Prune drops finished records whose retention passed, and earlier those
// keep does not want (nil keeps every record until its retention), and
// counters older than a day.
func (s *Store) Prune(now time.Time, keep func(*v1.RunRecord) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, until := range s.closed {
		e, ok := s.runs[k]
		if !ok || now.After(until) || (keep != nil && !keep(e.rec)) {
			delete(s.closed, k)
			delete(s.runs, k)
		}
	}
	for m := range s.done {
		if now.Unix()-m*60 > 24*3600 {
			delete(s.done, m)
		}
	}
}

// Get returns the mirrored record of runID.
func (s *Store) Get(runID string) (*v1.RunRecord, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.runs[runID]
	return e.rec, ok
}

// Agg returns a copy of the aggregate of schedule name.
func (s *Store) Agg(name string) ScheduleAgg {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if a := s.aggs[name]; a != nil {
		return *a
	}
	return ScheduleAgg{}
}

// Snapshot returns the mirrored records (open ones and recently finished).
func (s *Store) Snapshot() []*v1.RunRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*v1.RunRecord, 0, len(s.runs))
	for _, e := range s.runs {
		out = append(out, e.rec)
	}
	return out
}

// Len is the number of mirrored records.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.runs)
}

// Fetch reads runID from the bucket itself (not the mirror).
func (s *Store) Fetch(ctx context.Context, runID string) (*v1.RunRecord, uint64, error) {
	e, err := s.kv.Get(ctx, runID)
	if err != nil {
		return nil, 0, err
	}
	rec := &v1.RunRecord{}
	if err := proto.Unmarshal(e.Value(), rec); err != nil {
		return nil, 0, fmt.Errorf("decode run record %s: %w", runID, err)
	}
	s.put(runID, rec, e.Revision())
	return rec, e.Revision(), nil
}

// Mutate changes a private copy of a record (a fresh one, from create, when
// the key does not exist yet) and reports whether it changed anything.
// It may run several times when the compare-and-set loses a race, so it
// must only derive its changes from the record it is given.
type Mutate func(r *v1.RunRecord) (changed bool)

// Update applies mutate to runID with compare-and-set. create makes the
// initial record when the key is absent; nil means "do nothing if absent".
// It returns the stored record and whether this call changed it.
func (s *Store) Update(ctx context.Context, runID string, create func() *v1.RunRecord, mutate Mutate) (*v1.RunRecord, bool, error) {
	s.mu.RLock()
	cur, cached := s.runs[runID]
	s.mu.RUnlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if !cached {
			rec, rev, err := s.Fetch(ctx, runID)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				if create == nil {
					return nil, false, nil
				}
				fresh := create()
				mutate(fresh)
				data, err := proto.Marshal(fresh)
				if err != nil {
					return nil, false, fmt.Errorf("encode run record %s: %w", runID, err)
				}
				rev, err := s.kv.Create(ctx, runID, data)
				if errors.Is(err, jetstream.ErrKeyExists) {
					continue // someone else created it: read and retry
				}
				if err != nil {
					return nil, false, fmt.Errorf("create run record %s: %w", runID, err)
				}
				s.put(runID, fresh, rev)
				return fresh, true, nil
			case err != nil:
				return nil, false, fmt.Errorf("read run record %s: %w", runID, err)
			}
			cur = entry{rec: rec, rev: rev}
		}
		next := proto.Clone(cur.rec).(*v1.RunRecord)
		if !mutate(next) {
			return cur.rec, false, nil
		}
		data, err := proto.Marshal(next)
		if err != nil {
			return nil, false, fmt.Errorf("encode run record %s: %w", runID, err)
		}
		rev, err := s.kv.Update(ctx, runID, data, cur.rev)
		if err != nil {
			if isConflict(err) {
				cached = false
				// Jittered pause so racing writers stop colliding.
				select {
				case <-ctx.Done():
					return nil, false, ctx.Err()
				case <-time.After(time.Duration(rand.Int64N(int64(attempt+1) * int64(time.Millisecond)))):
				}
				continue
			}
			return nil, false, fmt.Errorf("update run record %s: %w", runID, err)
		}
		s.put(runID, next, rev)
		return next, true, nil
	}
	return nil, false, fmt.Errorf("update run record %s: %w", runID, ErrConflict)
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound)
}
