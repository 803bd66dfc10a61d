package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/exportertest"
	"github.com/taskyard/taskyard/services/exporter/internal/ingest"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// TestLeaseUnaffectedBySchedulerTTL: the scheduler may shorten the leases
// bucket's TTL after the exporter took its instance lease (taskyard dev runs
// the scheduler with a 3 s lease). The exporter must keep its lease.
func TestLeaseUnaffectedBySchedulerTTL(t *testing.T) {
	t.Parallel()
	b := exportertest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := ingest.AcquireLease(ctx, b.JS, v1.DefaultPrefix, "a", "owner-1", logging.Discard())
	require.NoError(t, err)
	kctx, stop := context.WithCancel(ctx)
	kept := make(chan error, 1)
	go func() { kept <- l.Keep(kctx) }()

	// The scheduler starts with --lease-ttl 600ms.
	require.NoError(t, natsconn.Ensure(ctx, b.JS, v1.StoreOptions{LeaseTTL: 600 * time.Millisecond}))

	// Well past several TTLs, nobody else can take the instance.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		actx, acancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := ingest.AcquireLease(actx, b.JS, v1.DefaultPrefix, "a", "owner-2", logging.Discard())
		acancel()
		require.Error(t, err, "a second owner got the instance: the lease expired")
	}
	select {
	case err := <-kept:
		t.Fatalf("Keep returned early: %v", err)
	default:
	}
	stop()
	require.NoError(t, <-kept)
}

// TestLeaseSurvivesExpiry: after NATS was away longer than the TTL the key
// is gone; the owner takes it again instead of stopping. When another
// process took it meanwhile, Keep stops with ErrLeaseLost.
func TestLeaseSurvivesExpiry(t *testing.T) {
	t.Parallel()
	b := exportertest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := b.JS.KeyValue(ctx, v1.Buckets(v1.DefaultPrefix).Instances)
	require.NoError(t, err)

	l, err := ingest.AcquireLease(ctx, b.JS, v1.DefaultPrefix, "a", "owner-1", logging.Discard())
	require.NoError(t, err)
	kctx, stop := context.WithCancel(ctx)
	kept := make(chan error, 1)
	go func() { kept <- l.Keep(kctx) }()

	// What expiry looks like to the owner: the key is gone.
	require.NoError(t, kv.Purge(ctx, "exporter.a"))
	require.Eventually(t, func() bool {
		e, err := kv.Get(ctx, "exporter.a")
		return err == nil && string(e.Value()) == "owner-1"
	}, 10*time.Second, 50*time.Millisecond, "the owner takes its expired lease again")
	select {
	case err := <-kept:
		t.Fatalf("Keep stopped after an expiry: %v", err)
	default:
	}

	// Another process takes the instance while the key is gone.
	require.NoError(t, kv.Purge(ctx, "exporter.a"))
	_, err = kv.Create(ctx, "exporter.a", []byte("owner-2"))
	require.NoError(t, err)
	select {
	case err := <-kept:
		require.ErrorIs(t, err, ingest.ErrLeaseLost)
		require.ErrorContains(t, err, "held by owner-2")
	case <-time.After(10 * time.Second):
		t.Fatal("Keep did not notice the lease was taken")
	}
	stop()
}
