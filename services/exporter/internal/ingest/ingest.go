// Package ingest feeds the exporter's aggregate.Store from JetStream and
// keeps it across restarts.
//
// # Catch-up
//
// One durable pull consumer per stream (RUNS, ALERTS, STATS), named
// exporter-<instance>, with AckAll: while the exporter is down the consumer
// keeps its position, and on start it delivers everything published since
// the last acknowledgement. Every exporter instance has its own consumers
// and its own snapshot, so several can run side by side (DAEMON service).
//
// # Snapshot and ack position: exactly-once counting
//
// The counters live in KV bucket <prefix>-snapshots, one key per entity
// (exporter.<instance>.<kind>.<id>; see aggregate.EntityKey), each entity
// carrying, per stream, the sequence of the last message it applied. The
// loop is:
//
//  1. apply a message to the store (the entities it touches record its
//     stream sequence), then remember it as the consumer's newest message;
//  2. flush (every FlushInterval, or after FlushEvery messages): under the
//     store lock take the encodings of every entity changed since the last
//     flush and, in the same critical section, the newest message of each
//     consumer;
//  3. write those entities to KV and wait for every write to be acknowledged;
//  4. only then acknowledge the remembered messages (AckAll: this acks
//     everything up to them).
//
// No loss: a message is acknowledged only after every entity it changed has
// been stored with its effect (the message was applied before it became
// "newest", and the entities were encoded after that). A failed write keeps
// the batch and retries it; nothing is acked meanwhile.
//
// No double counting: whatever is redelivered — after a crash between steps
// 3 and 4, or a redelivery after AckWait — reaches entities whose stored
// sequence is already at or past it, and they skip it. Entities that were
// not stored yet apply it, which is exactly what they missed.
//
// The argument assumes stream sequences only grow: if a stream is deleted
// and recreated, delete the exporter's snapshot keys and consumers too.
package ingest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/aggregate"
)

// Config tunes the ingester.
type Config struct {
	// Prefix of the taskyard subjects, streams and buckets.
	Prefix string
	// Instance names this exporter's consumers and snapshot keys.
	Instance string
	// FlushInterval is the longest time between snapshot writes (and so
	// between acknowledgements). Default 1s.
	FlushInterval time.Duration
	// FlushEvery flushes early after this many messages. Default 2000.
	FlushEvery int
	// AckWait is the consumers' redelivery timeout. Default 30s.
	AckWait time.Duration
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = v1.DefaultPrefix
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.FlushEvery <= 0 {
		c.FlushEvery = 2000
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	return c
}

// Ingester consumes the taskyard streams into a store.
type Ingester struct {
	js    jetstream.JetStream
	store *aggregate.Store
	log   *slog.Logger
	cfg   Config

	mu      sync.Mutex
	newest  map[string]jetstream.Msg // stream → newest applied message
	pending int
	kick    chan struct{}

	// batch is a taken but not yet stored set of entities (key → value),
	// with the acks it guards.
	batch     map[string][]byte
	batchAcks map[string]jetstream.Msg

	ready     atomic.Bool
	flushes   atomic.Int64
	badMsgs   atomic.Int64
	lastError atomic.Value // string
}

// New returns an ingester; call Restore, then Run.
func New(js jetstream.JetStream, store *aggregate.Store, log *slog.Logger, cfg Config) *Ingester {
	return &Ingester{
		js: js, store: store, log: log, cfg: cfg.withDefaults(),
		newest: map[string]jetstream.Msg{},
		kick:   make(chan struct{}, 1),
		batch:  map[string][]byte{}, batchAcks: map[string]jetstream.Msg{},
	}
}

var safeToken = regexp.MustCompile(`^[-_a-zA-Z0-9]+$`)

// InstanceToken is the instance as one KV key token and consumer name part.
func InstanceToken(instance string) string {
	if safeToken.MatchString(instance) {
		return instance
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(instance))
}

// ConsumerName is the durable consumer name of this instance.
func (in *Ingester) ConsumerName() string {
	return "exporter-" + aggregate.SafeName(in.cfg.Instance)
}

func (in *Ingester) keyPrefix() string { return "exporter." + InstanceToken(in.cfg.Instance) + "." }

func (in *Ingester) bucket() string { return v1.Buckets(in.cfg.Prefix).Snapshots }

// Restore loads this instance's stored entities into the store.
func (in *Ingester) Restore(ctx context.Context) (int, error) {
	kv, err := in.js.KeyValue(ctx, in.bucket())
	if err != nil {
		return 0, fmt.Errorf("open kv bucket %s: %w", in.bucket(), err)
	}
	w, err := kv.Watch(ctx, in.keyPrefix()+">", jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("read snapshot %s: %w", in.keyPrefix(), err)
	}
	defer func() { _ = w.Stop() }()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return n, errors.New("snapshot watcher closed")
			}
			if e == nil { // all current values delivered
				return n, nil
			}
			key := e.Key()[len(in.keyPrefix()):]
			if err := in.store.Restore(key, e.Value()); err != nil {
				return n, err
			}
			n++
		}
	}
}

