package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// Lease makes one process at a time the owner of an exporter instance: two
// exporters with the same --instance (a misconfiguration, or an old and a
// new task overlapping during a deployment) would share consumers and
// snapshot keys and count wrong. The lease is key exporter.<instance> of KV
// bucket <prefix>-instances, whose keys expire v1.InstanceTTL (10 s) after
// their last write: an owner that dies frees it within that time, one that
// stops deletes it. (Not the scheduler's leases bucket: its TTL follows the
// scheduler's --lease-ttl and may shrink under a running exporter.)
type Lease struct {
	kv    jetstream.KeyValue
	key   string
	owner string
	rev   uint64
	log   *slog.Logger
}

// ErrLeaseLost is returned by Keep when another process took the instance.
var ErrLeaseLost = errors.New("instance lease lost")

// AcquireLease waits until it holds the lease of instance, or ctx is done.
func AcquireLease(ctx context.Context, js jetstream.JetStream, prefix, instance, owner string, log *slog.Logger) (*Lease, error) {
	bucket := v1.Buckets(prefix).Instances
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", bucket, err)
	}
	l := &Lease{kv: kv, key: "exporter." + InstanceToken(instance), owner: owner, log: log}
	logged := false
	for {
		rev, err := kv.Create(ctx, l.key, []byte(owner))
		if err == nil {
			l.rev = rev
			return l, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("acquire instance lease %s: %w", l.key, err)
		}
		if !logged {
			holder := ""
			if e, gerr := kv.Get(ctx, l.key); gerr == nil {
				holder = string(e.Value())
			}
			log.Warn("another exporter holds this instance, waiting for its lease", "instance", instance, "holder", holder)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("acquire instance lease %s: %w", l.key, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Keep renews the lease until ctx is done, every third of the bucket's
// TTL. The TTL is read again before every renewal: the bucket is shared
// with the scheduler, which sets it to its --lease-ttl, possibly after this
// exporter started. It returns ErrLeaseLost when the key was rewritten by
// someone else (the lease expired while this process could not renew it,
// and another took it).
func (l *Lease) Keep(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.renewInterval(ctx)):
		}
		rev, err := l.kv.Update(ctx, l.key, []byte(l.owner), l.rev)
		switch {
		case err == nil:
			l.rev = rev
		case ctx.Err() != nil:
			return nil
		default:
			if err := l.recover(ctx, err); err != nil {
				return err
			}
		}
	}
}

// recover handles a failed renewal. The key may have expired while NATS
// was unreachable for longer than the TTL (then it is taken again: nobody
// else holds the instance), still be ours under another revision, or be
// held by another process (then the lease is lost). Any other failure (NATS
// still away) is logged and retried at the next renewal.
func (l *Lease) recover(ctx context.Context, cause error) error {
	e, err := l.kv.Get(ctx, l.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := l.kv.Create(ctx, l.key, []byte(l.owner))
		if err != nil {
			l.log.Warn("renew instance lease", "key", l.key, "err", err)
			return nil
		}
		l.rev = rev
		l.log.Warn("instance lease had expired and was taken again", "key", l.key, "cause", cause)
		return nil
	case err != nil:
		l.log.Warn("renew instance lease", "key", l.key, "err", cause)
		return nil
	case string(e.Value()) == l.owner:
		l.rev = e.Revision()
		return nil
	default:
		return fmt.Errorf("%w: %s is held by %s", ErrLeaseLost, l.key, e.Value())
	}
}

// renewInterval is a third of the bucket's current TTL, between 100 ms and
// 3 s (3 s when the TTL cannot be read).
func (l *Lease) renewInterval(ctx context.Context) time.Duration {
	d := 3 * time.Second
	if st, err := l.kv.Status(ctx); err == nil && st.TTL() > 0 {
		d = min(st.TTL()/3, d)
	}
	return max(d, 100*time.Millisecond)
}

// Release deletes the lease if this process still holds it.
func (l *Lease) Release(ctx context.Context) error {
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		return fmt.Errorf("release instance lease %s: %w", l.key, err)
	}
	return nil
}
