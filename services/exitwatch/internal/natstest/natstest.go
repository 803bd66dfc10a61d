// Package natstest starts an embedded NATS server with JetStream and the
// taskyard streams and buckets for tests.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// Env is a running server with a connection.
type Env struct {
	Server *server.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
	URL    string
}

// Start starts the server (stopped by t.Cleanup) and creates the streams
// and buckets.
func Start(t testing.TB) *Env {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Config{URL: srv.ClientURL()}, "test", logging.Discard())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	return &Env{Server: srv, NC: nc, JS: js, URL: srv.ClientURL()}
}

// KV opens a bucket.
func (e *Env) KV(t testing.TB, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := e.JS.KeyValue(context.Background(), bucket)
	require.NoError(t, err)
	return kv
}
