package ingest

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/aggregate"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

func startServer(t *testing.T) *server.Server {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func connect(t *testing.T, srv *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func publishRuns(t *testing.T, js jetstream.JetStream, from, n int) {
	t.Helper()
	ctx := context.Background()
	s := v1.Subjects{}
	for i := from; i < from+n; i++ {
		at := time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC)
		id := v1.RunID("job", at, v1.Trigger_TRIGGER_SCHEDULE)
		_, err := v1.Publish(ctx, js, s.RunFinished("job"), &v1.RunFinished{RunId: id, Schedule: "job", ScheduledAt: timestamppb.New(at),
			FinishedAt: timestamppb.New(at.Add(time.Second)), Outcome: v1.Outcome_OUTCOME_SUCCEEDED}, "finished:"+id)
		require.NoError(t, err)
	}
}

func succeeded(t *testing.T, st *aggregate.Store) float64 {
	t.Helper()
	var doc struct {
		Schedule map[string]map[string]float64 `json:"schedule"`
	}
	require.NoError(t, json.Unmarshal(st.RenderJSON(nil, time.Now(), aggregate.RenderOptions{}), &doc))
	return doc.Schedule["job"]["succeeded"]
}

// TestCrashRecovery covers the exactly-once argument of the
// package doc: an exporter dies after applying messages, with nothing, only
// the entities, or the entities and the position stored, while its consumer
// has delivered them all. A new exporter restores the snapshot, recreates the
// consumer from the stored position, and counts each message exactly once.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		entities, position bool
	}{
		{"nothing stored", false, false},
		{"entities stored", true, false},
		{"entities and position stored", true, true},
	} {
		persisted := tc.entities
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t)
			nc, js := connect(t, srv)
			ctx := context.Background()
			require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
			log := logging.New(io.Discard, 0, "test")
			cfg := Config{Instance: "crash", FlushInterval: time.Hour, FlushEvery: 1 << 30}

			// First life: apply 10 messages, maybe write the snapshot, never ack.
			store1 := aggregate.New("", nil)
			in1 := New(js, store1, log, cfg)
			_, err := in1.Restore(ctx)
			require.NoError(t, err)
			ctx1, cancel1 := context.WithCancel(ctx)
			done1 := make(chan error, 1)
			go func() { done1 <- in1.Run(ctx1) }()
			require.Eventually(t, in1.Ready, 5*time.Second, 10*time.Millisecond)
			publishRuns(t, js, 0, 10)
			require.Eventually(t, func() bool { return store1.Applied() == 10 }, 5*time.Second, 10*time.Millisecond)
			if persisted {
				dirty, err := store1.TakeDirty(nil)
				require.NoError(t, err)
				for _, d := range dirty {
					in1.batch[d.Key] = d.Value
				}
				require.NoError(t, in1.put(ctx, in1.batch))
			}
			if tc.position {
				require.NoError(t, in1.put(ctx, map[string][]byte{positionKind + "RUNS": []byte("10")}))
			}
			nc.Close() // the crash: the final flush cannot ack anything
			cancel1()
			<-done1

			// While down: 5 more.
			_, js2 := connect(t, srv)
			publishRuns(t, js2, 10, 5)

			// Second life.
			store2 := aggregate.New("", nil)
			in2 := New(js2, store2, log, Config{Instance: "crash", FlushInterval: 20 * time.Millisecond})
			n, err := in2.Restore(ctx)
			require.NoError(t, err)
			if persisted {
				require.Equal(t, 1, n)
				require.Equal(t, 10.0, succeeded(t, store2))
			} else {
				require.Zero(t, n)
			}
			ctx2, cancel2 := context.WithCancel(ctx)
			defer cancel2()
			done2 := make(chan error, 1)
			go func() { done2 <- in2.Run(ctx2) }()
			// Everything is delivered again (the 10 unacked ones and the 5 new).
			require.Eventually(t, func() bool { applied, _ := in2.Position("RUNS"); return applied == 15 }, 10*time.Second, 10*time.Millisecond)
			require.Equal(t, 15.0, succeeded(t, store2))
			// The consumer has delivered everything and the position is stored.
			require.Eventually(t, func() bool {
				c, err := js2.Consumer(ctx, "RUNS", in2.ConsumerName())
				if err != nil {
					return false
				}
				info, err := c.Info(ctx)
				return err == nil && info.NumPending == 0 && info.Delivered.Stream == 15
			}, 10*time.Second, 20*time.Millisecond)
			require.Eventually(t, func() bool { _, stored := in2.Position("RUNS"); return stored == 15 }, 10*time.Second, 10*time.Millisecond)
			require.Equal(t, 15.0, succeeded(t, store2))
			cancel2()
			require.NoError(t, <-done2)
		})
	}
}

