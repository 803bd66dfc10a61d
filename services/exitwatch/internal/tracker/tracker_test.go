package tracker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/awstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecspoll"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/tracker"
)

func TestFixtureVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, schedule string
		scheduledAt    time.Time
		outcome        v1.Outcome
		kind           string
		reason         string
		fields         map[string]string
	}{
		{"exit3-out-of-order.json", "nightly-report", t0, v1.Outcome_OUTCOME_FAILED, tracker.KindRunFailed, "container app exited 3",
			map[string]string{"exit_code": "3", "container": "app", "stopped_reason": "Essential container in task exited", "duration": "4m30s", "outcome": "failed"}},
		{"oom-137.json", "hourly-etl", t0.Add(time.Hour), v1.Outcome_OUTCOME_FAILED, tracker.KindRunFailed, "container etl exited 137 (out of memory)",
			map[string]string{"exit_code": "137", "container": "etl", "oom": "true"}},
		{"cannot-pull.json", "sync-users", t0.Add(2 * time.Hour), v1.Outcome_OUTCOME_FAILED_TO_START, tracker.KindRunFailedToStart, "failed to start: CannotPullContainerError",
			map[string]string{"stop_code": "TaskFailedToStart"}},
		{"spot-interruption.json", "crawler", t0.Add(3 * time.Hour), v1.Outcome_OUTCOME_STOPPED, tracker.KindRunFailed, "Spot interruption",
			map[string]string{"stop_code": "SpotInterruption", "outcome": "stopped"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tracker.Config{})
			sp := spec(tt.schedule, "cron(0 3 * * ? *)")
			sp.Containers = nil
			for _, n := range []string{"app", "etl", "sync", "crawler"} {
				sp.Containers = append(sp.Containers, &v1.Container{Name: n, Image: "busybox", Memory: 128, Essential: true})
			}
			h.applySchedule(sp)
			evs := fixtureEvents(t, tt.file)
			runID := evs[0].GetRunId()
			// Task events may arrive before the dispatch event.
			for _, ev := range evs {
				h.task(ev)
			}
			h.dispatch(dispatched(tt.schedule, runID, tt.scheduledAt, evs[0].GetTaskArn()))
			h.eventually(func() bool { return len(h.bus.Finished()) == 1 && len(h.bus.AlertsOf(tt.kind)) == 1 }, "verdict and alert")
			f := h.bus.Finished()[0]
			require.Equal(t, tt.outcome, f.GetOutcome(), f.GetReason())
			require.Contains(t, f.GetReason(), tt.reason)
			require.Equal(t, runID, f.GetRunId())
			a := h.bus.AlertsOf(tt.kind)[0]
			require.Equal(t, "https://runbooks.example.com/"+tt.schedule, a.GetRunbookUrl())
			require.Equal(t, "#batch", a.GetChannel())
			require.Equal(t, tracker.RunDedupeKey(tt.schedule), a.GetDedupeKey())
			for k, v := range tt.fields {
				require.Equal(t, v, a.GetFields()[k], k)
			}
			rec := h.record(runID)
			require.Equal(t, tt.outcome, rec.GetOutcome())
			h.eventually(func() bool { return slices.Contains(h.record(runID).GetAlerted(), "finished!") }, "publication marked")
			// Redelivered duplicates change nothing.
			for _, ev := range evs {
				h.task(ev)
			}
			h.drained()
			h.tr.Tick(context.Background())
			require.Len(t, h.bus.Finished(), 1)
		})
	}
}

