// Package ingest feeds the exporter's aggregate.Store from JetStream and
// keeps it across restarts.
//
// # Catch-up
//
// One durable pull consumer per stream (RUNS, ALERTS, STATS), named
// exporter-<instance>: while the exporter is down the consumer keeps its
// place, and `nats consumer info` shows how far behind it is. Every exporter
// instance has its own consumers and its own snapshot, so several can run
// side by side (DAEMON service).
//
// # Snapshot and position: exactly-once counting
//
// The counters live in KV bucket <prefix>-snapshots, one key per entity
// (exporter.<instance>.<kind>.<id>; see aggregate.EntityKey), each entity
// carrying, per stream, the sequence of the last message it applied; next
// to them, exporter.<instance>.position.<stream> is the last stream
// sequence whose effects are all stored. The loop is:
//
//  1. apply messages strictly in stream order (see below); the entities a
//     message touches record its sequence;
//  2. flush (every FlushInterval, or after FlushEvery messages): under the
//     store lock take the encodings of every entity changed since the last
//     flush and, in the same critical section, the last applied sequence of
//     each stream;
//  3. write those entities, wait for every write to be acknowledged by
//     JetStream, then write the positions.
//
// No loss: a position is stored only after every entity changed by the
// messages up to it, and the exporter always resumes from the stored
// position. A failed write keeps the batch and retries it; the position does
// not move meanwhile.
//
// No double counting: a message replayed after a crash between the entity
// writes and the position write reaches entities whose stored sequence is
// already at or past it, and they skip it; entities that were not stored
// apply it, which is exactly what they missed.
//
// # Why the consumers do not acknowledge
//
// The stored position is the only position. A JetStream ack floor cannot be
// kept consistent with it: a message delivered to a client that died, or
// lost on a reconnect, is redelivered after newer ones, and AckAll on a newer
// message would ack it unapplied; per-entity sequences are high-water marks,
// so they also need stream order. The consumers are therefore AckNone
// (which also spares the server tracking every message in flight: about a
// quarter of the ingest cost in the benchmark). Their delivered position is a
// cursor: at start the durable is reused only when it stands exactly at the
// stored position, and otherwise created again from stored position + 1;
// during a run, a gap in the consumer sequence (a lost delivery) makes the
// ingester store what it has and recreate the consumer the same way.
// Messages at or below the applied position are skipped. `nats consumer info
// <stream> exporter-<instance>` still shows how far behind the exporter is.
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
	"slices"
	"strconv"
	"strings"
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
	// FlushInterval is the longest time between snapshot writes. Default 1s.
	FlushInterval time.Duration
	// FlushEvery flushes early after this many messages. Default 50000:
	// under load an entity is written about once per FlushInterval however
	// many messages touch it.
	FlushEvery int
	// PullBatch is how many messages a consumer buffers. Default 1000.
	PullBatch int
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = v1.DefaultPrefix
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.FlushEvery <= 0 {
		c.FlushEvery = 50000
	}
	if c.PullBatch <= 0 {
		c.PullBatch = 1000
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
	streams map[string]*streamState
	pending int
	kick    chan struct{}

	// batch is a taken but not yet stored set of entities (key → value),
	// with the positions it guards.
	batch    map[string][]byte
	batchPos map[string]uint64

	ready   atomic.Bool
	flushes atomic.Int64
	badMsgs atomic.Int64
	resets  atomic.Int64
}

// streamState is the ingester's view of one stream; guarded by mu.
type streamState struct {
	name string
	// applied is the last stream sequence applied; stored the last one
	// whose effects are in KV.
	applied, stored uint64
	// lastConsumerSeq is the consumer sequence of the last delivery.
	lastConsumerSeq uint64
	// broken is set when a delivery gap was seen: messages are ignored
	// until the consumer is recreated.
	broken bool
	cc     jetstream.ConsumeContext
}

// New returns an ingester; call Restore, then Run.
func New(js jetstream.JetStream, store *aggregate.Store, log *slog.Logger, cfg Config) *Ingester {
	cfg = cfg.withDefaults()
	names := v1.Streams(cfg.Prefix)
	in := &Ingester{
		js: js, store: store, log: log, cfg: cfg,
		streams: map[string]*streamState{},
		kick:    make(chan struct{}, 1),
		batch:   map[string][]byte{}, batchPos: map[string]uint64{},
	}
	for _, n := range []string{names.Runs, names.Alerts, names.Stats} {
		in.streams[n] = &streamState{name: n}
	}
	return in
}

