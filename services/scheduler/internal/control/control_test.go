package control

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/clock"
)

func server(t *testing.T, profiles map[string]*schedule.Profile) *Server {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	sch, err := js.KeyValue(ctx, v1.Buckets("").Schedules)
	require.NoError(t, err)
	st, err := js.KeyValue(ctx, v1.Buckets("").State)
	require.NoError(t, err)
	return New(Config{NC: nc, Schedules: sch, State: st, Profiles: profiles, Clock: clock.NewManual(time.Unix(1_800_000_000, 0)), Log: logging.Discard()})
}

func spec(name, cluster string) *v1.ScheduleSpec {
	return &v1.ScheduleSpec{
		Name: name, Cluster: cluster, Type: "scheduled",
		Containers: []*v1.Container{{Name: "app", Image: "busybox", Memory: 64, Essential: true}},
		Timing:     &v1.Timing{Expression: "rate(1 hour)", Timezone: "UTC", TaskCount: 1, Concurrency: "forbid", Enabled: true, StartingDeadline: durationpb.New(time.Minute), CatchUp: &v1.CatchUp{Mode: "latest", Max: 1}},
	}
}

func TestPlanRefusesWholeRequest(t *testing.T) {
	t.Parallel()
	s := server(t, map[string]*schedule.Profile{"dev": {Name: "dev", Cluster: "dev", LaunchType: schedule.LaunchTypeEC2, NetworkMode: schedule.NetworkModeBridge}})
	ctx := context.Background()

	reply, writes := s.plan(ctx, &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec("a", "dev"), spec("a", "dev")}}, true, false)
	require.Contains(t, reply.Error, `schedule "a": given twice`)
	require.Empty(t, writes)

	bad := spec("b", "prod")
	reply, writes = s.plan(ctx, &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec("a", "dev"), bad}}, true, false)
	require.Contains(t, reply.Error, `cluster: no cluster profile "prod" on the scheduler (known: dev)`)
	require.Empty(t, writes, "one bad schedule: nothing is written")

	broken := spec("c", "dev")
	broken.Timing.Expression = "cron(0 3 * * *)"
	broken.SourceFile = "jobs/c.yml"
	reply, _ = s.plan(ctx, &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{broken}}, true, false)
	require.Contains(t, reply.Error, `schedule "c" (jobs/c.yml): `)
	require.Contains(t, reply.Error, "schedule.expression")

	reply, writes = s.plan(ctx, &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec("a", "dev")}, Delete: []string{"a"}}, true, true)
	require.Contains(t, reply.Error, "both applied and deleted")
	require.Empty(t, writes)

	reply, writes = s.plan(ctx, &v1.ApplyRequest{Delete: []string{"never-existed"}}, true, true)
	require.Empty(t, reply.Error)
	require.Empty(t, writes)
	require.Empty(t, reply.Changes)
}
