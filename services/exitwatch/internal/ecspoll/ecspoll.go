// Package ecspoll is the fallback source of task states for accounts
// without the EventBridge rule: it lists the tasks of the configured
// clusters (ListTasks, RUNNING and STOPPED) and describes them
// (DescribeTasks with tags, 100 at a time), publishing each task version
// once as TaskStateChanged. It also stops tasks that ran past their
// timeout (StopTask) when asked to.
package ecspoll

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecsevent"
)

// API is the part of the ECS client the poller uses (*ecs.Client).
type API interface {
	ListTasks(ctx context.Context, in *ecs.ListTasksInput, opts ...func(*ecs.Options)) (*ecs.ListTasksOutput, error)
	DescribeTasks(ctx context.Context, in *ecs.DescribeTasksInput, opts ...func(*ecs.Options)) (*ecs.DescribeTasksOutput, error)
}

// Config configures the poller.
type Config struct {
	Clusters  []string
	Interval  time.Duration
	Prefix    string
	ClusterOf func(string) string
}

// Poller polls ECS.
type Poller struct {
	cfg  Config
	api  API
	js   jetstream.JetStream
	log  *slog.Logger
	now  func() time.Time
	subj v1.Subjects

	mu           sync.Mutex
	seen         map[string]int64  // task arn -> last published version
	clusterOfArn map[string]string // task arn -> polled cluster
}