func TestOneVerdictWithTwoReplicas(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	clk := &clock{t: t0}
	a := addReplica(t, env, clk, tracker.Config{})
	b := addReplica(t, env, clk, tracker.Config{})
	a.applySchedule(spec("nightly", "cron(0 3 * * ? *)"))
	require.Eventually(t, func() bool { _, ok := b.list.Get("nightly"); return ok }, 5*time.Second, 10*time.Millisecond)
	const runs = 40
	for i := range runs {
		runID := v1.RunID("nightly", t0.Add(time.Duration(i)*time.Minute), v1.Trigger_TRIGGER_MANUAL)
		arn := "arn:aws:ecs:eu-west-1:123456789012:task/batch/" + runID
		a.dispatch(dispatched("nightly", runID, t0, arn))
		for v, st := range []string{"PENDING", "RUNNING", "STOPPED"} {
			ev := &v1.TaskStateChanged{TaskArn: arn, RunId: runID, Schedule: "nightly", Cluster: "batch", LastStatus: st, Version: int64(v + 1),
				StartedAt: timestamppb.New(t0), EventTime: timestamppb.New(t0.Add(time.Minute))}
			if st == "STOPPED" {
				ev.StoppedAt = timestamppb.New(t0.Add(time.Minute))
				ev.Containers = []*v1.ContainerState{{Name: "app", ExitCode: int32(i % 2), HasExitCode: true}}
			}
			a.task(ev)
		}
	}
	a.eventually(func() bool { return len(a.bus.Finished()) == runs }, "every run finished")
	a.eventually(func() bool { return len(a.bus.AlertsOf(tracker.KindRunFailed)) == runs/2 }, "every failed run alerted")
	// Both replicas' ticks re-check everything: still one verdict per run,
	// and each record says so.
	a.tr.Tick(context.Background())
	b.tr.Tick(context.Background())
	seen := map[string]int{}
	for _, f := range a.bus.Finished() {
		seen[f.GetRunId()]++
	}
	require.Len(t, seen, runs)
	for id, n := range seen {
		require.Equal(t, 1, n, id)
		rec := a.record(id)
		count := 0
		for _, m := range rec.GetAlerted() {
			if m == "finished" {
				count++
			}
		}
		require.Equal(t, 1, count, id)
	}
}

func TestDispatchFailedAndSkipped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, tracker.Config{})
	h.applySchedule(spec("nightly", "cron(0 3 * * ? *)"))
	id := v1.RunID("nightly", t0, v1.Trigger_TRIGGER_SCHEDULE)
	h.publish(v1.Subjects{}.RunDispatchFailed("nightly"), &v1.RunDispatchFailed{RunId: id, Schedule: "nightly", Cluster: "batch", ScheduledAt: timestamppb.New(t0),
		FailedAt: timestamppb.New(t0.Add(time.Second)), Failures: []*v1.DispatchFailure{{Reason: "RESOURCE:MEMORY", Arn: "arn:aws:ecs:eu-west-1:1:container-instance/x"}}}, id)
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindRunFailedToStart)) == 1 }, "failed to start alert")
	require.Equal(t, v1.Outcome_OUTCOME_FAILED_TO_START, h.bus.Finished()[0].GetOutcome())
	require.Contains(t, h.bus.Finished()[0].GetReason(), "RESOURCE:MEMORY")

	id2 := v1.RunID("nightly", t0.Add(24*time.Hour), v1.Trigger_TRIGGER_SCHEDULE)
	h.publish(v1.Subjects{}.RunSkipped("nightly"), &v1.RunSkipped{RunId: id2, Schedule: "nightly", Cluster: "batch", ScheduledAt: timestamppb.New(t0.Add(24 * time.Hour)),
		DecidedAt: timestamppb.New(t0.Add(24 * time.Hour)), Reason: v1.SkipReason_SKIP_REASON_CONCURRENCY_FORBID, Detail: "previous run still RUNNING"}, id2)
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindSkipped)) == 1 }, "skipped alert")
	require.Contains(t, h.bus.AlertsOf(tracker.KindSkipped)[0].GetText(), "concurrency_forbid: previous run still RUNNING")

	id3 := v1.RunID("nightly", t0.Add(48*time.Hour), v1.Trigger_TRIGGER_SCHEDULE)
	h.publish(v1.Subjects{}.RunSkipped("nightly"), &v1.RunSkipped{RunId: id3, Schedule: "nightly", ScheduledAt: timestamppb.New(t0.Add(48 * time.Hour)),
		Reason: v1.SkipReason_SKIP_REASON_DISABLED}, id3)
	h.eventually(func() bool { _, ok := h.store.Get(id3); return ok }, "disabled skip recorded")
	require.Len(t, h.bus.AlertsOf(tracker.KindSkipped), 1, "a disabled schedule's skips are silent")
}

