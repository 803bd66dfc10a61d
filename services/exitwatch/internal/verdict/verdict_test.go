package verdict_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/verdict"
)

var t0 = time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)

func task(stopCode, reason string, ran time.Duration, cs ...*v1.ContainerState) *v1.TaskStateChanged {
	return &v1.TaskStateChanged{TaskArn: "t", LastStatus: "STOPPED", StopCode: stopCode, StoppedReason: reason,
		StartedAt: timestamppb.New(t0), StoppedAt: timestamppb.New(t0.Add(ran)), Containers: cs}
}

func exit(name string, code int32, reason string) *v1.ContainerState {
	return &v1.ContainerState{Name: name, ExitCode: code, HasExitCode: true, Reason: reason}
}

func TestTask(t *testing.T) {
	t.Parallel()
	onlyApp := func(n string) bool { return n == "app" }
	tests := []struct {
		name    string
		task    *v1.TaskStateChanged
		ess     verdict.Essential
		timeout time.Duration
		want    v1.Outcome
		reason  string
	}{
		{"success", task("EssentialContainerExited", "Essential container in task exited", time.Minute, exit("app", 0, "")), nil, 0, v1.Outcome_OUTCOME_SUCCEEDED, "every essential container exited 0"},
		{"exit 3", task("EssentialContainerExited", "Essential container in task exited", time.Minute, exit("app", 3, "")), nil, 0, v1.Outcome_OUTCOME_FAILED, "container app exited 3"},
		{"oom 137", task("EssentialContainerExited", "", time.Minute, exit("app", 137, "OutOfMemoryError: Container killed due to memory usage")), nil, 0, v1.Outcome_OUTCOME_FAILED, "container app exited 137 (out of memory): OutOfMemoryError"},
		{"oom by reason", task("EssentialContainerExited", "", time.Minute, exit("app", 1, "OutOfMemory")), nil, 0, v1.Outcome_OUTCOME_FAILED, "(out of memory)"},
		{"sidecar failing is not essential", task("EssentialContainerExited", "", time.Minute, exit("app", 0, ""), exit("log_router", 1, "")), onlyApp, 0, v1.Outcome_OUTCOME_SUCCEEDED, ""},
		{"cannot pull", task("TaskFailedToStart", "CannotPullContainerError: pull image manifest has been retried 5 time(s)", 0,
			&v1.ContainerState{Name: "app", Reason: "CannotPullContainerError: not found"}), nil, 0, v1.Outcome_OUTCOME_FAILED_TO_START, "failed to start: CannotPullContainerError: not found"},
		{"resource init", task("TaskFailedToStart", "ResourceInitializationError: unable to pull secrets", 0, &v1.ContainerState{Name: "app"}), nil, 0, v1.Outcome_OUTCOME_FAILED_TO_START, "ResourceInitializationError"},
		{"spot", task("SpotInterruption", "Your Spot Task was interrupted.", time.Minute, exit("app", 143, "")), nil, 0, v1.Outcome_OUTCOME_STOPPED, "Spot interruption"},
		{"termination notice", task("TerminationNotice", "", time.Minute, exit("app", 143, "")), nil, 0, v1.Outcome_OUTCOME_STOPPED, "termination notice"},
		{"user", task("UserInitiated", "Task stopped by user", time.Minute, exit("app", 137, "")), nil, 0, v1.Outcome_OUTCOME_STOPPED, "stopped by a user: Task stopped by user"},
		{"scheduler replace", task("UserInitiated", "taskyard: replaced by run x", time.Minute, exit("app", 143, "")), nil, 0, v1.Outcome_OUTCOME_STOPPED, "stopped by the scheduler: taskyard: replaced"},
		{"timeout by duration", task("EssentialContainerExited", "", 2*time.Hour, exit("app", 0, "")), nil, time.Hour, v1.Outcome_OUTCOME_TIMED_OUT, "timeout of 1h0m0s"},
		{"timeout by our stop", task("UserInitiated", verdict.StopReasonTimeout+" of 1h0m0s", 59*time.Minute, exit("app", 143, "")), nil, time.Hour, v1.Outcome_OUTCOME_TIMED_OUT, "timeout"},
		{"timeout by the exec runner", task("UserInitiated", "taskyard: timeout 1s exceeded", time.Second, exit("app", 137, "")), nil, time.Second, v1.Outcome_OUTCOME_TIMED_OUT, "timeout"},
		{"no exit code", task("EssentialContainerExited", "Essential container in task exited", time.Minute, &v1.ContainerState{Name: "app"}), nil, 0, v1.Outcome_OUTCOME_FAILED, "container app stopped without an exit code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := verdict.Task(tt.task, tt.ess, tt.timeout)
			require.Equal(t, tt.want, r.Outcome, r.Reason)
			require.Contains(t, r.Reason, tt.reason)
		})
	}
}

func TestRunWorstTaskDecides(t *testing.T) {
	t.Parallel()
	a := task("EssentialContainerExited", "", time.Minute, exit("app", 0, ""))
	b := task("EssentialContainerExited", "", 3*time.Minute, exit("app", 2, ""))
	b.StartedAt = timestamppb.New(t0.Add(-time.Minute))
	r := verdict.Run([]*v1.TaskStateChanged{a, b}, nil, 0)
	require.Equal(t, v1.Outcome_OUTCOME_FAILED, r.Outcome)
	require.Len(t, r.Containers, 2)
	require.Equal(t, t0.Add(-time.Minute), r.StartedAt)
	require.Equal(t, t0.Add(3*time.Minute), r.FinishedAt)
	require.EqualValues(t, 2, r.Failed.GetExitCode())
}
