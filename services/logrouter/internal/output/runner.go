// Package output delivers spooled events to their destinations. A Runner
// per output pages batches out of the output's spool, hands them to the
// output's Sink, retries failures with jittered exponential backoff, and
// commits the spool only up to what the sink reports delivered — so a
// crash or a long outage loses nothing, and one slow output never stalls
// another (each has its own spool and goroutine).
package output

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// Sink is a destination.
type Sink interface {
	// Deliver takes evs, which end at spool position end, and returns the
	// position up to which everything is delivered: end for sinks that
	// write synchronously, earlier for sinks that buffer. A *PartialError
	// names the events still to retry; a *PermanentError is not retried.
	// The events and their strings live in memory the runner reuses for
	// its next batch: a sink copies whatever it keeps after the call.
	Deliver(ctx context.Context, evs []event.Event, end spool.Pos) (spool.Pos, error)
	// Flush delivers buffered data that is due (every buffer when all)
	// and returns the delivered position; ok is false when the sink has
	// nothing to report (it does not buffer).
	Flush(ctx context.Context, all bool) (pos spool.Pos, ok bool, err error)
	// Close releases resources after the runner stops.
	Close() error
}

// PositionedSink is a Sink told where each event lies in the spool: the
// runner calls DeliverAt instead of Deliver, with at[i] the position of
// evs[i] (S3 names an object after its first record's position, so the
// upload repeated after a crash between upload and commit overwrites the
// same object). DeliverAt does not return a *PartialError.
type PositionedSink interface {
	Sink
	DeliverAt(ctx context.Context, evs []event.Event, at []spool.Pos, end spool.Pos) (spool.Pos, error)
}

// PartialError reports that some events were delivered and Remaining
// were not (retryable).
type PartialError struct {
	Remaining []event.Event
	Err       error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("%d records not delivered: %v", len(e.Remaining), e.Err)
}
func (e *PartialError) Unwrap() error { return e.Err }

// PermanentError is a failure retrying cannot fix (a 4xx other than
// 408/429): the events go to the dead-letter file.
type PermanentError struct {
	Events []event.Event // nil: the whole batch
	// Remaining are events of the batch still to deliver: failed in a
	// retryable way, or not attempted yet when Untried.
	Remaining []event.Event
	Untried   bool
	Err       error
}

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Counters are Fluent Bit's output plugin counters plus the spool's.
type Counters struct {
	ProcRecords, ProcBytes, Errors, Retries, RetriesFailed, DroppedRecords, RetriedRecords, DeadLettered atomic.Int64
}

// Map renders the counters with Fluent Bit's names.
func (c *Counters) Map() map[string]int64 {
	return map[string]int64{
		"proc_records":    c.ProcRecords.Load(),
		"proc_bytes":      c.ProcBytes.Load(),
		"errors":          c.Errors.Load(),
		"retries":         c.Retries.Load(),
		"retries_failed":  c.RetriesFailed.Load(),
		"dropped_records": c.DroppedRecords.Load(),
		"retried_records": c.RetriedRecords.Load(),
		"dead_lettered":   c.DeadLettered.Load(),
	}
}

// RetryPolicy is the backoff of failed deliveries.
type RetryPolicy struct {
	Initial, Max time.Duration
	// Limit is the number of attempts before dead-lettering (0: forever).
	Limit int
}

// Runner moves one output's spool to its sink.
type Runner struct {
	Name     string
	Sink     Sink
	Spool    *spool.Spool
	Counters *Counters
	Retry    RetryPolicy
	// MaxBatchRecords and MaxBatchBytes bound one Deliver (defaults 1000
	// and 4 MiB).
	MaxBatchRecords, MaxBatchBytes int
	// Tick is how often Flush is called while idle (default 1 s).
	Tick time.Duration
	// DrainTimeout bounds delivery after ctx is cancelled (default 25 s);
	// SetDrainTimeout changes it while Run runs.
	DrainTimeout time.Duration
	drain        atomic.Int64 // SetDrainTimeout's value, 0 when unset
	// DeadLetter receives events that could not be delivered.
	DeadLetter *DeadLetter
	// Nice, when above 0, runs the runner on a thread of its own whose
	// nice value is raised by Nice (Linux): the inputs, which acknowledge
	// records only once they are spooled, get the CPUs first during a
	// burst, and delivery uses what they leave. See NiceSupported.
	Nice int
	Log  *slog.Logger
}