func TestMissedFireJudgedOnBusTime(t *testing.T) {
	t.Parallel()
	h := newHarness(t, tracker.Config{MissedGrace: 30 * time.Second})
	h.clock.Set(t0.Add(-30 * time.Second))
	h.applySchedule(spec("every-minute", "rate(1 minute)")) // fires at every full minute (epoch anchor)
	// The 03:00 fire was dispatched, 03:01 was not.
	h.dispatch(dispatched("every-minute", v1.RunID("every-minute", t0, v1.Trigger_TRIGGER_SCHEDULE), t0))
	h.eventually(func() bool { return h.store.Agg("every-minute").LastDecided.Equal(t0) }, "dispatch recorded")
	h.clock.Set(t0.Add(time.Minute + time.Minute + 29*time.Second)) // 03:01 + deadline 1m + 29s
	h.tr.Tick(context.Background())
	require.Empty(t, h.bus.AlertsOf(tracker.KindMissed), "still within deadline + grace")
	h.clock.Set(t0.Add(time.Minute + time.Minute + 31*time.Second))
	h.tr.Tick(context.Background())
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindMissed)) == 1 }, "missed fire")
	m := h.bus.Missed()
	require.Len(t, m, 1)
	require.Equal(t, t0.Add(time.Minute), m[0].GetExpectedAt().AsTime())
	require.Equal(t, v1.RunID("every-minute", t0.Add(time.Minute), v1.Trigger_TRIGGER_SCHEDULE), m[0].GetRunId())
	a := h.bus.AlertsOf(tracker.KindMissed)[0]
	require.Equal(t, "https://runbooks.example.com/every-minute", a.GetRunbookUrl())
	h.tr.Tick(context.Background())
	require.Len(t, h.bus.AlertsOf(tracker.KindMissed), 1, "raised once")

	// Disabled: silent.
	sp := spec("every-minute", "rate(1 minute)")
	sp.Timing.Enabled = false
	h.applySchedule(sp)
	h.clock.Add(10 * time.Minute)
	h.tr.Tick(context.Background())
	require.Len(t, h.bus.AlertsOf(tracker.KindMissed), 1)

	// Re-enabled: the fires while it was disabled are not missed; the
	// first one after is, once overdue.
	sp.Timing.Enabled = true
	h.applySchedule(sp)
	h.tr.Tick(context.Background())
	require.Len(t, h.bus.AlertsOf(tracker.KindMissed), 1, "nothing for the disabled time")
	h.clock.Add(time.Minute + time.Minute + 31*time.Second)
	h.tr.Tick(context.Background())
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindMissed)) == 2 }, "missed after re-enabling")
	reenabled := t0.Add(time.Minute + time.Minute + 31*time.Second + 10*time.Minute)
	require.True(t, h.bus.Missed()[1].GetExpectedAt().AsTime().After(reenabled), "the missed fire is after re-enabling")

	// The late dispatch of the missed fire reopens the run; a success then
	// recovers the schedule.
	late := v1.RunID("every-minute", t0.Add(time.Minute), v1.Trigger_TRIGGER_SCHEDULE)
	h.dispatch(dispatched("every-minute", late, t0.Add(time.Minute), "task-late"))
	h.task(&v1.TaskStateChanged{TaskArn: "task-late", RunId: late, Schedule: "every-minute", Cluster: "batch", LastStatus: "STOPPED", Version: 3,
		StartedAt: timestamppb.New(t0.Add(5 * time.Minute)), StoppedAt: timestamppb.New(t0.Add(6 * time.Minute)),
		Containers: []*v1.ContainerState{{Name: "app", HasExitCode: true}}})
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindRecovered)) == 1 }, "recovered after the missed fire")
	require.True(t, h.bus.AlertsOf(tracker.KindRecovered)[0].GetResolved())
}

