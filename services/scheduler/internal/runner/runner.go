// Package runner defines what the scheduler asks of a runner — the thing
// that turns a dispatch decision into running tasks (ECS RunTask, a local
// process) — and the environment every task gets.
package runner

import (
	"context"
	"time"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
)

// Environment variables every task of a run gets.
const (
	EnvRunID       = "TASKYARD_RUN_ID"
	EnvScheduledAt = "TASKYARD_SCHEDULED_AT"
	EnvTraceParent = "TRACEPARENT"
)

// Request is one run to start.
type Request struct {
	// RunID is the deterministic run id: the ECS clientToken.
	RunID       string
	Spec        *v1.ScheduleSpec
	Profile     *schedule.Profile // nil when the runner needs none (exec)
	ScheduledAt time.Time
	Trigger     v1.Trigger
	// TraceParent is the W3C traceparent of the dispatch span ("" when not
	// traced).
	TraceParent string
}

// Env returns the TASKYARD_* variables (and TRACEPARENT) of the run.
func (r Request) Env() map[string]string {
	env := map[string]string{
		EnvRunID:       r.RunID,
		EnvScheduledAt: r.ScheduledAt.UTC().Format(time.RFC3339Nano),
	}
	if r.TraceParent != "" {
		env[EnvTraceParent] = r.TraceParent
	}
	return env
}

// Result is what a runner started. A run with Failures or with an error
// from Run is a failed dispatch; TaskIDs are the tasks that did start.
type Result struct {
	TaskIDs        []string
	TaskDefinition string
	Failures       []*v1.DispatchFailure
}

// Task is a task of a schedule that is not STOPPED.
type Task struct {
	ID    string
	RunID string
}

// Runner starts and stops tasks.
type Runner interface {
	// Name is the runner's name in events: ecs, exec.
	Name() string
	// Run starts the run's tasks (spec.timing.task_count of them).
	Run(ctx context.Context, req Request) (Result, error)
	// Stop stops tasks, recording reason as their stopped reason.
	Stop(ctx context.Context, spec *v1.ScheduleSpec, profile *schedule.Profile, taskIDs []string, reason string) error
	// Active lists the schedule's tasks that are not STOPPED (asked on
	// takeover, for concurrency policies).
	Active(ctx context.Context, spec *v1.ScheduleSpec, profile *schedule.Profile) ([]Task, error)
	// ClusterLoad returns how many tasks run or are pending on the
	// profile's cluster (for the taskLimit guard).
	ClusterLoad(ctx context.Context, profile *schedule.Profile) (int, error)
}
