package deploytest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// TestNATSClusterConfig parses deploy/ecs/nats/nats-server.conf with
// nats-server's own parser, with the environment the task definition gives
// a node, then boots one node from it (routes dropped, ports random) and
// connects the way a daemon does: natsconn.Connect with the user and
// password in TASKYARD_NATS_URL.
func TestNATSClusterConfig(t *testing.T) {
	td := loadTaskDef(t, "deploy/ecs/nats/task-definition.json")
	c := container(t, td, "nats")
	for _, e := range c.Environment {
		t.Setenv(*e.Name, *e.Value)
	}
	passwords := map[string]string{}
	for _, s := range c.Secrets {
		pw := "pw-" + *s.Name
		passwords[*s.Name] = pw
		t.Setenv(*s.Name, pw)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(repoRoot(t), "deploy/ecs/nats/nats-server.conf"))
	require.NoError(t, err)
	require.Equal(t, "nats-"+testEnv["TASKYARD_NATS_NODE"], opts.ServerName)
	require.True(t, opts.JetStream)
	require.Equal(t, "taskyard", opts.Cluster.Name)
	require.Equal(t, "route", opts.Cluster.Username)
	require.Equal(t, passwords["NATS_ROUTE_PASSWORD"], opts.Cluster.Password)
	require.Len(t, opts.Routes, 3)
	for i, r := range opts.Routes {
		require.Equal(t, fmt.Sprintf("nats-%d.%s:6222", i+1, testEnv["TASKYARD_DISCOVERY_NAMESPACE"]), r.Host)
		require.Nil(t, r.User, "no credentials in route URLs (they would be plain environment)")
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	for _, d := range []string{"scheduler", "exitwatch", "logrouter", "exporter", "operator"} {
		require.Contains(t, users, d)
		require.NotEmpty(t, users[d].Password)
	}

	// Boot it alone on random ports and connect as the scheduler.
	opts.Routes = nil
	opts.Cluster = server.ClusterOpts{}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, -1
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	require.True(t, srv.ReadyForConnections(10*time.Second))

	u, err := url.Parse(srv.ClientURL())
	require.NoError(t, err)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	u.User = url.UserPassword("scheduler", passwords["NATS_PASSWORD_SCHEDULER"])
	nc, err := natsconn.Connect(ctx, natsconn.Config{URL: u.String()}, "deploytest", log)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.AccountInfo(ctx)
	require.NoError(t, err, "the daemon users may use JetStream")
	// Everything a daemon does at start: create taskyard's streams and
	// buckets, then write and read a KV key and publish into a stream.
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{Prefix: v1.DefaultPrefix, Replicas: 1}))
	kv, err := js.KeyValue(ctx, v1.Buckets(v1.DefaultPrefix).Leases)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "probe", []byte("x"))
	require.NoError(t, err)
	_, err = js.Publish(ctx, v1.DefaultPrefix+".run.missed.deploytest", []byte("x"))
	require.NoError(t, err)

	// A wrong password is refused.
	u.User = url.UserPassword("scheduler", "wrong")
	_, err = nats.Connect(u.String(), nats.MaxReconnects(0))
	require.ErrorContains(t, err, "Authorization Violation")
}