func TestLostOverrunStuckSilent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, tracker.Config{LostAfter: 15 * time.Minute, StuckPendingAfter: 10 * time.Minute, SilentGrace: 2 * time.Minute})
	sp := spec("etl", "cron(0 3 * * ? *)")
	sp.Timing.Timeout = durationpb.New(30 * time.Minute)
	sp.Expectations = &v1.Expectations{Logs: true}
	h.applySchedule(sp)

	lost := v1.RunID("etl", t0, v1.Trigger_TRIGGER_MANUAL)
	h.dispatch(dispatched("etl", lost, t0, "task-lost"))
	over := v1.RunID("etl", t0.Add(time.Second), v1.Trigger_TRIGGER_MANUAL)
	h.dispatch(dispatched("etl", over, t0, "task-over"))
	h.task(&v1.TaskStateChanged{TaskArn: "task-over", RunId: over, Schedule: "etl", Cluster: "batch", LastStatus: "RUNNING", Version: 3, StartedAt: timestamppb.New(t0)})
	stuck := v1.RunID("etl", t0.Add(2*time.Second), v1.Trigger_TRIGGER_MANUAL)
	h.dispatch(dispatched("etl", stuck, t0, "task-stuck"))
	h.task(&v1.TaskStateChanged{TaskArn: "task-stuck", RunId: stuck, Schedule: "etl", Cluster: "batch", LastStatus: "PENDING", Version: 2, CreatedAt: timestamppb.New(t0)})
	silent := v1.RunID("etl", t0.Add(3*time.Second), v1.Trigger_TRIGGER_MANUAL)
	h.dispatch(dispatched("etl", silent, t0, "task-silent"))
	h.task(&v1.TaskStateChanged{TaskArn: "task-silent", RunId: silent, Schedule: "etl", Cluster: "batch", LastStatus: "STOPPED", Version: 4,
		StartedAt: timestamppb.New(t0), StoppedAt: timestamppb.New(t0.Add(time.Minute)), Containers: []*v1.ContainerState{{Name: "app", HasExitCode: true}}})
	logged := v1.RunID("etl", t0.Add(4*time.Second), v1.Trigger_TRIGGER_MANUAL)
	h.dispatch(dispatched("etl", logged, t0, "task-logged"))
	h.task(&v1.TaskStateChanged{TaskArn: "task-logged", RunId: logged, Schedule: "etl", Cluster: "batch", LastStatus: "STOPPED", Version: 4,
		StartedAt: timestamppb.New(t0), StoppedAt: timestamppb.New(t0.Add(time.Minute)), Containers: []*v1.ContainerState{{Name: "app", HasExitCode: true}}})
	h.publish(v1.Subjects{}.LogStats("batch", "etl"), &v1.LogStats{Cluster: "batch", Service: "etl", Records: 12, RecordsByRun: map[string]int64{logged: 12}}, "")
	h.eventually(func() bool {
		r, ok := h.store.Get(logged)
		return ok && r.GetLogRecords() == 12
	}, "log records counted")
	h.eventually(func() bool { return len(h.bus.Finished()) == 2 }, "two runs finished")

	h.clock.Set(t0.Add(11 * time.Minute))
	h.tr.Tick(context.Background())
	h.eventually(func() bool {
		return len(h.bus.AlertsOf(tracker.KindStuckPending)) == 1 && len(h.bus.AlertsOf(tracker.KindSilentRun)) == 1
	}, "stuck + silent")
	require.Equal(t, stuck, h.bus.AlertsOf(tracker.KindStuckPending)[0].GetRunId())
	require.Equal(t, silent, h.bus.AlertsOf(tracker.KindSilentRun)[0].GetRunId())
	require.Empty(t, h.bus.AlertsOf(tracker.KindOverrun))

	h.clock.Set(t0.Add(31 * time.Minute))
	h.tr.Tick(context.Background())
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindOverrun)) == 1 }, "overrun")
	o := h.bus.AlertsOf(tracker.KindOverrun)[0]
	require.Equal(t, over, o.GetRunId())
	require.Equal(t, "30m0s", o.GetFields()["timeout"])
	lostF := func() *v1.RunFinished {
		for _, f := range h.bus.Finished() {
			if f.GetRunId() == lost {
				return f
			}
		}
		return nil
	}
	h.eventually(func() bool { return lostF() != nil }, "lost run finished")
	require.Equal(t, v1.Outcome_OUTCOME_LOST, lostF().GetOutcome())
	h.tr.Tick(context.Background())
	require.Len(t, h.bus.AlertsOf(tracker.KindOverrun), 1)
	require.Len(t, h.bus.AlertsOf(tracker.KindStuckPending), 1)
	require.Len(t, h.bus.AlertsOf(tracker.KindSilentRun), 1)
}