// SetDrainTimeout sets how long a running Run keeps delivering once its
// context is cancelled; call it before cancelling (the daemon hands the
// outputs what is left of its drain timeout after the inputs stopped).
func (r *Runner) SetDrainTimeout(d time.Duration) { r.drain.Store(int64(d)) }

// NiceSupported reports whether Runner.Nice takes effect on this system.
const NiceSupported = niceSupported

// Run delivers until ctx is cancelled, then keeps delivering what is
// spooled (flushing every buffer) for at most DrainTimeout; whatever is
// left stays spooled for the next start.
func (r *Runner) Run(ctx context.Context) error {
	if r.MaxBatchRecords <= 0 {
		r.MaxBatchRecords = 1000
	}
	if r.MaxBatchBytes <= 0 {
		r.MaxBatchBytes = 4 << 20
	}
	if r.Tick <= 0 {
		r.Tick = time.Second
	}
	drain := r.DrainTimeout
	if drain <= 0 {
		drain = 25 * time.Second
	}
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopDrainTimer := context.AfterFunc(ctx, func() {
		if d := r.drain.Load(); d > 0 {
			drain = time.Duration(d)
		}
		t := time.AfterFunc(drain, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stopDrainTimer()
	defer r.Sink.Close()
	if r.Nice > 0 {
		// Locks this goroutine to its thread until Run returns.
		if nice, err := lowerThreadPriority(r.Nice); err != nil {
			r.Log.Warn("output runs at the inputs' CPU priority", "output", r.Name, "err", err)
		} else {
			r.Log.Debug("output thread priority lowered", "output", r.Name, "nice", nice)
		}
	}

	rd := r.Spool.NewReader()
	defer rd.Close()
	var evs []event.Event
	var at []spool.Pos
	for {
		if work.Err() != nil {
			r.Log.Warn("output drain timed out; the rest stays spooled", "output", r.Name, "spool_bytes", r.Spool.Bytes())
			return nil
		}
		draining := ctx.Err() != nil
		wait := r.Tick
		if draining {
			wait = 0
		}
		b, err := rd.Next(work, r.MaxBatchRecords, r.MaxBatchBytes, wait)
		if err != nil {
			if work.Err() != nil {
				continue
			}
			return fmt.Errorf("output %s: read spool: %w", r.Name, err)
		}
		if len(b.Records) > 0 {
			// The reader's buffer, reused by the next Next, backs every
			// string of the events: they are dead once delivered (sinks
			// copy what they keep).
			evs, at = evs[:0], at[:0]
			for i, rec := range b.Records {
				var e event.Event
				if err := e.UnmarshalShared(rec); err != nil {
					r.Counters.Errors.Add(1)
					r.Log.Error("undecodable spool record skipped", "output", r.Name, "err", err)
					continue
				}
				evs = append(evs, e)
				at = append(at, b.Starts[i])
			}
			pos, err := r.deliver(work, evs, at, b.End)
			if err != nil {
				continue // work cancelled: stays spooled
			}
			r.commit(pos)
		}
		all := draining && !rd.Pending()
		pos, ok, err := r.flush(work, all)
		if err != nil {
			continue
		}
		if ok {
			r.commit(pos)
		}
		if all {
			r.Log.Info("output drained", "output", r.Name, "spool_bytes", r.Spool.Bytes())
			return nil
		}
	}
}

func (r *Runner) commit(p spool.Pos) {
	if err := r.Spool.Commit(p); err != nil {
		r.Log.Error("commit spool", "output", r.Name, "err", err)
	}
}

func (r *Runner) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = max(r.Retry.Initial, time.Millisecond)
	b.MaxInterval = max(r.Retry.Max, b.InitialInterval)
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	return b
}

// deliver calls the sink until evs are delivered or dead-lettered; it
// fails only when ctx ends.
func (r *Runner) deliver(ctx context.Context, evs []event.Event, at []spool.Pos, end spool.Pos) (spool.Pos, error) {
	bo := r.newBackoff()
	ps, positioned := r.Sink.(PositionedSink)
	for attempt := 1; ; attempt++ {
		var pos spool.Pos
		var err error
		if positioned && len(at) == len(evs) {
			pos, err = ps.DeliverAt(ctx, evs, at, end)
		} else {
			pos, err = r.Sink.Deliver(ctx, evs, end)
		}
		if err == nil {
			return pos, nil
		}
		if ctx.Err() != nil {
			return spool.Pos{}, ctx.Err()
		}
		r.Counters.Errors.Add(1)
		var pe *PartialError
		if errors.As(err, &pe) {
			evs = pe.Remaining
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			bad := evs
			if perm.Events != nil {
				bad = perm.Events
			}
			r.deadLetter(bad, err)
			if len(perm.Remaining) == 0 {
				return end, nil
			}
			evs = perm.Remaining
			if perm.Untried {
				continue // not attempted yet: no backoff, not a retry
			}
		}
		if r.Retry.Limit > 0 && attempt >= r.Retry.Limit {
			r.Counters.RetriesFailed.Add(1)
			r.deadLetter(evs, fmt.Errorf("gave up after %d attempts: %w", attempt, err))
			return end, nil
		}
		d := bo.NextBackOff()
		r.Counters.Retries.Add(1)
		r.Counters.RetriedRecords.Add(int64(len(evs)))
		r.Log.Warn("output delivery failed; retrying", "output", r.Name, "records", len(evs), "attempt", attempt, "in", d.String(), "err", err)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return spool.Pos{}, ctx.Err()
		}
	}
}

func (r *Runner) flush(ctx context.Context, all bool) (spool.Pos, bool, error) {
	bo := r.newBackoff()
	for attempt := 1; ; attempt++ {
		pos, ok, err := r.Sink.Flush(ctx, all)
		if err == nil {
			return pos, ok, nil
		}
		if ctx.Err() != nil {
			return spool.Pos{}, false, ctx.Err()
		}
		r.Counters.Errors.Add(1)
		d := bo.NextBackOff()
		r.Counters.Retries.Add(1)
		r.Log.Warn("output flush failed; retrying", "output", r.Name, "attempt", attempt, "in", d.String(), "err", err)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return spool.Pos{}, false, ctx.Err()
		}
	}
}