// Ready reports whether Run has its consumers.
func (in *Ingester) Ready() bool { return in.ready.Load() }

// Flushes is the number of successful snapshot writes.
func (in *Ingester) Flushes() int64 { return in.flushes.Load() }

// BadMessages counts messages that could not be decoded (acknowledged and
// otherwise ignored).
func (in *Ingester) BadMessages() int64 { return in.badMsgs.Load() }

// Run consumes until ctx is done, then stops the consumers, writes the last
// snapshot and acknowledges what it covers.
func (in *Ingester) Run(ctx context.Context) error {
	names := v1.Streams(in.cfg.Prefix)
	var ccs []jetstream.ConsumeContext
	stopAll := func() {
		for _, cc := range ccs {
			cc.Stop()
		}
		for _, cc := range ccs {
			<-cc.Closed()
		}
	}
	for _, stream := range []string{names.Runs, names.Alerts, names.Stats} {
		cons, err := in.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable:       in.ConsumerName(),
			Description:   "taskyard exporter " + in.cfg.Instance,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckAllPolicy,
			AckWait:       in.cfg.AckWait,
			MaxAckPending: 4 * in.cfg.FlushEvery,
		})
		if err != nil {
			stopAll()
			return fmt.Errorf("create consumer %s on %s: %w", in.ConsumerName(), stream, err)
		}
		cc, err := cons.Consume(in.handler(stream), jetstream.PullMaxMessages(1000),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				in.log.Warn("consume", "stream", stream, "err", err)
			}))
		if err != nil {
			stopAll()
			return fmt.Errorf("consume %s: %w", stream, err)
		}
		ccs = append(ccs, cc)
	}
	in.ready.Store(true)
	in.log.Info("consuming", "consumer", in.ConsumerName(), "streams", []string{names.Runs, names.Alerts, names.Stats})

	t := time.NewTicker(in.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			in.ready.Store(false)
			stopAll()
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := in.Flush(fctx); err != nil {
				return fmt.Errorf("final snapshot: %w", err)
			}
			return nil
		case <-t.C:
		case <-in.kick:
		}
		if err := in.Flush(ctx); err != nil && ctx.Err() == nil {
			in.log.Warn("snapshot write failed, will retry", "err", err)
		}
	}
}

func (in *Ingester) handler(stream string) jetstream.MessageHandler {
	return func(msg jetstream.Msg) {
		var seq uint64
		if md, err := msg.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		if err := in.store.Apply(stream, seq, msg.Subject(), msg.Headers(), msg.Data()); err != nil {
			in.badMsgs.Add(1)
			in.log.Warn("undecodable message skipped", "stream", stream, "seq", seq, "subject", msg.Subject(), "err", err)
		}
		// Only now is the message "newest": its effect is in the store.
		in.mu.Lock()
		in.newest[stream] = msg
		in.pending++
		full := in.pending >= in.cfg.FlushEvery
		in.mu.Unlock()
		if full {
			select {
			case in.kick <- struct{}{}:
			default:
			}
		}
	}
}

// Flush writes every changed entity to KV, then acknowledges the messages
// whose effects are now stored. A failed write is kept and retried by the
// next Flush; nothing is acknowledged until it succeeds.
func (in *Ingester) Flush(ctx context.Context) error {
	dirty, err := in.store.TakeDirty(func() {
		in.mu.Lock()
		for s, m := range in.newest {
			in.batchAcks[s] = m
		}
		clear(in.newest)
		in.pending = 0
		in.mu.Unlock()
	})
	if err != nil {
		return err
	}
	for _, d := range dirty {
		in.batch[d.Key] = d.Value
	}
	if len(in.batch) == 0 && len(in.batchAcks) == 0 {
		return nil
	}
	if err := in.put(ctx); err != nil {
		in.lastError.Store(err.Error())
		return err
	}
	clear(in.batch)
	for s, m := range in.batchAcks {
		if err := m.Ack(); err != nil {
			// The ack is lost, not the counts: the messages come back and
			// are skipped by sequence.
			in.log.Warn("ack", "stream", s, "err", err)
		}
	}
	clear(in.batchAcks)
	in.flushes.Add(1)
	return nil
}

// put writes the batch with asynchronous publishes to the bucket's subjects
// and waits for every acknowledgement.
func (in *Ingester) put(ctx context.Context) error {
	const window = 1000
	subj := "$KV." + in.bucket() + "." + in.keyPrefix()
	futures := make([]jetstream.PubAckFuture, 0, min(len(in.batch), window))
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("store snapshot %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	for k, v := range in.batch {
		f, err := in.js.PublishAsync(subj+k, v)
		if err != nil {
			return fmt.Errorf("store snapshot %s: %w", k, err)
		}
		futures = append(futures, f)
		if len(futures) == window {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	return wait()
}