var safeToken = regexp.MustCompile(`^[-_a-zA-Z0-9]+$`)

// InstanceToken is the instance as one KV key token.
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

const positionKind = "position."

func (in *Ingester) bucket() string { return v1.Buckets(in.cfg.Prefix).Snapshots }

// Restore loads this instance's stored entities and positions. It returns
// the number of entities.
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
			if stream, ok := strings.CutPrefix(key, positionKind); ok {
				pos, err := strconv.ParseUint(string(e.Value()), 10, 64)
				if err != nil {
					return n, fmt.Errorf("snapshot %s: %w", e.Key(), err)
				}
				in.mu.Lock()
				if st := in.streams[stream]; st != nil {
					st.applied, st.stored = pos, pos
				}
				in.mu.Unlock()
				continue
			}
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

// Resets counts consumers recreated after a delivery gap.
func (in *Ingester) Resets() int64 { return in.resets.Load() }

// Position is the last stream sequence applied, and the last stored.
func (in *Ingester) Position(stream string) (applied, stored uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if st := in.streams[stream]; st != nil {
		return st.applied, st.stored
	}
	return 0, 0
}

// Run consumes until ctx is done, then stops the consumers, writes the last
// snapshot and acknowledges what it covers.
func (in *Ingester) Run(ctx context.Context) error {
	stopAll := func() {
		for _, st := range in.streams {
			in.stop(st)
		}
	}
	for _, st := range in.sortedStreams() {
		if err := in.start(ctx, st, true); err != nil {
			stopAll()
			return err
		}
	}
	in.ready.Store(true)
	in.log.Info("consuming", "consumer", in.ConsumerName())

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
			continue
		}
		for _, st := range in.sortedStreams() {
			in.mu.Lock()
			broken := st.broken
			in.mu.Unlock()
			if !broken {
				continue
			}
			// Flushed above: the position is stored; start over from it.
			in.resets.Add(1)
			in.stop(st)
			if err := in.start(ctx, st, false); err != nil && ctx.Err() == nil {
				// Still broken: tried again at the next tick (NATS may be
				// back without JetStream being ready yet).
				in.log.Error("recreate consumer, will retry", "stream", st.name, "err", err)
			}
		}
	}
}

// Resubscribe recreates every consumer from the stored positions, as a
// delivery gap does. Call it when the NATS connection comes back: a pull
// consumer can stay silent after the server restarted (its pending pulls
// are gone with the old connection), and nothing else would notice.
func (in *Ingester) Resubscribe() {
	in.mu.Lock()
	for _, st := range in.streams {
		st.broken = true
	}
	in.mu.Unlock()
	in.log.Info("nats reconnected: recreating the consumers from the stored positions")
	select {
	case in.kick <- struct{}{}:
	default:
	}
}

func (in *Ingester) sortedStreams() []*streamState {
	out := make([]*streamState, 0, len(in.streams))
	for _, st := range in.streams {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b *streamState) int { return strings.Compare(a.name, b.name) })
	return out
}

func (in *Ingester) stop(st *streamState) {
	in.mu.Lock()
	cc := st.cc
	st.cc = nil
	in.mu.Unlock()
	if cc != nil {
		cc.Stop()
		<-cc.Closed()
	}
}