func TestNoSuccessOverlapCapacitySummary(t *testing.T) {
	t.Parallel()
	h := newHarness(t, tracker.Config{
		Clusters:     map[string]tracker.Cluster{"batch": {Name: "batch", ECSCluster: "batch", TaskLimit: 5}},
		SummaryEvery: 15 * time.Minute,
	})
	sp := spec("sync", "cron(0 3 * * ? *)")
	sp.Expectations = &v1.Expectations{SucceedWithin: durationpb.New(time.Hour)}
	h.applySchedule(sp)
	h.tr.Tick(context.Background()) // starts the summary window
	var ids []string
	for i := range 4 {
		id := v1.RunID("sync", t0.Add(time.Duration(i)*time.Second), v1.Trigger_TRIGGER_MANUAL)
		ids = append(ids, id)
		h.dispatch(dispatched("sync", id, t0, "task-"+id))
		h.task(&v1.TaskStateChanged{TaskArn: "task-" + id, RunId: id, Schedule: "sync", Cluster: "batch", LastStatus: "RUNNING", Version: 3, StartedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Minute))})
	}
	h.eventually(func() bool {
		r, ok := h.store.Get(ids[3])
		return ok && len(r.GetTasks()) == 1 && r.GetTasks()[0].GetLastStatus() == "RUNNING"
	}, "runs recorded")
	h.clock.Set(t0.Add(61 * time.Minute))
	h.tr.Tick(context.Background())
	h.eventually(func() bool {
		return len(h.bus.AlertsOf(tracker.KindNoSuccess)) == 1 && len(h.bus.AlertsOf(tracker.KindOverlap)) == 1 && len(h.bus.AlertsOf(tracker.KindClusterCapacity)) == 1 && len(h.bus.AlertsOf(tracker.KindSummary)) == 1
	}, "no_success, overlap, capacity warning, summary")
	ov := h.bus.AlertsOf(tracker.KindOverlap)[0]
	require.Equal(t, "4", ov.GetFields()["running_tasks"])
	require.Equal(t, "1", ov.GetFields()["allowed_tasks"])
	cap := h.bus.AlertsOf(tracker.KindClusterCapacity)[0]
	require.Equal(t, v1.Severity_SEVERITY_WARNING, cap.GetSeverity())
	require.Equal(t, "4", cap.GetFields()["running_tasks"])
	sum := h.bus.AlertsOf(tracker.KindSummary)[0]
	require.Contains(t, sum.GetText(), "batch: 4 running (limit 5)")
	require.Contains(t, sum.GetText(), "longest running: sync (run "+ids[0])

	// One more task reaches the limit: critical.
	id := v1.RunID("sync", t0.Add(time.Hour), v1.Trigger_TRIGGER_MANUAL)
	h.dispatch(dispatched("sync", id, t0.Add(time.Hour), "task-5"))
	h.task(&v1.TaskStateChanged{TaskArn: "task-5", RunId: id, Schedule: "sync", Cluster: "batch", LastStatus: "RUNNING", Version: 3, StartedAt: timestamppb.New(t0.Add(time.Hour))})
	h.eventually(func() bool {
		r, ok := h.store.Get(id)
		return ok && len(r.GetTasks()) == 1 && r.GetTasks()[0].GetLastStatus() == "RUNNING"
	}, "fifth")
	h.tr.Tick(context.Background())
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindClusterCapacity)) == 2 }, "capacity critical")
	require.Equal(t, v1.Severity_SEVERITY_CRITICAL, h.bus.AlertsOf(tracker.KindClusterCapacity)[1].GetSeverity())

	// All succeed: no_success resolves, overlap and capacity resolve.
	for i, x := range append(ids, id) {
		arn := "task-" + x
		if i == 4 {
			arn = "task-5"
		}
		h.task(&v1.TaskStateChanged{TaskArn: arn, RunId: x, Schedule: "sync", Cluster: "batch", LastStatus: "STOPPED", Version: 5,
			StartedAt: timestamppb.New(t0), StoppedAt: timestamppb.New(t0.Add(62 * time.Minute)), Containers: []*v1.ContainerState{{Name: "app", HasExitCode: true}}})
	}
	h.eventually(func() bool { return len(h.bus.Finished()) == 5 }, "all finished")
	h.tr.Tick(context.Background())
	h.eventually(func() bool {
		resolved := 0
		for _, a := range h.bus.Alerts() {
			if a.GetResolved() && (strings.HasPrefix(a.GetDedupeKey(), "no_success:") || strings.HasPrefix(a.GetDedupeKey(), "overlap:") || strings.HasPrefix(a.GetDedupeKey(), "capacity:")) {
				resolved++
			}
		}
		return resolved == 3
	}, "three incidents resolved")
}

