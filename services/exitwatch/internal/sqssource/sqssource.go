// Package sqssource reads ECS task state changes from the SQS queue an
// EventBridge rule on "ECS Task State Change" feeds, publishes them as
// TaskStateChanged on taskyard.task.<cluster>.<schedule>, and deletes each
// SQS message only after JetStream acknowledged the publish (so an event is
// never lost between the two).
package sqssource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecsevent"
)

// API is the part of the SQS client the source uses (*sqs.Client).
type API interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// Config configures the source.
type Config struct {
	QueueURL string
	Prefix   string
	// WaitTime is the long-polling wait (at most 20s).
	WaitTime time.Duration
	// VisibilityTimeout, when set, overrides the queue's for received
	// messages.
	VisibilityTimeout time.Duration
	// ClusterOf maps an ECS cluster ARN to the cluster profile name.
	ClusterOf func(clusterArn string) string
}

// Source is one SQS poller.
type Source struct {
	cfg  Config
	api  API
	js   jetstream.JetStream
	log  *slog.Logger
	subj v1.Subjects

	received, published, rejected metric.Int64Counter
}

// New returns a source.
func New(cfg Config, api API, js jetstream.JetStream, log *slog.Logger, meter metric.Meter) (*Source, error) {
	if cfg.WaitTime <= 0 || cfg.WaitTime > 20*time.Second {
		cfg.WaitTime = 20 * time.Second
	}
	if cfg.ClusterOf == nil {
		cfg.ClusterOf = ecsevent.ClusterName
	}
	s := &Source{cfg: cfg, api: api, js: js, log: log.With("queue_url", cfg.QueueURL), subj: v1.Subjects{Prefix: cfg.Prefix}}
	var err error
	if s.received, err = meter.Int64Counter("exitwatch_sqs_messages_received"); err != nil {
		return nil, err
	}
	if s.published, err = meter.Int64Counter("exitwatch_sqs_events_published"); err != nil {
		return nil, err
	}
	if s.rejected, err = meter.Int64Counter("exitwatch_sqs_messages_rejected"); err != nil {
		return nil, err
	}
	return s, nil
}

// Run polls until ctx ends, backing off on errors.
func (s *Source) Run(ctx context.Context) error {
	bo := backoff.NewExponentialBackOff()
	bo.MaxInterval = 30 * time.Second
	for ctx.Err() == nil {
		n, err := s.Poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			wait := bo.NextBackOff()
			s.log.Warn("sqs poll", "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		bo.Reset()
		_ = n
	}
	return nil
}

// Poll receives one batch, publishes it and deletes what was published.
// It returns how many events were published.
func (s *Source) Poll(ctx context.Context) (int, error) {
	in := &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(s.cfg.QueueURL),
		MaxNumberOfMessages:         10,
		WaitTimeSeconds:             int32(s.cfg.WaitTime / time.Second),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount, types.MessageSystemAttributeNameSentTimestamp},
	}
	if s.cfg.VisibilityTimeout > 0 {
		in.VisibilityTimeout = int32(s.cfg.VisibilityTimeout / time.Second)
	}
	out, err := s.api.ReceiveMessage(ctx, in)
	if err != nil {
		return 0, fmt.Errorf("receive from %s: %w", s.cfg.QueueURL, err)
	}
	s.received.Add(ctx, int64(len(out.Messages)))
	var del []types.DeleteMessageBatchRequestEntry
	published := 0
	for i, m := range out.Messages {
		id := strconv.Itoa(i)
		ev, err := ecsevent.Parse([]byte(aws.ToString(m.Body)))
		switch {
		case errors.Is(err, ecsevent.ErrNotTaskEvent):
			// The rule sends more than we need: nothing to keep.
			s.log.Debug("sqs message is not a task state change", "message_id", aws.ToString(m.MessageId), "err", err)
			del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(id), ReceiptHandle: m.ReceiptHandle})
			continue
		case err != nil:
			// Left in the queue: the queue's redrive policy moves it to
			// its dead-letter queue after maxReceiveCount.
			s.rejected.Add(ctx, 1)
			s.log.Error("malformed task state change left in the queue", "message_id", aws.ToString(m.MessageId),
				"receive_count", m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)], "err", err)
			continue
		}
		ev.Cluster = s.cfg.ClusterOf(ev.GetClusterArn())
		subject := s.subj.Task(ev.GetCluster(), ev.GetSchedule())
		if _, err := v1.Publish(ctx, s.js, subject, ev, ev.GetTaskArn()+":"+strconv.FormatInt(ev.GetVersion(), 10)); err != nil {
			// Not deleted: SQS redelivers it after the visibility timeout.
			s.log.Warn("publish task state change", "task_arn", ev.GetTaskArn(), "err", err)
			continue
		}
		published++
		s.published.Add(ctx, 1, metric.WithAttributes(attribute.String("cluster", ev.GetCluster())))
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(id), ReceiptHandle: m.ReceiptHandle})
	}
	if len(del) == 0 {
		return published, nil
	}
	dout, err := s.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(s.cfg.QueueURL), Entries: del})
	if err != nil {
		return published, fmt.Errorf("delete %d messages from %s: %w", len(del), s.cfg.QueueURL, err)
	}
	for _, f := range dout.Failed {
		// Redelivered later; de-duplicated by task arn and version.
		s.log.Warn("sqs delete failed", "entry", aws.ToString(f.Id), "code", aws.ToString(f.Code), "message", aws.ToString(f.Message))
	}
	return published, nil
}