// start (re)creates the stream's consumer so that it delivers from the
// stored position + 1, reusing the existing durable when its ack floor is
// that position and nothing is in flight (reuse).
func (in *Ingester) start(ctx context.Context, st *streamState, reuse bool) error {
	in.mu.Lock()
	pos := st.stored
	in.mu.Unlock()
	name := in.ConsumerName()
	cons, err := in.js.Consumer(ctx, st.name, name)
	switch {
	case err == nil:
		info, ierr := cons.Info(ctx)
		if ierr != nil {
			return fmt.Errorf("consumer %s on %s: %w", name, st.name, ierr)
		}
		if reuse && info.Delivered.Stream == pos && info.Config.AckPolicy == jetstream.AckNonePolicy &&
			info.Config.FilterSubject == "" && len(info.Config.FilterSubjects) == 0 {
			break
		}
		in.log.Info("recreating consumer at the stored position", "stream", st.name, "consumer", name,
			"position", pos, "delivered", info.Delivered.Stream)
		if err := in.js.DeleteConsumer(ctx, st.name, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s on %s: %w", name, st.name, err)
		}
		cons = nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons = nil
	default:
		return fmt.Errorf("consumer %s on %s: %w", name, st.name, err)
	}
	if cons == nil {
		cc := jetstream.ConsumerConfig{
			Durable:       name,
			Description:   "taskyard exporter " + in.cfg.Instance,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckNonePolicy,
		}
		if pos > 0 {
			cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos+1
		}
		if cons, err = in.js.CreateConsumer(ctx, st.name, cc); err != nil {
			return fmt.Errorf("create consumer %s on %s: %w", name, st.name, err)
		}
	}
	in.mu.Lock()
	st.lastConsumerSeq, st.broken = 0, false
	in.mu.Unlock()
	h, err := cons.Consume(in.handler(st), jetstream.PullMaxMessages(in.cfg.PullBatch),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			in.log.Warn("consume", "stream", st.name, "err", err)
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", st.name, err)
	}
	in.mu.Lock()
	st.cc = h
	in.mu.Unlock()
	return nil
}

func (in *Ingester) handler(st *streamState) jetstream.MessageHandler {
	return func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			in.log.Warn("message without metadata", "stream", st.name, "err", err)
			return
		}
		seq := md.Sequence.Stream
		in.mu.Lock()
		gap := st.lastConsumerSeq != 0 && md.Sequence.Consumer != st.lastConsumerSeq+1
		st.lastConsumerSeq = md.Sequence.Consumer
		if gap && !st.broken {
			in.log.Warn("delivery gap, recreating the consumer", "stream", st.name, "consumer_seq", md.Sequence.Consumer, "stream_seq", seq)
			st.broken = true
		}
		skip := st.broken || seq <= st.applied
		in.mu.Unlock()
		if skip {
			if st.broken {
				select {
				case in.kick <- struct{}{}:
				default:
				}
			}
			return
		}
		if err := in.store.Apply(st.name, seq, msg.Subject(), msg.Headers(), msg.Data()); err != nil {
			in.badMsgs.Add(1)
			in.log.Warn("undecodable message skipped", "stream", st.name, "seq", seq, "subject", msg.Subject(), "err", err)
		}
		// Only now is the message applied: its effect is in the store.
		in.mu.Lock()
		st.applied = seq
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

// Flush writes every changed entity, then the positions, to KV. A failed
// write is kept and retried by the next Flush; the stored positions move
// only once it succeeds.
func (in *Ingester) Flush(ctx context.Context) error {
	dirty, err := in.store.TakeDirty(func() {
		in.mu.Lock()
		for _, st := range in.streams {
			if st.applied > st.stored {
				in.batchPos[st.name] = st.applied
			}
		}
		in.pending = 0
		in.mu.Unlock()
	})
	if err != nil {
		return err
	}
	for _, d := range dirty {
		in.batch[d.Key] = d.Value
	}
	if len(in.batch) == 0 && len(in.batchPos) == 0 {
		return nil
	}
	if err := in.put(ctx, in.batch); err != nil {
		return err
	}
	clear(in.batch)
	pos := map[string][]byte{}
	for s, p := range in.batchPos {
		pos[positionKind+s] = strconv.AppendUint(nil, p, 10)
	}
	if err := in.put(ctx, pos); err != nil {
		return err
	}
	in.mu.Lock()
	for s, p := range in.batchPos {
		in.streams[s].stored = p
	}
	in.mu.Unlock()
	clear(in.batchPos)
	in.flushes.Add(1)
	return nil
}

// put writes entries with asynchronous publishes to the bucket's subjects
// and waits for every acknowledgement.
func (in *Ingester) put(ctx context.Context, entries map[string][]byte) error {
	const window = 1000
	subj := "$KV." + in.bucket() + "." + in.keyPrefix()
	futures := make([]jetstream.PubAckFuture, 0, min(len(entries), window))
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
	for k, v := range entries {
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
