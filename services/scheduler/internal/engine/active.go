package engine

import (
	"context"
	"slices"
	"time"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
)

// tombstoneTTL is how long a STOPPED task id is remembered, so that a
// dispatch result arriving after the task's STOPPED event does not bring
// the task back to life.
const tombstoneTTL = 15 * time.Minute

// TaskEvent updates the view of running tasks from a TaskStateChanged
// event (published by the exec runner, or by exitwatch for ECS).
func (e *Engine) TaskEvent(ev *v1.TaskStateChanged) {
	if ev.GetSchedule() == "" || ev.GetTaskArn() == "" {
		return
	}
	e.amu.Lock()
	defer e.amu.Unlock()
	id := ev.GetTaskArn()
	if ev.GetLastStatus() == "STOPPED" {
		e.stopped[id] = time.Now()
		if m := e.active[ev.GetSchedule()]; m != nil {
			delete(m, id)
			if len(m) == 0 {
				delete(e.active, ev.GetSchedule())
			}
		}
		e.pruneTombstones()
		return
	}
	if _, dead := e.stopped[id]; dead {
		return
	}
	m := e.active[ev.GetSchedule()]
	if m == nil {
		m = map[string]string{}
		e.active[ev.GetSchedule()] = m
	}
	m[id] = ev.GetRunId()
}

func (e *Engine) addActive(schedule, runID string, ids []string) {
	if len(ids) == 0 {
		return
	}
	e.amu.Lock()
	defer e.amu.Unlock()
	for _, id := range ids {
		if _, dead := e.stopped[id]; dead {
			continue
		}
		m := e.active[schedule]
		if m == nil {
			m = map[string]string{}
			e.active[schedule] = m
		}
		m[id] = runID
	}
}

// activeTasks returns the schedule's task ids not known to be STOPPED and
// their run ids.
func (e *Engine) activeTasks(schedule string) (ids, runs []string) {
	e.amu.Lock()
	defer e.amu.Unlock()
	for id, run := range e.active[schedule] {
		ids = append(ids, id)
		if !slices.Contains(runs, run) {
			runs = append(runs, run)
		}
	}
	slices.Sort(ids)
	slices.Sort(runs)
	return ids, runs
}

// ActiveTasks is activeTasks for the control API and tests.
func (e *Engine) ActiveTasks(schedule string) []string {
	ids, _ := e.activeTasks(schedule)
	return ids
}

func (e *Engine) pruneTombstones() {
	if len(e.stopped) < 1024 {
		return
	}
	cut := time.Now().Add(-tombstoneTTL)
	for id, at := range e.stopped {
		if at.Before(cut) {
			delete(e.stopped, id)
		}
	}
}

// seedActive asks the runner for the running tasks of every schedule whose
// concurrency policy depends on them (ECS: ListTasks by startedBy).
func (e *Engine) seedActive(ctx context.Context, specs []*v1.ScheduleSpec) {
	for _, spec := range specs {
		c := spec.GetTiming().GetConcurrency()
		if c != string(schedule.ConcurrencyForbid) && c != string(schedule.ConcurrencyReplace) {
			continue
		}
		tasks, err := e.cfg.Runner.Active(ctx, spec, e.cfg.Profiles[spec.GetCluster()])
		if err != nil {
			e.log.Warn("takeover: list running tasks", "schedule", spec.GetName(), "err", err)
			continue
		}
		e.amu.Lock()
		m := map[string]string{}
		for _, t := range tasks {
			if _, dead := e.stopped[t.ID]; !dead {
				m[t.ID] = t.RunID
			}
		}
		if len(m) == 0 {
			delete(e.active, spec.GetName())
		} else {
			e.active[spec.GetName()] = m
		}
		e.amu.Unlock()
	}
}