func TestUnmanagedTasks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, tracker.Config{WatchUnmanaged: true})
	ev := fixtureEvents(t, "unmanaged-exit1.json")[0]
	h.task(ev)
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindRunFailed)) == 1 }, "unmanaged exit alert")
	a := h.bus.AlertsOf(tracker.KindRunFailed)[0]
	require.Equal(t, "1", a.GetFields()["exit_code"])
	require.Equal(t, "task:batch:taskyard-adhoc", a.GetDedupeKey())
	require.Contains(t, a.GetTitle(), "task 1234abcd5678ef901234abcd5678ef90 failed")

	for name, cfg := range map[string]tracker.Config{
		"not configured":       {},
		"cluster not profiled": {WatchUnmanaged: true, Clusters: map[string]tracker.Cluster{"other": {Name: "other", ECSCluster: "other"}}},
	} {
		off := newHarness(t, cfg)
		off.task(ev)
		off.drained()
		off.tr.Tick(context.Background())
		require.Zero(t, off.store.Len(), name)
	}
}

// A run dispatched while one exitwatch ran is judged by the next one after
// a restart: the state is in KV and the durable consumer resumes.
func TestSurvivesRestart(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	clk := &clock{t: t0}
	ctx, cancel := context.WithCancel(context.Background())
	first := addReplicaCtx(t, ctx, env, clk, tracker.Config{}, nil)
	first.applySchedule(spec("nightly", "cron(0 3 * * ? *)"))
	id := v1.RunID("nightly", t0, v1.Trigger_TRIGGER_SCHEDULE)
	first.dispatch(dispatched("nightly", id, t0, "task-1"))
	first.task(&v1.TaskStateChanged{TaskArn: "task-1", RunId: id, Schedule: "nightly", Cluster: "batch", LastStatus: "RUNNING", Version: 3, StartedAt: timestamppb.New(t0)})
	first.eventually(func() bool { r, ok := first.store.Get(id); return ok && len(realTasksOf(r)) == 1 }, "running recorded")
	cancel()
	first.wait()

	// While nobody runs, the task stops.
	first.task(&v1.TaskStateChanged{TaskArn: "task-1", RunId: id, Schedule: "nightly", Cluster: "batch", LastStatus: "STOPPED", Version: 5,
		StartedAt: timestamppb.New(t0), StoppedAt: timestamppb.New(t0.Add(time.Minute)), Containers: []*v1.ContainerState{{Name: "app", ExitCode: 2, HasExitCode: true}}})
	second := addReplica(t, env, clk, tracker.Config{})
	second.eventually(func() bool {
		return len(second.bus.Finished()) == 1 && len(second.bus.AlertsOf(tracker.KindRunFailed)) == 1
	}, "verdict and alert after restart")
	require.Equal(t, v1.Outcome_OUTCOME_FAILED, second.bus.Finished()[0].GetOutcome())
	require.Equal(t, "2", second.bus.AlertsOf(tracker.KindRunFailed)[0].GetFields()["exit_code"])
}

func realTasksOf(r *v1.RunRecord) []*v1.TaskStateChanged {
	var out []*v1.TaskStateChanged
	for _, x := range r.GetTasks() {
		if x.GetLastStatus() != "" {
			out = append(out, x)
		}
	}
	return out
}

