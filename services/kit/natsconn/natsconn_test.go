package natsconn_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

func TestConnectEnsureAndReconnect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: dir})
	require.NoError(t, err)
	addr := srv.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Config{URL: srv.ClientURL()}, "test", logging.Discard())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}), "second Ensure must be a no-op")
	for _, b := range []string{"taskyard-schedules", "taskyard-state", "taskyard-leases", "taskyard-runs", "taskyard-snapshots", "taskyard-instances"} {
		_, err := js.KeyValue(ctx, b)
		require.NoError(t, err, b)
	}

	// The server goes away and comes back on the same address and store:
	// the client reconnects by itself and the streams are still there.
	srv.Shutdown()
	srv.WaitForShutdown()
	require.Eventually(t, func() bool { return !nc.IsConnected() }, 5*time.Second, 10*time.Millisecond)
	srv2, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: dir, Listen: addr})
	require.NoError(t, err)
	defer srv2.Shutdown()
	require.Eventually(t, nc.IsConnected, 10*time.Second, 20*time.Millisecond)
	_, err = js.Stream(ctx, "RUNS")
	require.NoError(t, err)
}

func TestConnectGivesUpWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := natsconn.Connect(ctx, natsconn.Config{URL: "nats://127.0.0.1:1"}, "test", logging.Discard())
	require.ErrorContains(t, err, "connect to nats nats://127.0.0.1:1")
}

func TestValidate(t *testing.T) {
	t.Parallel()
	var p config.Problems
	c := natsconn.Config{URL: "", TLSCert: "x.pem", Prefix: "bad.prefix", Replicas: 9, Creds: "/nonexistent/creds"}
	c.Validate(&p)
	err := p.Err()
	require.ErrorContains(t, err, "nats-url: must not be empty")
	require.ErrorContains(t, err, "nats-tls-cert and nats-tls-key")
	require.ErrorContains(t, err, "nats-replicas: 9")
	require.ErrorContains(t, err, `subject-prefix: "bad.prefix"`)
	require.ErrorContains(t, err, "nats-creds:")
}

// TestEnsureLeaseTTL: daemons that do not care about the lease TTL leave an
// existing leases bucket alone; the scheduler (LeaseTTL set) makes it its
// own; concurrent Ensure calls with different views do not fail.
func TestEnsureLeaseTTL(t *testing.T) {
	t.Parallel()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Config{URL: srv.ClientURL()}, "test", logging.Discard())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	ttl := func() time.Duration {
		kv, err := js.KeyValue(ctx, "taskyard-leases")
		require.NoError(t, err)
		st, err := kv.Status(ctx)
		require.NoError(t, err)
		return st.TTL()
	}

	errs := make(chan error, 4)
	for i := range 4 {
		o := v1.StoreOptions{}
		if i%2 == 0 {
			o.LeaseTTL = 3 * time.Second
		}
		go func() { errs <- natsconn.Ensure(ctx, js, o) }()
	}
	for range 4 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, 3*time.Second, ttl(), "the scheduler's TTL wins over the default")

	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	require.Equal(t, 3*time.Second, ttl(), "another daemon leaves it alone")

	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{LeaseTTL: 7 * time.Second}))
	require.Equal(t, 7*time.Second, ttl(), "a scheduler with a new --lease-ttl updates it")
}

func TestEmbeddedAddressInUse(t *testing.T) {
	t.Parallel()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer srv.Shutdown()
	_, err = natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir(), Listen: srv.Addr().String()})
	require.ErrorContains(t, err, "address already in use")
}
