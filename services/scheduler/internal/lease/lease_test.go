package lease

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

func leasesKV(t *testing.T, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, natsconn.Ensure(context.Background(), js, v1.StoreOptions{LeaseTTL: ttl}))
	kv, err := js.KeyValue(context.Background(), v1.Buckets("").Leases)
	require.NoError(t, err)
	return kv
}

func run(t *testing.T, l *Lease, release bool) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx, release); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return func() { cancel(); <-done }
}

func TestOneLeaderAndTakeoverAfterTTL(t *testing.T) {
	t.Parallel()
	kv := leasesKV(t, time.Second)
	a := New(kv, Key, "a", time.Second, logging.Discard())
	b := New(kv, Key, "b", time.Second, logging.Discard())
	stopA := run(t, a, false)
	require.Eventually(t, a.Leading, 5*time.Second, 10*time.Millisecond)
	run(t, b, false)
	require.Equal(t, true, <-a.Changes())

	// b cannot take the key while a renews it.
	require.Never(t, func() bool { return b.Leading() || !a.Leading() }, 1500*time.Millisecond, 20*time.Millisecond)
	holder, err := Holder(context.Background(), kv, Key)
	require.NoError(t, err)
	require.Equal(t, "a", holder)

	// a crashes without releasing: b leads once the key has expired.
	stopA()
	require.False(t, a.Leading())
	require.Eventually(t, b.Leading, 5*time.Second, 10*time.Millisecond)
	holder, err = Holder(context.Background(), kv, Key)
	require.NoError(t, err)
	require.Equal(t, "b", holder)
}

func TestReleaseHandsOverAtOnceAndConflictDeposes(t *testing.T) {
	t.Parallel()
	kv := leasesKV(t, 10*time.Second)
	a := New(kv, Key, "a", 10*time.Second, logging.Discard())
	stopA := run(t, a, true)
	require.Eventually(t, a.Leading, 5*time.Second, 10*time.Millisecond)
	stopA() // releases
	holder, err := Holder(context.Background(), kv, Key)
	require.NoError(t, err)
	require.Empty(t, holder)

	b := New(kv, Key, "b", 10*time.Second, logging.Discard())
	b.interval = 50 * time.Millisecond
	run(t, b, false)
	require.Eventually(t, b.Leading, 5*time.Second, 10*time.Millisecond, "a released lease is taken well before its TTL")

	// Someone else overwrites the key: b's revision-checked renew fails
	// and b stops leading at once, long before its TTL.
	_, err = kv.Put(context.Background(), Key, []byte("intruder"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !b.Leading() }, 2*time.Second, 10*time.Millisecond)
}

func TestRetryAfterAimsAtTheServersExpiry(t *testing.T) {
	t.Parallel()
	const (
		ttl      = 10 * time.Second
		interval = ttl / 4
		fast     = 100 * time.Millisecond
	)
	w := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		now  time.Time
		want time.Duration
	}{
		{"just renewed: wait one interval", w.Add(time.Second), interval},
		{"expiry within an interval: wake just after it", w.Add(9 * time.Second), time.Second + 20*time.Millisecond},
		{"expiry right now: the slack", w.Add(ttl), 20 * time.Millisecond},
		{"past expiry, key still there: fast retries", w.Add(ttl + time.Second), fast},
		{"far past expiry: clocks disagree, back to the interval", w.Add(ttl + interval + time.Second), interval},
		{"written in our future: the interval", w.Add(-time.Minute), interval},
	} {
		require.Equal(t, tc.want, retryAfter(w, tc.now, ttl, interval, fast), tc.name)
	}
}

// TestStandbyTakesOverAtExpiry: the standby's Create attempts follow the
// key's expiry instead of a fixed poll, so after a crash it takes over
// without polling every interval and well within one interval of the
// expiry. The interval here is set far longer than the TTL so that a
// standby that merely polled could not take over within the test's wait.
func TestStandbyTakesOverAtExpiry(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	kv := leasesKV(t, ttl)
	a := New(kv, Key, "a", ttl, logging.Discard())
	a.interval = 200 * time.Millisecond
	stopA := run(t, a, false)
	require.Eventually(t, a.Leading, 5*time.Second, 10*time.Millisecond)

	b := New(kv, Key, "b", ttl, logging.Discard())
	b.interval = time.Hour // only the expiry-aimed retries can elect b
	run(t, b, false)
	require.Never(t, b.Leading, 3*ttl/2, 20*time.Millisecond, "b must not lead while a renews")

	stopA() // crash: no release
	e, err := kv.Get(context.Background(), Key)
	require.NoError(t, err)
	require.Eventually(t, b.Leading, 10*ttl, 10*time.Millisecond, "b never took over after the key expired")
	t.Logf("b leads %s after a's last write", time.Since(e.Created()))
}

// TestReleaseWakesTheStandby: a graceful release is seen through the
// watch, not at the next poll.
func TestReleaseWakesTheStandby(t *testing.T) {
	t.Parallel()
	const ttl = 10 * time.Second
	kv := leasesKV(t, ttl)
	a := New(kv, Key, "a", ttl, logging.Discard())
	stopA := run(t, a, true)
	require.Eventually(t, a.Leading, 5*time.Second, 10*time.Millisecond)
	b := New(kv, Key, "b", ttl, logging.Discard())
	b.interval = time.Hour
	run(t, b, false)
	require.Never(t, b.Leading, 500*time.Millisecond, 20*time.Millisecond)
	stopA() // releases: deletes the key
	require.Eventually(t, b.Leading, 5*time.Second, 10*time.Millisecond, "b was not woken by the release")
}
