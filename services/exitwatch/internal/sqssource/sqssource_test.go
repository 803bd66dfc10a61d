package sqssource_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/awstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/sqssource"
	"github.com/taskyard/taskyard/services/kit/logging"
)

// fixtures returns every event of testdata/ecs-events, each as AWS sent it.
func fixtures(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../testdata/ecs-events/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var evs []json.RawMessage
		require.NoError(t, json.Unmarshal(data, &evs), f)
		for _, e := range evs {
			out = append(out, string(e))
		}
	}
	return out
}

func client(q *awstest.SQS) *sqs.Client {
	return sqs.New(sqs.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(q.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
}

func TestPollPublishesThenDeletes(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	q := awstest.NewSQS()
	defer q.Close()
	bodies := fixtures(t)
	for _, b := range bodies {
		q.Send(b)
	}
	q.Send(`{"version":"0","id":"x","detail-type":"ECS Container Instance State Change","source":"aws.ecs","detail":{}}`)
	q.Send(`{"version":"0","id":"broken","detail-type":"ECS Task State Change","source":"aws.ecs","detail":{"taskArn":"arn:aws:ecs:eu-west-1:1:task/batch/x","lastStatus":"RUNNING"}}`)

	// A message whose publish failed comes back after a second.
	src, err := sqssource.New(sqssource.Config{QueueURL: q.QueueURL, WaitTime: time.Second, VisibilityTimeout: time.Second, ClusterOf: func(arn string) string {
		if arn == "arn:aws:ecs:eu-west-1:123456789012:cluster/batch" {
			return "prod-batch"
		}
		return "?"
	}}, client(q), env.JS, logging.Discard(), noop.NewMeterProvider().Meter("t"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	total := 0
	for q.Len() > 1 {
		n, err := src.Poll(ctx)
		require.NoError(t, err)
		total += n
	}
	require.Equal(t, len(bodies), total, "every task event published once per delivery")
	// The malformed one (no detail.version) stays for the queue's redrive
	// policy; everything else was deleted after the publish.
	require.Len(t, q.Bodies(), 1)
	require.Contains(t, q.Bodies()[0], `"broken"`)
	require.Empty(t, q.Problems)

	// JetStream de-duplicated the repeated (task arn, version) pairs.
	stream, err := env.JS.Stream(ctx, "RUNS")
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	uniq := map[string]bool{}
	for _, b := range bodies {
		var e struct {
			Detail struct {
				TaskArn string
				Version int
			}
		}
		require.NoError(t, json.Unmarshal([]byte(b), &e))
		uniq[fmt.Sprintf("%s:%d", e.Detail.TaskArn, e.Detail.Version)] = true
	}
	require.Less(t, len(uniq), len(bodies), "fixtures carry duplicates")
	require.EqualValues(t, len(uniq), info.State.Msgs)

	// Subjects carry the profile name and the schedule.
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"taskyard.task.prod-batch.nightly-report"}})
	require.NoError(t, err)
	batch, err := cons.FetchNoWait(100)
	require.NoError(t, err)
	var got []*v1.TaskStateChanged
	for m := range batch.Messages() {
		dm, err := v1.Decode("taskyard", m.Subject(), m.Headers(), m.Data())
		require.NoError(t, err)
		got = append(got, dm.(*v1.TaskStateChanged))
	}
	require.NotEmpty(t, got)
	for _, ev := range got {
		require.Equal(t, "prod-batch", ev.GetCluster())
		require.Equal(t, "sqs", ev.GetSource())
		require.NotEmpty(t, ev.GetRunId())
	}
}

func TestPublishFailureKeepsMessage(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	q := awstest.NewSQS()
	defer q.Close()
	q.Send(fixtures(t)[0])
	src, err := sqssource.New(sqssource.Config{QueueURL: q.QueueURL, WaitTime: time.Second, Prefix: "nostream"}, client(q), env.JS, logging.Discard(), noop.NewMeterProvider().Meter("t"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// No stream captures the "nostream." prefix: the publish is not
	// acknowledged, so the message must stay in the queue.
	n, err := src.Poll(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, 1, q.Len())
	require.Zero(t, q.Requests["DeleteMessageBatch"])
}

func TestReceiveErrorNamesQueue(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	q := awstest.NewSQS()
	defer q.Close()
	src, err := sqssource.New(sqssource.Config{QueueURL: q.URL + "/123456789012/missing"}, client(q), env.JS, logging.Discard(), noop.NewMeterProvider().Meter("t"))
	require.NoError(t, err)
	_, err = src.Poll(context.Background())
	require.ErrorContains(t, err, "missing")
	require.ErrorContains(t, err, "QueueDoesNotExist")
}

// A failed delete leaves the message to come back; the second publish of
// the same (task arn, version) is dropped by JetStream, so the event is
// still in the stream once.
func TestFailedDeleteRedelivers(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	q := awstest.NewSQS()
	defer q.Close()
	body := fixtures(t)[0]
	q.Send(body)
	src, err := sqssource.New(sqssource.Config{QueueURL: q.QueueURL, WaitTime: time.Second}, client(q), env.JS, logging.Discard(), noop.NewMeterProvider().Meter("t"))
	require.NoError(t, err)
	ctx := context.Background()
	q.FailDeletes(true)
	n, err := src.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, 1, q.Len())
	q.FailDeletes(false)
	q.MakeVisible()
	n, err = src.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Zero(t, q.Len())
	stream, err := env.JS.Stream(ctx, "RUNS")
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs)
}