// New returns a poller.
func New(cfg Config, api API, js jetstream.JetStream, log *slog.Logger, now func() time.Time) *Poller {
	if cfg.ClusterOf == nil {
		cfg.ClusterOf = ecsevent.ClusterName
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	return &Poller{cfg: cfg, api: api, js: js, log: log, now: now, subj: v1.Subjects{Prefix: cfg.Prefix}, seen: map[string]int64{}, clusterOfArn: map[string]string{}}
}

// Run polls every Interval until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		for _, c := range p.cfg.Clusters {
			if _, err := p.Poll(ctx, c); err != nil && ctx.Err() == nil {
				p.log.Warn("ecs poll", "cluster", c, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll lists and describes one cluster's tasks and publishes the versions
// not published before. It returns how many it published.
func (p *Poller) Poll(ctx context.Context, cluster string) (int, error) {
	var arns []string
	for _, status := range []types.DesiredStatus{types.DesiredStatusRunning, types.DesiredStatusStopped} {
		pg := ecs.NewListTasksPaginator(p.api, &ecs.ListTasksInput{Cluster: aws.String(cluster), DesiredStatus: status, MaxResults: aws.Int32(100)})
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if err != nil {
				return 0, fmt.Errorf("list %s tasks of %s: %w", status, cluster, err)
			}
			arns = append(arns, out.TaskArns...)
		}
	}
	// Forget tasks ECS no longer lists (stopped tasks age out after about
	// an hour), so the memory of published versions stays bounded.
	listed := make(map[string]bool, len(arns))
	for _, a := range arns {
		listed[a] = true
	}
	p.mu.Lock()
	for a := range p.seen {
		if !listed[a] && p.clusterOfArn[a] == cluster {
			delete(p.seen, a)
			delete(p.clusterOfArn, a)
		}
	}
	p.mu.Unlock()
	published := 0
	for i := 0; i < len(arns); i += 100 {
		batch := arns[i:min(i+100, len(arns))]
		out, err := p.api.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(cluster), Tasks: batch, Include: []types.TaskField{types.TaskFieldTags}})
		if err != nil {
			return published, fmt.Errorf("describe %d tasks of %s: %w", len(batch), cluster, err)
		}
		for _, f := range out.Failures {
			p.log.Debug("describe task failure", "arn", aws.ToString(f.Arn), "reason", aws.ToString(f.Reason))
		}
		for i := range out.Tasks {
			ev := FromTask(&out.Tasks[i], p.now())
			p.mu.Lock()
			old, ok := p.seen[ev.GetTaskArn()]
			p.mu.Unlock()
			if ok && old >= ev.GetVersion() {
				continue
			}
			ev.Cluster = p.cfg.ClusterOf(ev.GetClusterArn())
			id := ev.GetTaskArn() + ":" + strconv.FormatInt(ev.GetVersion(), 10)
			if _, err := v1.Publish(ctx, p.js, p.subj.Task(ev.GetCluster(), ev.GetSchedule()), ev, id); err != nil {
				return published, err
			}
			p.mu.Lock()
			p.seen[ev.GetTaskArn()] = ev.GetVersion()
			p.clusterOfArn[ev.GetTaskArn()] = cluster
			p.mu.Unlock()
			published++
		}
	}
	return published, nil
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// FromTask converts a described task. Tasks taskyard started carry the
// schedule and run id in startedBy/group and in the tags taskyard:schedule
// and taskyard:run-id.
func FromTask(t *types.Task, now time.Time) *v1.TaskStateChanged {
	ev := &v1.TaskStateChanged{
		TaskArn: aws.ToString(t.TaskArn), ClusterArn: aws.ToString(t.ClusterArn), LastStatus: aws.ToString(t.LastStatus),
		DesiredStatus: aws.ToString(t.DesiredStatus), StopCode: string(t.StopCode), StoppedReason: aws.ToString(t.StoppedReason),
		StartedBy: aws.ToString(t.StartedBy), Group: aws.ToString(t.Group), TaskDefinitionArn: aws.ToString(t.TaskDefinitionArn),
		CreatedAt: ts(t.CreatedAt), PullStartedAt: ts(t.PullStartedAt), StartedAt: ts(t.StartedAt), StoppingAt: ts(t.StoppingAt),
		StoppedAt: ts(t.StoppedAt), Version: t.Version, Source: "poll", EventTime: timestamppb.New(now),
		LaunchType: string(t.LaunchType), CapacityProviderName: aws.ToString(t.CapacityProviderName),
	}
	for _, c := range t.Containers {
		cs := &v1.ContainerState{Name: aws.ToString(c.Name), LastStatus: aws.ToString(c.LastStatus), Reason: aws.ToString(c.Reason), Image: aws.ToString(c.Image), Essential: true}
		if c.ExitCode != nil {
			cs.ExitCode, cs.HasExitCode = *c.ExitCode, true
		}
		ev.Containers = append(ev.Containers, cs)
	}
	var tagSchedule, tagRun, envRun string
	for _, tag := range t.Tags {
		switch aws.ToString(tag.Key) {
		case "taskyard:schedule":
			tagSchedule = aws.ToString(tag.Value)
		case "taskyard:run-id":
			tagRun = aws.ToString(tag.Value)
		}
	}
	if t.Overrides != nil {
		for _, o := range t.Overrides.ContainerOverrides {
			for _, e := range o.Environment {
				if aws.ToString(e.Name) == ecsevent.RunIDEnv {
					envRun = aws.ToString(e.Value)
				}
			}
		}
	}
	if envRun == "" {
		envRun = tagRun
	}
	startedBy := ev.GetStartedBy()
	if tagSchedule != "" && startedBy == "" {
		startedBy = ecsevent.StartedByPrefix + tagSchedule
	}
	ev.Schedule, ev.RunId = ecsevent.Identify(startedBy, ev.GetGroup(), envRun)
	return ev
}

// Stopper stops tasks with ECS StopTask.
type Stopper struct {
	API interface {
		StopTask(ctx context.Context, in *ecs.StopTaskInput, opts ...func(*ecs.Options)) (*ecs.StopTaskOutput, error)
	}
}

// StopTask stops taskArn in cluster with reason.
func (s Stopper) StopTask(ctx context.Context, cluster, taskArn, reason string) error {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	_, err := s.API.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(cluster), Task: aws.String(taskArn), Reason: aws.String(reason)})
	if err != nil {
		return fmt.Errorf("stop task %s: %w", taskArn, err)
	}
	return nil
}