func TestInstanceToken(t *testing.T) {
	t.Parallel()
	require.Equal(t, "host-1", InstanceToken("host-1"))
	require.Equal(t, "~aXAtMTAuZWMyLmludGVybmFs", InstanceToken("ip-10.ec2.internal"))
}

// TestGapRecreatesConsumer: once a delivery gap is seen the ingester stores
// what it has, recreates the consumer from the stored position and goes on,
// counting nothing twice and missing nothing.
func TestGapRecreatesConsumer(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	_, js := connect(t, srv)
	ctx := context.Background()
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	store := aggregate.New("", nil)
	in := New(js, store, logging.New(io.Discard, 0, "test"), Config{Instance: "gap", FlushInterval: 20 * time.Millisecond})
	_, err := in.Restore(ctx)
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.Run(rctx) }()
	require.Eventually(t, in.Ready, 5*time.Second, 10*time.Millisecond)

	publishRuns(t, js, 0, 5)
	require.Eventually(t, func() bool { a, _ := in.Position("RUNS"); return a == 5 }, 5*time.Second, 10*time.Millisecond)
	// What the handler does on a consumer sequence gap.
	in.mu.Lock()
	in.streams["RUNS"].broken = true
	in.mu.Unlock()
	require.Eventually(t, func() bool { return in.Resets() == 1 }, 5*time.Second, 10*time.Millisecond)
	publishRuns(t, js, 5, 5)
	require.Eventually(t, func() bool { a, s := in.Position("RUNS"); return a == 10 && s == 10 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 10.0, succeeded(t, store))
	cancel()
	require.NoError(t, <-done)
}

// TestServerRestartResumes: the NATS server restarts (same store, same
// port); on the reconnect the consumers are recreated and what is
// published afterwards is counted, each message once.
func TestServerRestartResumes(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: store})
	require.NoError(t, err)
	addr := srv.Addr().String()
	reconnected := make(chan struct{}, 1)
	var in *Ingester
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) {
			in.Resubscribe()
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	st := aggregate.New("", nil)
	in = New(js, st, logging.New(io.Discard, 0, "test"), Config{Instance: "restart", FlushInterval: 20 * time.Millisecond})
	_, err = in.Restore(ctx)
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- in.Run(rctx) }()
	require.Eventually(t, in.Ready, 5*time.Second, 10*time.Millisecond)
	publishRuns(t, js, 0, 5)
	require.Eventually(t, func() bool { a, s := in.Position("RUNS"); return a == 5 && s == 5 }, 5*time.Second, 10*time.Millisecond)

	srv.Shutdown()
	srv.WaitForShutdown()
	srv, err = natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: addr, StoreDir: store})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}
	require.Eventually(t, func() bool { return in.Resets() >= 1 }, 10*time.Second, 10*time.Millisecond, "consumers recreated")
	publishRuns(t, js, 5, 5)
	require.Eventually(t, func() bool { a, _ := in.Position("RUNS"); return a == 10 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 10.0, succeeded(t, st), "each message once")
	cancel()
	require.NoError(t, <-done)
}