// With StopOverrun the tasks of a run past its timeout are stopped through
// the real ECS client (StopTask), and the stop makes the verdict TIMED_OUT.
func TestStopOverrun(t *testing.T) {
	t.Parallel()
	ecsSrv := awstest.NewECS()
	defer ecsSrv.Close()
	arn := "arn:aws:ecs:eu-west-1:123456789012:task/batch/0123456789abcdef0123456789abcdef"
	ecsSrv.Put(awstest.ECSTask{Arn: arn, Cluster: "arn:aws:ecs:eu-west-1:123456789012:cluster/batch", LastStatus: "RUNNING", DesiredStatus: "RUNNING"})
	client := ecs.New(ecs.Options{Region: "eu-west-1", BaseEndpoint: aws.String(ecsSrv.URL), Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")})
	env := natstest.Start(t)
	h := addReplicaCtx(t, context.Background(), env, &clock{t: t0}, tracker.Config{StopOverrun: true}, ecspoll.Stopper{API: client})
	sp := spec("etl", "cron(0 3 * * ? *)")
	sp.Timing.Timeout = durationpb.New(10 * time.Minute)
	h.applySchedule(sp)
	id := v1.RunID("etl", t0, v1.Trigger_TRIGGER_SCHEDULE)
	h.dispatch(dispatched("etl", id, t0, arn))
	h.task(&v1.TaskStateChanged{TaskArn: arn, ClusterArn: "arn:aws:ecs:eu-west-1:123456789012:cluster/batch", RunId: id, Schedule: "etl", Cluster: "batch",
		LastStatus: "RUNNING", Version: 3, StartedAt: timestamppb.New(t0)})
	h.eventually(func() bool { r, ok := h.store.Get(id); return ok && len(realTasksOf(r)) == 1 }, "running")
	h.clock.Set(t0.Add(11 * time.Minute))
	h.tr.Tick(context.Background())
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindOverrun)) == 1 }, "overrun")
	require.Contains(t, h.bus.AlertsOf(tracker.KindOverrun)[0].GetText(), "asked ECS to stop it")
	require.Equal(t, "taskyard: run exceeded its timeout of 10m0s", ecsSrv.Stopped[arn])
	require.Empty(t, ecsSrv.Problems)
	// ECS reports the stop.
	h.task(&v1.TaskStateChanged{TaskArn: arn, RunId: id, Schedule: "etl", Cluster: "batch", LastStatus: "STOPPED", Version: 5, StopCode: "UserInitiated",
		StoppedReason: ecsSrv.Stopped[arn], StartedAt: timestamppb.New(t0), StoppedAt: timestamppb.New(t0.Add(11 * time.Minute)),
		Containers: []*v1.ContainerState{{Name: "app", ExitCode: 143, HasExitCode: true}}})
	h.eventually(func() bool { return len(h.bus.Finished()) == 1 }, "verdict")
	require.Equal(t, v1.Outcome_OUTCOME_TIMED_OUT, h.bus.Finished()[0].GetOutcome())
}

