package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// TestDevExporter runs the exporter the way `taskyard dev` does and reads a
// published run back from its /api/v1/metrics.
func TestDevExporter(t *testing.T) {
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	actor, err := devExporter(devEnv{
		Log:           logging.New(io.Discard, 0, "exporter"),
		NATS:          natsconn.Config{URL: srv.ClientURL(), Prefix: v1.DefaultPrefix, Replicas: 1},
		DataDir:       t.TempDir(),
		MetricsListen: addr,
	})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- actor(ctx) }()

	at := time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)
	id := v1.RunID("demo", at, v1.Trigger_TRIGGER_SCHEDULE)
	_, err = v1.Publish(ctx, js, v1.Subjects{}.RunDispatched("demo"), &v1.RunDispatched{RunId: id, Schedule: "demo",
		ScheduledAt: timestamppb.New(at), DispatchedAt: timestamppb.New(at)}, id)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/api/v1/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var doc struct {
			Schedule map[string]map[string]float64 `json:"schedule"`
		}
		return json.NewDecoder(resp.Body).Decode(&doc) == nil && doc.Schedule["demo"]["dispatched"] == 1
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

func TestDevExporterBadClustersDir(t *testing.T) {
	t.Parallel()
	_, err := devExporter(devEnv{Log: logging.Discard(), NATS: natsconn.Config{URL: "nats://127.0.0.1:1", Prefix: "taskyard", Replicas: 1}, ClustersDir: "/does/not/exist"})
	require.ErrorContains(t, err, "clusters")
}
