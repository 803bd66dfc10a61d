// Package verdict decides the outcome of a run from the final states of its
// tasks: SUCCEEDED, FAILED (naming container, exit code and reason, with an
// out-of-memory hint), FAILED_TO_START, TIMED_OUT or STOPPED (saying who or
// what stopped it).
package verdict

import (
	"fmt"
	"strings"
	"time"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// StopReasonTimeout is the stoppedReason exitwatch gives StopTask when it
// stops a run that went past its timeout.
const StopReasonTimeout = "taskyard: run exceeded its timeout"

// Result is the verdict on a run.
type Result struct {
	Outcome    v1.Outcome
	Reason     string
	Containers []*v1.ContainerExit
	// Failed is the container the verdict names (FAILED), nil otherwise.
	Failed        *v1.ContainerExit
	StopCode      string
	StoppedReason string
	StartedAt     time.Time
	FinishedAt    time.Time
	OOM           bool
}

// Essential reports whether a container's exit decides the run. Names
// unknown to the caller's schedule (an injected log router) are not.
type Essential func(name string) bool

// startFailures are reasons ECS gives when a task could not start.
var startFailures = []string{"CannotPullContainerError", "ResourceInitializationError", "CannotStartContainerError", "CannotCreateContainerError", "CannotInspectContainerError", "TaskFailedToStart"}

func isStartFailure(s string) bool {
	for _, f := range startFailures {
		if strings.Contains(s, f) {
			return true
		}
	}
	return false
}

// IsOOM reports whether an exit is out of memory: 137 or a reason naming
// OutOfMemory.
func IsOOM(code int32, has bool, reason string) bool {
	return (has && code == 137) || strings.Contains(strings.ToLower(reason), "outofmemory")
}

// Task judges one STOPPED task. timeout is the run's timeout (0 = none).
func Task(t *v1.TaskStateChanged, essential Essential, timeout time.Duration) Result {
	r := Result{StopCode: t.GetStopCode(), StoppedReason: t.GetStoppedReason()}
	if t.GetStartedAt() != nil {
		r.StartedAt = t.GetStartedAt().AsTime()
	}
	if t.GetStoppedAt() != nil {
		r.FinishedAt = t.GetStoppedAt().AsTime()
	} else if t.GetEventTime() != nil {
		r.FinishedAt = t.GetEventTime().AsTime()
	}
	anyEssential := false
	for _, c := range t.GetContainers() {
		if essential == nil || essential(c.GetName()) {
			anyEssential = true
		}
	}
	var firstBad, noExit *v1.ContainerExit
	for _, c := range t.GetContainers() {
		ess := essential == nil || essential(c.GetName()) || !anyEssential
		ce := &v1.ContainerExit{Name: c.GetName(), ExitCode: c.GetExitCode(), HasExitCode: c.GetHasExitCode(), Reason: c.GetReason(), Essential: ess}
		r.Containers = append(r.Containers, ce)
		if !ess {
			continue
		}
		switch {
		case !ce.HasExitCode:
			if noExit == nil {
				noExit = ce
			}
		case ce.ExitCode != 0 && firstBad == nil:
			firstBad = ce
		}
	}
	code := t.GetStopCode()
	switch {
	case strings.Contains(t.GetStoppedReason(), StopReasonTimeout) ||
		(strings.HasPrefix(t.GetStoppedReason(), "taskyard:") && strings.Contains(t.GetStoppedReason(), "timeout")) ||
		(timeout > 0 && !r.StartedAt.IsZero() && r.FinishedAt.Sub(r.StartedAt) > timeout):
		r.Outcome = v1.Outcome_OUTCOME_TIMED_OUT
		r.Reason = fmt.Sprintf("ran past its timeout of %s", timeout)
	case code == "SpotInterruption":
		r.Outcome, r.Reason = v1.Outcome_OUTCOME_STOPPED, "stopped by a Spot interruption"
	case code == "TerminationNotice":
		r.Outcome, r.Reason = v1.Outcome_OUTCOME_STOPPED, "stopped by a termination notice (container instance draining or terminated)"
	case strings.HasPrefix(t.GetStoppedReason(), "taskyard:"):
		r.Outcome, r.Reason = v1.Outcome_OUTCOME_STOPPED, "stopped by the scheduler: "+t.GetStoppedReason()
	case code == "UserInitiated":
		r.Outcome, r.Reason = v1.Outcome_OUTCOME_STOPPED, "stopped by a user: "+t.GetStoppedReason()
	case code == "ServiceSchedulerInitiated":
		r.Outcome, r.Reason = v1.Outcome_OUTCOME_STOPPED, "stopped by the ECS service scheduler: "+t.GetStoppedReason()
	case firstBad != nil:
		r.Outcome, r.Failed = v1.Outcome_OUTCOME_FAILED, firstBad
		r.OOM = IsOOM(firstBad.ExitCode, true, firstBad.Reason)
		r.Reason = fmt.Sprintf("container %s exited %d", firstBad.Name, firstBad.ExitCode)
		if r.OOM {
			r.Reason += " (out of memory)"
		}
		if firstBad.Reason != "" {
			r.Reason += ": " + firstBad.Reason
		}
	case code == "TaskFailedToStart" || isStartFailure(t.GetStoppedReason()) || (noExit != nil && isStartFailure(noExit.Reason)):
		r.Outcome = v1.Outcome_OUTCOME_FAILED_TO_START
		reason := t.GetStoppedReason()
		if noExit != nil && noExit.Reason != "" {
			reason = noExit.Reason
		}
		r.Reason = "failed to start: " + reason
	case noExit != nil:
		r.Outcome, r.Failed = v1.Outcome_OUTCOME_FAILED, noExit
		r.Reason = fmt.Sprintf("container %s stopped without an exit code", noExit.Name)
		if noExit.Reason != "" {
			r.Reason += ": " + noExit.Reason
		} else if t.GetStoppedReason() != "" {
			r.Reason += ": " + t.GetStoppedReason()
		}
	default:
		r.Outcome = v1.Outcome_OUTCOME_SUCCEEDED
		r.Reason = "every essential container exited 0"
	}
	return r
}

// rank orders outcomes by how bad they are, for runs of several tasks.
func rank(o v1.Outcome) int {
	switch o {
	case v1.Outcome_OUTCOME_FAILED:
		return 5
	case v1.Outcome_OUTCOME_TIMED_OUT:
		return 4
	case v1.Outcome_OUTCOME_FAILED_TO_START:
		return 3
	case v1.Outcome_OUTCOME_STOPPED:
		return 2
	case v1.Outcome_OUTCOME_SUCCEEDED:
		return 1
	}
	return 0
}

// Run judges a run of several STOPPED tasks: the worst task decides, every
// container is listed, the run started with its first task and finished
// with its last.
func Run(tasks []*v1.TaskStateChanged, essential Essential, timeout time.Duration) Result {
	var out Result
	for i, t := range tasks {
		r := Task(t, essential, timeout)
		if i == 0 || rank(r.Outcome) > rank(out.Outcome) {
			keep := out
			out = r
			out.Containers = keep.Containers
			out.StartedAt, out.FinishedAt = keep.StartedAt, keep.FinishedAt
		}
		out.Containers = append(out.Containers, r.Containers...)
		if !r.StartedAt.IsZero() && (out.StartedAt.IsZero() || r.StartedAt.Before(out.StartedAt)) {
			out.StartedAt = r.StartedAt
		}
		if r.FinishedAt.After(out.FinishedAt) {
			out.FinishedAt = r.FinishedAt
		}
	}
	return out
}