func (r *Runner) deadLetter(evs []event.Event, err error) {
	r.Counters.DroppedRecords.Add(int64(len(evs)))
	r.Counters.DeadLettered.Add(int64(len(evs)))
	r.Log.Error("records dead-lettered", "output", r.Name, "records", len(evs), "err", err)
	if r.DeadLetter != nil {
		if werr := r.DeadLetter.Write(r.Name, evs, err); werr != nil {
			r.Log.Error("write dead-letter file", "output", r.Name, "err", werr)
		}
	}
}

// DeadLetter appends undeliverable events to an NDJSON file, one object
// per event: {"output", "reason", "time", "record"}.
type DeadLetter struct {
	Path string
	mu   sync.Mutex
}

// Write appends evs with the reason.
func (d *DeadLetter) Write(output string, evs []event.Event, reason error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, err := os.OpenFile(d.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	var b []byte
	rs, _ := json.Marshal(reason.Error())
	for i := range evs {
		b = append(b, `{"output":`...)
		b = event.AppendJSONString(b, output)
		b = append(b, `,"reason":`...)
		b = append(b, rs...)
		b = append(b, `,"record":`...)
		line := evs[i].AppendLine(nil, event.FormatJSON)
		b = append(b, line[:len(line)-1]...)
		b = append(b, "}\n"...)
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	return f.Sync()
}
