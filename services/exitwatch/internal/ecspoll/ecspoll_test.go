package ecspoll_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/awstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecspoll"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/kit/logging"
)

func client(e *awstest.ECS) *ecs.Client {
	return ecs.New(ecs.Options{Region: "eu-west-1", BaseEndpoint: aws.String(e.URL), Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")})
}

func TestPollPublishesNewVersionsOnce(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	srv := awstest.NewECS()
	defer srv.Close()
	t0 := time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)
	three := int32(3)
	// 150 running tasks (two pages, two DescribeTasks batches) and one
	// stopped taskyard task identified by its tags only.
	for i := range 150 {
		srv.Put(awstest.ECSTask{Arn: fmt.Sprintf("arn:aws:ecs:eu-west-1:123456789012:task/batch/%032d", i), Cluster: "batch", LastStatus: "RUNNING", DesiredStatus: "RUNNING",
			StartedBy: "ecs-svc/1", Group: "service:web", Version: 3, CreatedAt: t0, StartedAt: t0, Containers: []awstest.ECSContainer{{Name: "web", LastStatus: "RUNNING"}}})
	}
	srv.Put(awstest.ECSTask{Arn: "arn:aws:ecs:eu-west-1:123456789012:task/batch/ffff", Cluster: "batch", LastStatus: "STOPPED", DesiredStatus: "STOPPED",
		Group: "family:x", Version: 5, CreatedAt: t0, StartedAt: t0, StoppedAt: t0.Add(time.Minute), StopCode: "EssentialContainerExited", StoppedReason: "Essential container in task exited",
		Containers: []awstest.ECSContainer{{Name: "app", LastStatus: "STOPPED", ExitCode: &three}},
		Tags:       map[string]string{"taskyard:schedule": "nightly", "taskyard:run-id": "nightly-20261121T030000Z-s-0011223344556677"}})
	p := ecspoll.New(ecspoll.Config{Clusters: []string{"batch"}, ClusterOf: func(string) string { return "prod" }}, client(srv), env.JS, logging.Discard(), func() time.Time { return t0 })
	ctx := context.Background()
	n, err := p.Poll(ctx, "batch")
	require.NoError(t, err)
	require.Equal(t, 151, n)
	n, err = p.Poll(ctx, "batch")
	require.NoError(t, err)
	require.Zero(t, n, "unchanged versions are not published again")
	require.Empty(t, srv.Problems)
	require.Equal(t, 4, srv.Requests["DescribeTasks"])

	stream, err := env.JS.Stream(ctx, "RUNS")
	require.NoError(t, err)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"taskyard.task.prod.nightly"}})
	require.NoError(t, err)
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	m, err := v1.Decode("taskyard", msg.Subject(), msg.Headers(), msg.Data())
	require.NoError(t, err)
	ev := m.(*v1.TaskStateChanged)
	require.Equal(t, "nightly-20261121T030000Z-s-0011223344556677", ev.GetRunId())
	require.Equal(t, "STOPPED", ev.GetLastStatus())
	require.EqualValues(t, 3, ev.GetContainers()[0].GetExitCode())
	require.Equal(t, t0.Add(time.Minute), ev.GetStoppedAt().AsTime())
	require.Equal(t, "poll", ev.GetSource())
	require.EqualValues(t, 5, ev.GetVersion())
}

func TestStopper(t *testing.T) {
	t.Parallel()
	srv := awstest.NewECS()
	defer srv.Close()
	srv.Put(awstest.ECSTask{Arn: "arn:t1", Cluster: "batch", LastStatus: "RUNNING", DesiredStatus: "RUNNING"})
	s := ecspoll.Stopper{API: client(srv)}
	require.NoError(t, s.StopTask(context.Background(), "batch", "arn:t1", "taskyard: run exceeded its timeout of 30m0s"))
	require.Equal(t, "taskyard: run exceeded its timeout of 30m0s", srv.Stopped["arn:t1"])
	require.ErrorContains(t, s.StopTask(context.Background(), "batch", "arn:nope", "x"), "stop task arn:nope")
}
