// Package lease elects the scheduler leader with a key in the JetStream KV
// bucket taskyard-leases. The bucket's TTL is the lease TTL: a key not
// written for TTL disappears. An instance becomes leader only when its
// Create of the key succeeds, stays leader only while its revision-checked
// Updates succeed, and stops leading TTL minus a safety margin after the
// last write it sent that succeeded — before the server can let anyone else
// take the key.
//
// A standby does not poll blindly: when its Create fails because the key
// exists, it reads the key's server timestamp and tries again just after
// the moment the server expires it (then every FastRetry until the server
// has), and it watches the key so a lease released on graceful shutdown is
// taken at once. Takeover after a leader crash therefore comes within a few
// hundred milliseconds of TTL after the dead leader's last renewal, not up
// to TTL/4 later.
package lease

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Key is the lease key of the scheduler.
const Key = "scheduler"

// FastRetry is how often a standby retries while the key is past its
// expiry time but the server has not removed it yet.
const FastRetry = 100 * time.Millisecond

// Lease is one instance's side of the election.
type Lease struct {
	kv       jetstream.KeyValue
	key      string
	id       string
	ttl      time.Duration
	log      *slog.Logger
	now      func() time.Time
	interval time.Duration
	margin   time.Duration
	fast     time.Duration

	mu    sync.Mutex
	rev   uint64
	until time.Time // leading while now < until
	ch    chan bool
	state bool
}

// New returns the lease of instance id on kv. ttl must equal the bucket's
// TTL (MaxAge).
func New(kv jetstream.KeyValue, key, id string, ttl time.Duration, log *slog.Logger) *Lease {
	return &Lease{
		kv: kv, key: key, id: id, ttl: ttl, log: log, now: time.Now,
		interval: ttl / 4,
		margin:   ttl / 5,
		fast:     FastRetry,
		ch:       make(chan bool, 1),
	}
}

// Leading reports whether this instance holds the lease right now. Callers
// check it immediately before every leader-only action.
func (l *Lease) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev != 0 && l.now().Before(l.until)
}

// Changes delivers true on gaining and false on losing leadership. Only the
// latest value is kept when the reader is slow.
func (l *Lease) Changes() <-chan bool { return l.ch }

func (l *Lease) notify(leading bool) {
	if leading == l.state {
		return
	}
	l.state = leading
	select {
	case <-l.ch:
	default:
	}
	l.ch <- leading
	l.log.Info("leadership changed", "leading", leading, "instance", l.id)
}

// Run campaigns and renews until ctx is done. When release is true a held
// lease is deleted on the way out so another instance takes over at once;
// otherwise it expires after TTL (what a crash looks like).
func (l *Lease) Run(ctx context.Context, release bool) error {
	wake := l.watch(ctx)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.mu.Lock()
			rev, leading := l.rev, l.rev != 0 && l.now().Before(l.until)
			l.rev, l.until = 0, time.Time{}
			l.notify(false)
			l.mu.Unlock()
			if release && leading {
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := l.kv.Delete(dctx, l.key, jetstream.LastRevision(rev))
				cancel()
				if err != nil {
					l.log.Warn("lease release", "err", err)
				}
			}
			return nil
		case <-wake:
			// The key was deleted (a leader released it): campaign now.
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
		t.Reset(l.step(ctx))
	}
}

// watch delivers a value each time the key is deleted or purged, so a
// standby campaigns at once when a leader releases the lease. Without a
// watch (it failed to start) the timers alone still elect a leader.
func (l *Lease) watch(ctx context.Context) <-chan struct{} {
	wake := make(chan struct{}, 1)
	w, err := l.kv.Watch(ctx, l.key, jetstream.UpdatesOnly())
	if err != nil {
		l.log.Warn("lease watch", "err", err)
		return wake
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil && e.Operation() != jetstream.KeyValuePut {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return wake
}

// step renews or campaigns once and returns how long to wait before the
// next step.
func (l *Lease) step(ctx context.Context) time.Duration {
	l.mu.Lock()
	rev := l.rev
	if rev != 0 && !l.now().Before(l.until) {
		// Renewals failed for too long: the server may already have let
		// the key expire.
		l.rev, rev = 0, 0
		l.notify(false)
	}
	l.mu.Unlock()

	sent := l.now()
	cctx, cancel := context.WithTimeout(ctx, l.interval)
	defer cancel()
	var (
		newRev uint64
		err    error
	)
	if rev == 0 {
		newRev, err = l.kv.Create(cctx, l.key, []byte(l.id))
	} else {
		newRev, err = l.kv.Update(cctx, l.key, []byte(l.id), rev)
	}
	l.mu.Lock()
	if ctx.Err() != nil {
		l.mu.Unlock()
		return l.interval
	}
	switch {
	case err == nil:
		l.rev = newRev
		l.until = sent.Add(l.ttl - l.margin)
		l.notify(true)
	case rev != 0 && isConflict(err):
		// Someone else wrote the key: we are not the leader any more.
		l.log.Warn("lease lost", "err", err)
		l.rev, l.until = 0, time.Time{}
		l.notify(false)
	case rev != 0:
		// Transient: keep leading until `until`, retry next interval.
		l.log.Warn("lease renew", "err", err)
	case !isConflict(err):
		l.log.Debug("lease campaign", "err", err)
	}
	leading := l.rev != 0
	l.mu.Unlock()
	if leading || err == nil || !isConflict(err) {
		return l.interval
	}
	// The key is held by someone else: come back when it expires.
	e, gerr := l.kv.Get(cctx, l.key)
	switch {
	case errors.Is(gerr, jetstream.ErrKeyNotFound):
		return l.fast // gone between the Create and the Get
	case gerr != nil:
		return l.interval
	}
	return retryAfter(e.Created(), l.now(), l.ttl, l.interval, l.fast)
}

// retryAfter is how long a standby waits before its next Create when the
// key was last written at written (server time): until just after the
// server expires it at written+ttl, but never longer than interval (the
// holder renews meanwhile, or the clocks disagree), and every fast while
// the expiry time has passed but the key is still there. After interval
// past the expiry time the clocks evidently disagree and it falls back to
// interval.
func retryAfter(written, now time.Time, ttl, interval, fast time.Duration) time.Duration {
	const slack = 20 * time.Millisecond
	wait := written.Add(ttl).Sub(now) + slack
	switch {
	case wait > interval:
		return interval
	case wait > 0:
		return wait
	case wait > -interval:
		return fast
	default:
		return interval
	}
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound)
}

// Holder returns the instance id holding the lease, "" when none.
func Holder(ctx context.Context, kv jetstream.KeyValue, key string) (string, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}