// TestNoSuccessSurvivesRestart: a restart of exitwatch does not restart
// the succeedWithin window of a schedule applied before it, and an
// incident open when it restarted is still resolved when a run succeeds.
func TestNoSuccessSurvivesRestart(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	sp := spec("dms", "cron(0 3 * * ? 2099)")
	sp.Expectations = &v1.Expectations{SucceedWithin: durationpb.New(time.Hour)}
	sp.AppliedAt = timestamppb.New(t0)
	data, err := proto.Marshal(sp)
	require.NoError(t, err)
	_, err = env.KV(t, "taskyard-schedules").Put(context.Background(), "dms", data)
	require.NoError(t, err)

	// The first process runs from t0 to t0+50m: no alert yet.
	clk := &clock{t: t0.Add(50 * time.Minute)}
	first := addReplica(t, env, clk, tracker.Config{})
	first.tr.Tick(context.Background())
	first.wait()

	// The next one starts at t0+61m and raises it at once.
	clk.Set(t0.Add(61 * time.Minute))
	h := addReplica(t, env, clk, tracker.Config{})
	require.Eventually(t, func() bool { _, ok := h.list.Get("dms"); return ok }, 5*time.Second, 10*time.Millisecond)
	h.tr.Tick(context.Background())
	h.eventually(func() bool { return len(h.bus.AlertsOf(tracker.KindNoSuccess)) == 1 }, "no_success an hour after the apply")
	require.Contains(t, h.bus.AlertsOf(tracker.KindNoSuccess)[0].GetTitle(), "has not succeeded for 1h1m")

	// Restarted again mid-incident, it announces the incident again (its
	// receivers fold it by dedupe key) and resolves it on a success.
	h.wait()
	clk.Set(t0.Add(70 * time.Minute))
	h2 := addReplica(t, env, clk, tracker.Config{})
	require.Eventually(t, func() bool { _, ok := h2.list.Get("dms"); return ok }, 5*time.Second, 10*time.Millisecond)
	h2.tr.Tick(context.Background())
	h2.eventually(func() bool { return len(h2.bus.AlertsOf(tracker.KindNoSuccess)) == 1 }, "announced again after the restart")
	id := v1.RunID("dms", t0.Add(71*time.Minute), v1.Trigger_TRIGGER_MANUAL)
	h2.dispatch(&v1.RunDispatched{RunId: id, Schedule: "dms", Cluster: "batch", ScheduledAt: timestamppb.New(t0.Add(71 * time.Minute)),
		DispatchedAt: timestamppb.New(t0.Add(71 * time.Minute)), Trigger: v1.Trigger_TRIGGER_MANUAL, Runner: "ecs", TaskIds: []string{"task-" + id}, TaskCount: 1})
	h2.task(&v1.TaskStateChanged{TaskArn: "task-" + id, RunId: id, Schedule: "dms", Cluster: "batch", LastStatus: "STOPPED", Version: 5,
		StopCode: "EssentialContainerExited", StartedAt: timestamppb.New(t0.Add(71 * time.Minute)), StoppedAt: timestamppb.New(t0.Add(72 * time.Minute)),
		Containers: []*v1.ContainerState{{Name: "app", ExitCode: 0, HasExitCode: true}}})
	h2.eventually(func() bool { return len(h2.bus.Finished()) == 1 }, "verdict")
	require.Equal(t, v1.Outcome_OUTCOME_SUCCEEDED, h2.bus.Finished()[0].GetOutcome())
	clk.Set(t0.Add(73 * time.Minute))
	h2.tr.Tick(context.Background())
	h2.eventually(func() bool {
		for _, a := range h2.bus.Alerts() {
			if a.GetResolved() && a.GetDedupeKey() == "no_success:dms" {
				return true
			}
		}
		return false
	}, "no_success resolved after the restart")
}

// Both replicas evaluate the time rules; each incident is raised once.
func TestTimeRulesOnceWithTwoReplicas(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	clk := &clock{t: t0}
	a := addReplica(t, env, clk, tracker.Config{MissedGrace: 30 * time.Second})
	b := addReplica(t, env, clk, tracker.Config{MissedGrace: 30 * time.Second})
	sp := spec("dms", "rate(1 minute)")
	sp.Expectations = &v1.Expectations{SucceedWithin: durationpb.New(5 * time.Minute)}
	a.applySchedule(sp)
	require.Eventually(t, func() bool { _, ok := b.list.Get("dms"); return ok }, 5*time.Second, 10*time.Millisecond)
	clk.Add(10 * time.Minute)
	for range 3 {
		a.tr.Tick(context.Background())
		b.tr.Tick(context.Background())
	}
	a.eventually(func() bool {
		return len(a.bus.AlertsOf(tracker.KindNoSuccess)) >= 1 && len(a.bus.AlertsOf(tracker.KindMissed)) >= 1
	}, "raised")
	a.drained()
	// What the stream kept (JetStream dropped the second replica's copies).
	stream, err := env.JS.Stream(context.Background(), "ALERTS")
	require.NoError(t, err)
	count := func(subject string) uint64 {
		info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
		require.NoError(t, err)
		return info.State.Subjects[subject]
	}
	require.EqualValues(t, 1, count("taskyard.alert.critical.no_success"))
	missed := count("taskyard.alert.critical.run_missed")
	require.Equal(t, uint64(len(a.bus.Missed())), missed, "one alert per missed fire")
	seen := map[string]bool{}
	for _, m := range a.bus.Missed() {
		require.False(t, seen[m.GetRunId()], "fire %s reported twice", m.GetRunId())
		seen[m.GetRunId()] = true
	}
}
