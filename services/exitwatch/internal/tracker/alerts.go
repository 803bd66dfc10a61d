package tracker

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecsevent"
	"github.com/taskyard/taskyard/services/exitwatch/internal/verdict"
)

// outcomeName is the lower-case outcome for fields and text.
func outcomeName(o v1.Outcome) string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_"))
}

// RunDedupeKey is the incident key of a schedule's failing runs: every
// failure of a schedule is one incident until it recovers.
func RunDedupeKey(schedule string) string { return "run:" + schedule }

// runAlert builds the alert for a decision on a run record, or nil when
// the decision has no alert.
func (t *Tracker) runAlert(r *v1.RunRecord, kind string) *v1.Alert {
	it := t.item(r)
	sev := v1.Severity_SEVERITY_CRITICAL
	a := &v1.Alert{Kind: kind, Schedule: r.GetSchedule(), Cluster: r.GetCluster(), RunId: r.GetRunId(), Fields: map[string]string{}, Time: timestamppb.New(t.d.Now())}
	if it != nil {
		a.RunbookUrl, a.Channel = it.Runbook, it.Channel
		sev = it.Severity
	}
	name := r.GetSchedule()
	if name == "" {
		name = "task " + shortArn(firstTask(r))
	}
	if r.GetScheduledAt() != nil {
		a.Fields["scheduled_at"] = r.GetScheduledAt().AsTime().UTC().Format(time.RFC3339)
	}
	if n := len(r.GetTasks()); n > 0 {
		a.Fields["task_arn"] = firstTask(r)
		if n > 1 {
			a.Fields["tasks"] = strconv.Itoa(n)
		}
	}
	if d := duration(r); d > 0 {
		a.Fields["duration"] = roundDuration(d).String()
	}
	verdictFields := func() {
		a.Fields["outcome"] = outcomeName(r.GetOutcome())
		for _, c := range r.GetContainers() {
			if !c.GetEssential() {
				continue
			}
			if c.GetHasExitCode() && c.GetExitCode() != 0 || (!c.GetHasExitCode() && c.GetReason() != "") {
				a.Fields["container"] = c.GetName()
				if c.GetHasExitCode() {
					a.Fields["exit_code"] = strconv.Itoa(int(c.GetExitCode()))
				}
				if c.GetReason() != "" {
					a.Fields["container_reason"] = c.GetReason()
				}
				if verdict.IsOOM(c.GetExitCode(), c.GetHasExitCode(), c.GetReason()) {
					a.Fields["oom"] = "true"
				}
				break
			}
		}
		for _, x := range r.GetTasks() {
			if x.GetStopCode() != "" {
				a.Fields["stop_code"] = x.GetStopCode()
			}
			if x.GetStoppedReason() != "" {
				a.Fields["stopped_reason"] = x.GetStoppedReason()
				break
			}
		}
	}
	switch kind {
	case KindRunFailed:
		verdictFields()
		a.DedupeKey = RunDedupeKey(r.GetSchedule())
		if r.GetSchedule() == "" {
			a.DedupeKey = "task:" + r.GetCluster() + ":" + family(r)
		}
		switch r.GetOutcome() {
		case v1.Outcome_OUTCOME_STOPPED:
			sev = v1.Severity_SEVERITY_WARNING
			a.Title = fmt.Sprintf("%s was stopped", name)
		case v1.Outcome_OUTCOME_TIMED_OUT:
			a.Title = fmt.Sprintf("%s timed out", name)
		case v1.Outcome_OUTCOME_LOST:
			a.Title = fmt.Sprintf("%s was lost", name)
		default:
			if ec, ok := a.Fields["exit_code"]; ok {
				a.Title = fmt.Sprintf("%s failed: %s exited %s", name, a.Fields["container"], ec)
				if a.Fields["oom"] == "true" {
					a.Title += " (out of memory)"
				}
			} else {
				a.Title = fmt.Sprintf("%s failed", name)
			}
		}
		a.Text = r.GetReason()
	case KindRunFailedToStart:
		verdictFields()
		a.DedupeKey = RunDedupeKey(r.GetSchedule())
		a.Title = fmt.Sprintf("%s failed to start", name)
		a.Text = r.GetReason()
	case KindRecovered:
		a.DedupeKey = RunDedupeKey(r.GetSchedule())
		a.Resolved = true
		sev = v1.Severity_SEVERITY_INFO
		a.Fields["outcome"] = outcomeName(r.GetOutcome())
		a.Title = fmt.Sprintf("%s recovered", name)
		a.Text = "The run succeeded again."
	case KindOverrun:
		sev = v1.Severity_SEVERITY_WARNING
		a.DedupeKey = "overrun:" + r.GetRunId()
		to := timeoutOf(r, it)
		a.Fields["timeout"] = to.String()
		if r.GetStartedAt() != nil {
			a.Fields["running_for"] = t.Now().Sub(r.GetStartedAt().AsTime()).Round(time.Second).String()
		}
		a.Title = fmt.Sprintf("%s is running past its timeout of %s", name, to)
		a.Text = "The run is still going after its timeout."
		if t.cfg.StopOverrun && t.d.Stopper != nil {
			a.Text += " exitwatch asked ECS to stop it."
		}
	case KindStuckPending:
		sev = v1.Severity_SEVERITY_WARNING
		a.DedupeKey = "stuck:" + r.GetRunId()
		for _, x := range r.GetTasks() {
			if x.GetLastStatus() != "RUNNING" && x.GetLastStatus() != "STOPPED" && x.GetLastStatus() != "" {
				a.Fields["task_arn"] = x.GetTaskArn()
				a.Fields["last_status"] = x.GetLastStatus()
				if x.GetCreatedAt() != nil {
					a.Fields["pending_for"] = t.Now().Sub(x.GetCreatedAt().AsTime()).Round(time.Second).String()
				}
				break
			}
		}
		a.Title = fmt.Sprintf("%s is stuck in %s", name, a.Fields["last_status"])
		a.Text = fmt.Sprintf("A task of the run has not reached RUNNING %s after it was created.", t.cfg.StuckPendingAfter)
	case KindMissed:
		a.DedupeKey = "missed:" + r.GetSchedule()
		a.Title = fmt.Sprintf("%s did not run", name)
		a.Text = r.GetReason()
		if r.GetScheduledAt() != nil {
			a.Fields["expected_at"] = r.GetScheduledAt().AsTime().UTC().Format(time.RFC3339)
		}
	case KindSkipped:
		sev = v1.Severity_SEVERITY_WARNING
		a.DedupeKey = "skipped:" + r.GetSchedule()
		a.Title = fmt.Sprintf("%s was skipped", name)
		a.Text = r.GetReason()
	case KindSilentRun:
		sev = v1.Severity_SEVERITY_WARNING
		a.DedupeKey = "silent:" + r.GetSchedule()
		a.Fields["outcome"] = outcomeName(r.GetOutcome())
		a.Fields["log_records"] = "0"
		a.Title = fmt.Sprintf("%s ran but logged nothing", name)
		a.Text = "The schedule expects logs (expectations.logs), and no log record of this run reached the logrouter."
	default:
		return nil
	}
	a.Severity = sev
	return a
}

func firstTask(r *v1.RunRecord) string {
	if len(r.GetTasks()) == 0 {
		return ""
	}
	return r.GetTasks()[0].GetTaskArn()
}

func shortArn(arn string) string {
	if i := strings.LastIndex(arn, "/"); i >= 0 {
		return arn[i+1:]
	}
	return arn
}

// family is the task definition family of an unmanaged run's task.
func family(r *v1.RunRecord) string {
	for _, x := range r.GetTasks() {
		td := shortArn(x.GetTaskDefinitionArn())
		if i := strings.LastIndex(td, ":"); i > 0 {
			td = td[:i]
		}
		if td != "" {
			return td
		}
	}
	return "unknown"
}

// clusterOf returns the profile name for a cluster token or ECS name.
func (t *Tracker) clusterOf(name string) string {
	if _, ok := t.cfg.Clusters[name]; ok {
		return name
	}
	n := ecsevent.ClusterName(name)
	for _, c := range t.cfg.Clusters {
		if c.ECSCluster == n {
			return c.Name
		}
	}
	return n
}

// roundDuration keeps durations readable: whole seconds, milliseconds
// below a second.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
