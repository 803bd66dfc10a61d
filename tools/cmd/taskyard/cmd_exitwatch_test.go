package main

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	ewapp "github.com/taskyard/taskyard/services/exitwatch/app"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

func TestHistoryAndStatus(t *testing.T) {
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

	spec := &v1.ScheduleSpec{Name: "nightly", Cluster: "batch", Type: "scheduled",
		Containers: []*v1.Container{{Name: "app", Image: "report:1", Memory: 512, Essential: true}},
		Timing:     &v1.Timing{Expression: "cron(0 3 * * ? *)", Enabled: true, TaskCount: 1, Concurrency: "forbid", StartingDeadline: durationpb.New(5 * time.Minute)}}
	data, err := proto.Marshal(spec)
	require.NoError(t, err)
	kvs, err := js.KeyValue(ctx, "taskyard-schedules")
	require.NoError(t, err)
	_, err = kvs.Put(ctx, "nightly", data)
	require.NoError(t, err)

	kv, err := js.KeyValue(ctx, "taskyard-runs")
	require.NoError(t, err)
	day := time.Date(2026, 11, 19, 3, 0, 0, 0, time.UTC)
	put := func(r *v1.RunRecord) {
		b, err := proto.Marshal(r)
		require.NoError(t, err)
		_, err = kv.Put(ctx, r.GetRunId(), b)
		require.NoError(t, err)
	}
	for i, o := range []v1.Outcome{v1.Outcome_OUTCOME_SUCCEEDED, v1.Outcome_OUTCOME_FAILED} {
		at := day.Add(time.Duration(i) * 24 * time.Hour)
		code := int32(0)
		reason := "every essential container exited 0"
		if o == v1.Outcome_OUTCOME_FAILED {
			code, reason = 3, "container app exited 3"
		}
		put(&v1.RunRecord{RunId: v1.RunID("nightly", at, v1.Trigger_TRIGGER_SCHEDULE), Schedule: "nightly", Cluster: "batch", Trigger: v1.Trigger_TRIGGER_SCHEDULE,
			ScheduledAt: timestamppb.New(at), DispatchedAt: timestamppb.New(at), StartedAt: timestamppb.New(at.Add(10 * time.Second)),
			FinishedAt: timestamppb.New(at.Add(4*time.Minute + 10*time.Second)), Outcome: o, Reason: reason,
			Containers: []*v1.ContainerExit{{Name: "app", ExitCode: code, HasExitCode: true, Essential: true}}})
	}
	missedAt := day.Add(48 * time.Hour)
	put(&v1.RunRecord{RunId: v1.RunID("nightly", missedAt, v1.Trigger_TRIGGER_SCHEDULE), Schedule: "nightly", Trigger: v1.Trigger_TRIGGER_SCHEDULE,
		ScheduledAt: timestamppb.New(missedAt), FinishedAt: timestamppb.New(missedAt.Add(7 * time.Minute)), Reason: "missed: expected at 2026-11-21T03:00:00Z"})
	put(&v1.RunRecord{RunId: "nightly-other-schedule-x", Schedule: "nightly-other"})

	out, errOut, code := runCLI(t, ctx, "--nats-url", srv.ClientURL(), "history", "nightly", "-n", "2")
	require.Zero(t, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Contains(t, lines[0], "OUTCOME")
	require.Contains(t, lines[1], "missed")
	require.Contains(t, lines[2], "failed")
	require.Contains(t, lines[2], "app=3")
	require.Contains(t, lines[2], "4m0s")
	require.Contains(t, lines[2], "2026-11-20 03:00:00Z")

	out, _, code = runCLI(t, ctx, "--nats-url", srv.ClientURL(), "history", "nightly", "--json")
	require.Zero(t, code)
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 3)
	_, errOut, code = runCLI(t, ctx, "--nats-url", srv.ClientURL(), "history", "bad name")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "NAME:")

	// status needs a running exitwatch.
	_, errOut, code = runCLI(t, ctx, "--nats-url", srv.ClientURL(), "--timeout", "2s", "status")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no exitwatch answered")

	cfg := ewapp.DevConfig(natsconn.Config{URL: srv.ClientURL(), Prefix: v1.DefaultPrefix, Replicas: 1}, "127.0.0.1:0", "", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- ewapp.Run(ctx, cfg, ewapp.Deps{Log: logging.New(io.Discard, 0, "exitwatch"), Listener: ln})
	}()
	require.Eventually(t, func() bool {
		out, _, code = runCLI(t, ctx, "--nats-url", srv.ClientURL(), "--timeout", "2s", "status")
		return code == 0 && strings.Contains(out, "nightly")
	}, 10*time.Second, 50*time.Millisecond)
	require.Contains(t, out, "STATE")
	row := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "nightly ") {
			row = l
		}
	}
	require.Contains(t, row, "schedule")
	require.Contains(t, row, "down", "the newest verdict is a missed fire")
	cancel()
	require.NoError(t, <-done)
}

func TestDevExitwatchConfig(t *testing.T) {
	actor, err := devExitwatch(devEnv{Log: logging.New(io.Discard, 0, "exitwatch"), NATS: natsconn.Config{URL: "nats://127.0.0.1:4222", Prefix: "taskyard", Replicas: 1},
		AlertWebhook: "http://127.0.0.1:9/hook", ExitwatchHTTP: "127.0.0.1:0"})
	require.NoError(t, err)
	require.NotNil(t, actor)
	_, err = devExitwatch(devEnv{NATS: natsconn.Config{URL: "nats://127.0.0.1:4222", Prefix: "taskyard", Replicas: 1}, AlertWebhook: "not a url", ExitwatchHTTP: "127.0.0.1:0"})
	require.ErrorContains(t, err, "alert-webhook")
}
