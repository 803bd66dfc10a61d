// Package ecsrunner dispatches runs to AWS ECS with the aws-sdk-go-v2 ECS
// client: it registers the schedule's task definition (family
// taskyard-job-<schedule>) only when its normalized content differs from the
// latest ACTIVE revision, then calls RunTask with the run id as clientToken,
// startedBy taskyard:<schedule>, the run id in group and tags, and the
// TASKYARD_* variables as container overrides. RunTask calls go through a
// token bucket (20/s by default, ECS's sustained rate) and are retried with
// exponential backoff while ECS throttles.
package ecsrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"
	"github.com/cenkalti/backoff/v5"
	"golang.org/x/time/rate"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

// NewClient builds an ECS client from the SDK's default configuration
// sources (environment, shared config, task role); endpoint overrides the
// service URL when not empty.
func NewClient(ctx context.Context, region, endpoint string) (*ecs.Client, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	return ecs.NewFromConfig(cfg, func(o *ecs.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	}), nil
}

// Config wires a Runner.
type Config struct {
	Client *ecs.Client
	Log    *slog.Logger
	// Rate is RunTask calls per second (default 20); Burst the bucket size
	// (default 20).
	Rate  float64
	Burst int
	// MaxRetry bounds the time spent retrying a throttled call (default
	// 1 minute).
	MaxRetry time.Duration
	// InitialBackoff is the first retry delay (default 200 ms).
	InitialBackoff time.Duration
	// LoadCacheTTL is how long a cluster's task count is reused for the
	// taskLimit guard (default 1 s).
	LoadCacheTTL time.Duration
}

// Runner is the ECS runner.
type Runner struct {
	cfg     Config
	limiter *rate.Limiter

	mu    sync.Mutex
	tdefs map[string]tdCache   // family -> last registered/reused
	loads map[string]loadCache // cluster -> task count
}

type tdCache struct {
	content string
	arn     string
}

type loadCache struct {
	n  int
	at time.Time
}

// New returns an ECS runner.
func New(cfg Config) *Runner {
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 20
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = time.Minute
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = 200 * time.Millisecond
	}
	if cfg.LoadCacheTTL <= 0 {
		cfg.LoadCacheTTL = time.Second
	}
	return &Runner{
		cfg: cfg, limiter: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		tdefs: map[string]tdCache{}, loads: map[string]loadCache{},
	}
}

// Name is "ecs".
func (r *Runner) Name() string { return "ecs" }

// isThrottle reports whether ECS asked us to slow down.
func isThrottle(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded":
			return true
		}
	}
	return false
}

// call retries op while ECS throttles.
func call[T any](ctx context.Context, r *Runner, what string, op func(context.Context) (T, error)) (T, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = r.cfg.InitialBackoff
	b.MaxInterval = 10 * time.Second
	attempt := 0
	return backoff.Retry(ctx, func() (T, error) {
		attempt++
		v, err := op(ctx)
		if err != nil && !isThrottle(err) {
			return v, backoff.Permanent(err)
		}
		if err != nil {
			r.cfg.Log.Warn("ecs throttled, retrying", "call", what, "attempt", attempt, "err", err)
		}
		return v, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(r.cfg.MaxRetry))
}

// taskDefinition returns the ARN of a task definition matching the
// schedule: the cached one, the latest ACTIVE revision when its content is
// the same, or a newly registered revision.
func (r *Runner) taskDefinition(ctx context.Context, spec *v1.ScheduleSpec, p *schedule.Profile) (string, error) {
	in, err := TaskDefinitionInput(spec, p)
	if err != nil {
		return "", err
	}
	family := aws.ToString(in.Family)
	content := normalizeInput(in)
	r.mu.Lock()
	c, ok := r.tdefs[family]
	r.mu.Unlock()
	if ok && c.content == content {
		return c.arn, nil
	}
	out, err := call(ctx, r, "DescribeTaskDefinition", func(ctx context.Context) (*ecs.DescribeTaskDefinitionOutput, error) {
		return r.cfg.Client.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(family)})
	})
	var arn string
	switch {
	case err == nil && out.TaskDefinition != nil && out.TaskDefinition.Status == types.TaskDefinitionStatusActive &&
		normalizeDescribed(out.TaskDefinition) == content:
		arn = aws.ToString(out.TaskDefinition.TaskDefinitionArn)
		r.cfg.Log.Debug("task definition reused", "family", family, "arn", arn)
	case err != nil && !isNotFound(err):
		return "", fmt.Errorf("describe task definition %s: %w", family, err)
	default:
		reg, err := call(ctx, r, "RegisterTaskDefinition", func(ctx context.Context) (*ecs.RegisterTaskDefinitionOutput, error) {
			return r.cfg.Client.RegisterTaskDefinition(ctx, in)
		})
		if err != nil {
			return "", fmt.Errorf("register task definition %s: %w", family, err)
		}
		arn = aws.ToString(reg.TaskDefinition.TaskDefinitionArn)
		r.cfg.Log.Info("task definition registered", "family", family, "arn", arn)
	}
	r.mu.Lock()
	r.tdefs[family] = tdCache{content: content, arn: arn}
	r.mu.Unlock()
	return arn, nil
}

