package app_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/telemetry"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

func execSpec(name, expr, script string) *v1.ScheduleSpec {
	return &v1.ScheduleSpec{
		Name: name, Cluster: "dev", Type: "scheduled",
		Containers: []*v1.Container{{
			Name: "job", Image: "local", Essential: true, Memory: 128,
			Command:     []string{"sh", "-c", script},
			Environment: map[string]string{"GREETING": "hello"},
		}},
		Timing: &v1.Timing{
			Expression: expr, Timezone: "UTC", TaskCount: 1, Concurrency: "allow", Enabled: true,
			StartingDeadline: durationpb.New(time.Minute), CatchUp: &v1.CatchUp{Mode: "latest", Max: 1},
		},
	}
}

func writeProfile(t *testing.T, limit int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "clusters")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	body := "name: dev\ncluster: dev\nlaunchType: EXTERNAL\nnetworkMode: host\n"
	if limit > 0 {
		body += "taskLimit: " + strconv.Itoa(limit) + "\n"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dev.yml"), []byte(body), 0o644))
	return dir
}

// TestExecRunnerEndToEnd boots app.Run on an embedded NATS, creates a
// schedule through the control subjects and watches the fires, task events
// and log lines come out.
func TestExecRunnerEndToEnd(t *testing.T) {
	nc, url := startNATS(t)
	out := &syncBuffer{}
	cfg := baseConfig(url)
	cfg.ClustersDir = writeProfile(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	start(t, cfg, app.Deps{Stdout: out, Listener: ln, Telemetry: telemetry.Noop()})
	ev := collect(t, nc)

	spec := execSpec("echo", "rate(1 second)", `echo "{\"level\":\"info\",\"msg\":\"$GREETING $TASKYARD_RUN_ID\"}"; echo oops >&2; exit 3`)

	// apply refuses to create.
	var ar v1.ApplyReply
	request(t, nc, "apply", &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec}, AppliedBy: "test"}, &ar)
	require.Contains(t, ar.Error, "does not exist; creating it needs --create")
	require.False(t, ar.Applied)

	// create: dry run first shows the change and writes nothing.
	ar = v1.ApplyReply{}
	request(t, nc, "create", &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec}, DryRun: true}, &ar)
	require.Empty(t, ar.Error)
	require.False(t, ar.Applied)
	require.Len(t, ar.Changes, 1)
	var lr v1.ListReply
	request(t, nc, "list", &v1.NameRequest{}, &lr)
	require.Empty(t, lr.Schedules)

	ar = v1.ApplyReply{}
	request(t, nc, "create", &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec}, AppliedBy: "test"}, &ar)
	require.Empty(t, ar.Error)
	require.True(t, ar.Applied)

	// Fires are dispatched, tasks go PENDING -> RUNNING -> STOPPED with exit
	// code 3. The runner publishes task events as they happen, so a short
	// task's STOPPED can reach the stream before its RunDispatched: wait
	// for both.
	var d []*v1.RunDispatched
	require.Eventually(t, func() bool {
		d = all[*v1.RunDispatched](ev)
		if len(d) == 0 {
			return false
		}
		for _, tc := range all[*v1.TaskStateChanged](ev) {
			if tc.LastStatus == "STOPPED" && len(d[0].TaskIds) > 0 && tc.TaskArn == d[0].TaskIds[0] {
				return true
			}
		}
		return false
	}, 15*time.Second, 50*time.Millisecond)
	require.Equal(t, "exec", d[0].Runner)
	require.Equal(t, v1.RunID("echo", d[0].ScheduledAt.AsTime(), v1.Trigger_TRIGGER_SCHEDULE), d[0].RunId)
	require.Len(t, d[0].TaskIds, 1)
	require.False(t, d[0].DispatchedAt.AsTime().Before(d[0].ScheduledAt.AsTime()), "dispatched no earlier than the fire time")

	var statuses []string
	var stopped *v1.TaskStateChanged
	require.Eventually(t, func() bool {
		statuses = statuses[:0]
		for _, tc := range all[*v1.TaskStateChanged](ev) {
			if tc.TaskArn == d[0].TaskIds[0] {
				statuses = append(statuses, tc.LastStatus)
				if tc.LastStatus == "STOPPED" {
					stopped = tc
				}
			}
		}
		return len(statuses) == 3
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, []string{"PENDING", "RUNNING", "STOPPED"}, statuses)
	require.Equal(t, int32(3), stopped.Containers[0].ExitCode)
	require.True(t, stopped.Containers[0].HasExitCode)
	require.Equal(t, "EssentialContainerExited", stopped.StopCode)
	require.Equal(t, d[0].RunId, stopped.RunId)

	// Log lines: one JSON object per line with FireLens field names.
	var rec map[string]string
	require.Eventually(t, func() bool {
		for _, line := range strings.Split(out.String(), "\n") {
			var m map[string]string
			if json.Unmarshal([]byte(line), &m) == nil && m["taskyard_run_id"] == d[0].RunId && m["source"] == "stdout" {
				rec = m
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, "dev", rec["ecs_cluster"])
	require.Equal(t, d[0].TaskIds[0], rec["ecs_task_arn"])
	require.Equal(t, "taskyard-job-echo", rec["ecs_task_definition"])
	require.Equal(t, "job", rec["container_name"])
	require.Equal(t, `{"level":"info","msg":"hello `+d[0].RunId+`"}`, rec["log"])
	require.Contains(t, out.String(), `"log":"oops"`)
	require.Contains(t, out.String(), `"source":"stderr"`)

	// list, get, next.
	lr = v1.ListReply{}
	request(t, nc, "list", &v1.NameRequest{}, &lr)
	require.Len(t, lr.Schedules, 1)
	require.Equal(t, "echo", lr.Schedules[0].Spec.Name)
	require.NotNil(t, lr.Schedules[0].NextFire)
	require.NotNil(t, lr.Schedules[0].LastFire)
	var nr v1.NextReply
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	request(t, nc, "next", &v1.NameRequest{Name: "echo", Count: 3, From: timestamppb.New(from)}, &nr)
	require.Empty(t, nr.Error)
	require.Len(t, nr.Times, 3)
	require.Equal(t, from.Add(time.Second), nr.Times[0].AsTime())
	require.Equal(t, from.Add(3*time.Second), nr.Times[2].AsTime())

	// disable: fires become RunSkipped(disabled) within a second or so.
	var ack v1.AckReply
	request(t, nc, "disable", &v1.NameRequest{Name: "echo", RequestedBy: "test"}, &ack)
	require.Empty(t, ack.Error)
	require.Eventually(t, func() bool {
		for _, s := range all[*v1.RunSkipped](ev) {
			if s.Reason == v1.SkipReason_SKIP_REASON_DISABLED {
				return true
			}
		}
		return false
	}, 5*time.Second, 50*time.Millisecond)

	// Manual trigger still runs a disabled schedule.
	var tr v1.TriggerReply
	request(t, nc, "trigger", &v1.NameRequest{Name: "echo", RequestedBy: "test"}, &tr)
	require.Empty(t, tr.Error)
	require.Contains(t, tr.RunId, "-m-")
	require.Eventually(t, func() bool {
		for _, d := range all[*v1.RunDispatched](ev) {
			if d.RunId == tr.RunId && d.Trigger == v1.Trigger_TRIGGER_MANUAL {
				return true
			}
		}
		return false
	}, 5*time.Second, 50*time.Millisecond)

	// prune deletes; apply cannot.
	ar = v1.ApplyReply{}
	request(t, nc, "apply", &v1.ApplyRequest{Delete: []string{"echo"}}, &ar)
	require.Contains(t, ar.Error, "needs --prune")
	ar = v1.ApplyReply{}
	request(t, nc, "prune", &v1.ApplyRequest{Delete: []string{"echo"}}, &ar)
	require.Empty(t, ar.Error)
	require.True(t, ar.Applied)
	lr = v1.ListReply{}
	request(t, nc, "list", &v1.NameRequest{}, &lr)
	require.Empty(t, lr.Schedules)

	// Health and metrics.
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/readyz")
	require.Equal(t, http.StatusOK, code, body)
	code, body = get("/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, name := range []string{"taskyard_scheduler_fires_total", "taskyard_scheduler_skips_total{", "taskyard_scheduler_dispatch_lag_seconds_bucket", "taskyard_scheduler_leader"} {
		require.Contains(t, body, name)
	}
	require.Contains(t, body, `reason="disabled"`)

	// Every decision carries its run id as Nats-Msg-Id.
	ev.mu.Lock()
	for i, m := range ev.msgs {
		if d, ok := m.(*v1.RunDispatched); ok {
			require.Equal(t, d.RunId, ev.ids[i])
		}
	}
	ev.mu.Unlock()
}
