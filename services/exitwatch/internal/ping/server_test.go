package ping_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ping"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
	"github.com/taskyard/taskyard/services/kit/logging"
)

func TestPingKeyAndEvents(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	f, err := ping.Parse("checks.yml", []byte("pingKey: k3y\nchecks:\n  - {name: backup, period: 1h, cluster: db}\n"))
	require.NoError(t, err)
	now := time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)
	list := watchlist.New(logging.Discard(), func() time.Time { return now })
	for _, c := range f.Checks {
		list.Put(c)
	}
	store := runstore.New(env.KV(t, "taskyard-runs"), logging.Discard(), time.Hour, func() time.Time { return now })
	srv := httptest.NewServer(ping.New(f, list, store, env.JS, "", logging.Discard(), func() time.Time { return now }))
	defer srv.Close()
	do := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusNotFound, do("GET", "/ping/backup", ""), "the key is required")
	require.Equal(t, http.StatusNotFound, do("GET", "/ping/wrong/backup", ""))
	require.Equal(t, http.StatusMethodNotAllowed, do("DELETE", "/ping/k3y/backup", ""))
	require.Equal(t, http.StatusNotFound, do("GET", "/ping/k3y/backup/256", ""))
	require.Equal(t, http.StatusOK, do("GET", "/ping/k3y/backup", ""))
	require.Equal(t, http.StatusOK, do("POST", "/ping/k3y/backup/3", strings.Repeat("x", 5000)+"\nERROR: disk full\n"))

	ctx := context.Background()
	stream, err := env.JS.Stream(ctx, "RUNS")
	require.NoError(t, err)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	var dispatched []*v1.RunDispatched
	var tasks []*v1.TaskStateChanged
	for range 4 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		m, err := v1.Decode("taskyard", msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(t, err)
		switch x := m.(type) {
		case *v1.RunDispatched:
			require.Equal(t, "taskyard.run.dispatched.backup", msg.Subject())
			dispatched = append(dispatched, x)
		case *v1.TaskStateChanged:
			require.Equal(t, "taskyard.task.db.backup", msg.Subject())
			tasks = append(tasks, x)
		}
	}
	require.Len(t, dispatched, 2)
	require.Len(t, tasks, 2)
	require.Equal(t, "ping", dispatched[0].GetRunner())
	require.Equal(t, dispatched[0].GetRunId(), tasks[0].GetRunId())
	require.NotEqual(t, tasks[0].GetRunId(), tasks[1].GetRunId())
	require.EqualValues(t, 0, tasks[0].GetContainers()[0].GetExitCode())
	require.EqualValues(t, 3, tasks[1].GetContainers()[0].GetExitCode())
	reason := tasks[1].GetContainers()[0].GetReason()
	require.LessOrEqual(t, len(reason), 1000)
	require.True(t, strings.HasSuffix(reason, "ERROR: disk full"), "keeps the end of the output")
	require.Equal(t, ping.RunID("backup", "r1"), ping.RunID("backup", "r1"))
	require.NotEqual(t, ping.RunID("backup", "r1"), ping.RunID("backup", "r2"))
	require.LessOrEqual(t, len(ping.RunID(strings.Repeat("a", 64), "r1")), v1.MaxRunIDLen)
}