// isNotFound: DescribeTaskDefinition answers an unknown family with a
// ClientException.
func isNotFound(err error) bool {
	var ce *types.ClientException
	return errors.As(err, &ce)
}

// Run registers (or reuses) the task definition and starts the run's tasks.
func (r *Runner) Run(ctx context.Context, req runner.Request) (runner.Result, error) {
	p := req.Profile
	if p == nil {
		return runner.Result{}, fmt.Errorf("schedule %s: no cluster profile %q on this scheduler", req.Spec.GetName(), req.Spec.GetCluster())
	}
	arn, err := r.taskDefinition(ctx, req.Spec, p)
	if err != nil {
		return runner.Result{}, err
	}
	res := runner.Result{TaskDefinition: arn}
	for _, in := range RunTaskInputs(req, p, arn) {
		if err := r.limiter.Wait(ctx); err != nil {
			return res, fmt.Errorf("runtask rate limiter: %w", err)
		}
		out, err := call(ctx, r, "RunTask", func(ctx context.Context) (*ecs.RunTaskOutput, error) {
			return r.cfg.Client.RunTask(ctx, in)
		})
		if err != nil {
			return res, fmt.Errorf("run task %s on %s: %w", arn, p.Cluster, err)
		}
		for _, t := range out.Tasks {
			res.TaskIDs = append(res.TaskIDs, aws.ToString(t.TaskArn))
		}
		for _, f := range out.Failures {
			res.Failures = append(res.Failures, &v1.DispatchFailure{Arn: aws.ToString(f.Arn), Reason: aws.ToString(f.Reason), Detail: aws.ToString(f.Detail)})
		}
	}
	return res, nil
}

// Stop calls StopTask for each task with reason.
func (r *Runner) Stop(ctx context.Context, _ *v1.ScheduleSpec, p *schedule.Profile, taskIDs []string, reason string) error {
	if p == nil {
		return errors.New("stop tasks: no cluster profile")
	}
	if len(reason) > 255 {
		reason = reason[:255]
	}
	var errs []error
	for _, id := range taskIDs {
		_, err := call(ctx, r, "StopTask", func(ctx context.Context) (*ecs.StopTaskOutput, error) {
			return r.cfg.Client.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(p.Cluster), Task: aws.String(id), Reason: aws.String(reason)})
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("stop task %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Active lists the schedule's tasks that are not STOPPED (ListTasks by
// startedBy, then DescribeTasks for the run id in group).
func (r *Runner) Active(ctx context.Context, spec *v1.ScheduleSpec, p *schedule.Profile) ([]runner.Task, error) {
	if p == nil {
		return nil, nil
	}
	var arns []string
	pg := ecs.NewListTasksPaginator(r.cfg.Client, &ecs.ListTasksInput{Cluster: aws.String(p.Cluster), StartedBy: aws.String(StartedBy(spec.GetName()))})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list tasks of %s: %w", spec.GetName(), err)
		}
		arns = append(arns, out.TaskArns...)
	}
	var tasks []runner.Task
	for i := 0; i < len(arns); i += 100 {
		out, err := call(ctx, r, "DescribeTasks", func(ctx context.Context) (*ecs.DescribeTasksOutput, error) {
			return r.cfg.Client.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(p.Cluster), Tasks: arns[i:min(i+100, len(arns))]})
		})
		if err != nil {
			return nil, fmt.Errorf("describe tasks of %s: %w", spec.GetName(), err)
		}
		for _, t := range out.Tasks {
			if aws.ToString(t.LastStatus) == "STOPPED" {
				continue
			}
			tasks = append(tasks, runner.Task{ID: aws.ToString(t.TaskArn), RunID: RunIDFromGroup(aws.ToString(t.Group))})
		}
	}
	return tasks, nil
}

// ClusterLoad is the cluster's running + pending task count
// (DescribeClusters), cached for LoadCacheTTL.
func (r *Runner) ClusterLoad(ctx context.Context, p *schedule.Profile) (int, error) {
	r.mu.Lock()
	c, ok := r.loads[p.Cluster]
	r.mu.Unlock()
	if ok && time.Since(c.at) < r.cfg.LoadCacheTTL {
		return c.n, nil
	}
	out, err := call(ctx, r, "DescribeClusters", func(ctx context.Context) (*ecs.DescribeClustersOutput, error) {
		return r.cfg.Client.DescribeClusters(ctx, &ecs.DescribeClustersInput{Clusters: []string{p.Cluster}})
	})
	if err != nil {
		return 0, fmt.Errorf("describe cluster %s: %w", p.Cluster, err)
	}
	if len(out.Clusters) == 0 {
		reason := "not found"
		if len(out.Failures) > 0 {
			reason = aws.ToString(out.Failures[0].Reason)
		}
		return 0, fmt.Errorf("describe cluster %s: %s", p.Cluster, reason)
	}
	n := int(out.Clusters[0].RunningTasksCount + out.Clusters[0].PendingTasksCount)
	r.mu.Lock()
	r.loads[p.Cluster] = loadCache{n: n, at: time.Now()}
	r.mu.Unlock()
	return n, nil
}
