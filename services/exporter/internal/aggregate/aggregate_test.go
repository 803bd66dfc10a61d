package aggregate

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

var t0 = time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)

func flat(t *testing.T, s *Store, now time.Time) map[string]float64 {
	t.Helper()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(s.RenderJSON(nil, now, RenderOptions{StaleAfter: time.Minute}), &doc))
	out := map[string]float64{}
	var walk func(string, any)
	walk = func(p string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if p != "" {
					k = p + "." + k
				}
				walk(k, c)
			}
		case float64:
			out[p] = x
		default:
			t.Fatalf("%s: %T is not a number", p, v)
		}
	}
	walk("", doc)
	return out
}

func apply(t testing.TB, s *Store, stream string, seq uint64, subject string, m proto.Message) {
	t.Helper()
	data, err := proto.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, s.Apply(stream, seq, subject, nil, data))
}

func stats(instance string, at, started time.Time, out map[string]int64) *v1.DaemonStats {
	return &v1.DaemonStats{Daemon: "logrouter", Instance: instance, Time: timestamppb.New(at), StartedAt: timestamppb.New(started),
		Output: map[string]*v1.PluginCounters{"s3.0": {Counters: out}}}
}

func TestDaemonCountersNeverDecrease(t *testing.T) {
	t.Parallel()
	subj := v1.Subjects{}.DaemonStats("logrouter", "lr")
	for _, tc := range []struct {
		name    string
		reports []*v1.DaemonStats
		want    float64
	}{
		{"growing", []*v1.DaemonStats{stats("lr", t0, t0, map[string]int64{"proc_records": 5}), stats("lr", t0.Add(time.Second), t0, map[string]int64{"proc_records": 9})}, 9},
		{"restart seen from started_at", []*v1.DaemonStats{stats("lr", t0, t0, map[string]int64{"proc_records": 5}), stats("lr", t0.Add(time.Minute), t0.Add(time.Minute), map[string]int64{"proc_records": 7})}, 12},
		{"restart unseen, counter went down", []*v1.DaemonStats{stats("lr", t0, t0, map[string]int64{"proc_records": 5}), stats("lr", t0.Add(time.Minute), t0, map[string]int64{"proc_records": 2})}, 7},
		{"counter disappears", []*v1.DaemonStats{stats("lr", t0, t0, map[string]int64{"proc_records": 5}), stats("lr", t0.Add(time.Minute), t0, map[string]int64{})}, 5},
		{"two restarts", []*v1.DaemonStats{
			stats("lr", t0, t0, map[string]int64{"proc_records": 5}),
			stats("lr", t0.Add(time.Minute), t0.Add(time.Minute), map[string]int64{"proc_records": 1}),
			stats("lr", t0.Add(2*time.Minute), t0.Add(2*time.Minute), map[string]int64{"proc_records": 3}),
		}, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := New("", nil)
			prev := 0.0
			for i, r := range tc.reports {
				apply(t, s, "STATS", uint64(i+1), subj, r)
				v := flat(t, s, t0)["output.s3.0.proc_records"]
				require.GreaterOrEqual(t, v, prev)
				prev = v
			}
			require.Equal(t, tc.want, prev)
		})
	}
}

func TestSequenceMakesApplyIdempotent(t *testing.T) {
	t.Parallel()
	s := New("", nil)
	subj := v1.Subjects{}.RunSkipped("job")
	m := &v1.RunSkipped{Schedule: "job", RunId: "r"}
	apply(t, s, "RUNS", 1, subj, m)
	apply(t, s, "RUNS", 1, subj, m) // redelivery
	apply(t, s, "RUNS", 2, subj, m)
	apply(t, s, "ALERTS", 1, subj, m) // another stream's sequence space
	require.Equal(t, 3.0, flat(t, s, t0)["schedule.job.skipped"])

	// The sequences survive a snapshot round trip.
	dirty, err := s.TakeDirty(nil)
	require.NoError(t, err)
	require.Len(t, dirty, 1)
	r := New("", nil)
	require.NoError(t, r.Restore(dirty[0].Key, dirty[0].Value))
	apply(t, r, "RUNS", 2, subj, m)
	require.Equal(t, 3.0, flat(t, r, t0)["schedule.job.skipped"])
	apply(t, r, "RUNS", 3, subj, m)
	require.Equal(t, 4.0, flat(t, r, t0)["schedule.job.skipped"])
}

func TestTasksOutOfOrder(t *testing.T) {
	t.Parallel()
	s := New("", nil)
	subj := v1.Subjects{}.Task("c", "")
	task := func(seq uint64, arn, status string, v int64) {
		apply(t, s, "RUNS", seq, subj, &v1.TaskStateChanged{TaskArn: arn, Cluster: "c", LastStatus: status, Version: v, EventTime: timestamppb.New(t0)})
	}
	task(1, "a", "PENDING", 1)
	task(2, "b", "RUNNING", 2)
	require.Equal(t, 2.0, flat(t, s, t0)["cluster.c.running_tasks"])
	task(3, "a", "STOPPED", 4)
	task(4, "a", "RUNNING", 3) // older, delivered late: a stays stopped
	require.Equal(t, 1.0, flat(t, s, t0)["cluster.c.running_tasks"])
	// A verdict names the task: it is stopped even without its task event.
	apply(t, s, "RUNS", 5, v1.Subjects{}.RunFinished("j"), &v1.RunFinished{RunId: "r", Schedule: "j", Cluster: "c", TaskIds: []string{"b"},
		FinishedAt: timestamppb.New(t0), Outcome: v1.Outcome_OUTCOME_SUCCEEDED})
	require.Equal(t, 0.0, flat(t, s, t0)["cluster.c.running_tasks"])
}

func TestLastOutcomeIsTheLatestFire(t *testing.T) {
	t.Parallel()
	s := New("", nil)
	fin := func(seq uint64, scheduled time.Time, o v1.Outcome) {
		apply(t, s, "RUNS", seq, v1.Subjects{}.RunFinished("j"), &v1.RunFinished{RunId: scheduled.String(), Schedule: "j",
			ScheduledAt: timestamppb.New(scheduled), FinishedAt: timestamppb.New(scheduled.Add(time.Minute)), Outcome: o})
	}
	fin(1, t0.Add(time.Hour), v1.Outcome_OUTCOME_SUCCEEDED)
	fin(2, t0, v1.Outcome_OUTCOME_FAILED) // verdict of an older fire, arriving late
	m := flat(t, s, t0.Add(2*time.Hour))
	require.Equal(t, 1.0, m["schedule.j.last_outcome"])
	require.Equal(t, 1.0, m["schedule.j.failed"])
	apply(t, s, "RUNS", 3, v1.Subjects{}.RunMissed("j"), &v1.RunMissed{Schedule: "j", ExpectedAt: timestamppb.New(t0.Add(2 * time.Hour))})
	require.Equal(t, float64(OutcomeMissed), flat(t, s, t0.Add(3*time.Hour))["schedule.j.last_outcome"])
}

func TestIsCounter(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]bool{
		"input.forward.0.records":                    true,
		"output.s3.0.proc_records":                   true,
		"instance.lr-1.output.s3.0.errors":           true,
		"schedule.a.failed":                          true,
		"schedule.a.log_records":                     true,
		"schedule.a.running":                         false,
		"schedule.a.last_exit_code":                  false,
		"schedule.a.seconds_since_last_run":          false,
		"logs.api.records":                           true,
		"alerts.critical":                            true,
		"cluster.c.running_tasks":                    false,
		"daemons.logrouter.lr-1.up":                  false,
		"schedule.input.dispatched":                  true,
		"schedule.output.seconds_since_last_success": false,
	} {
		require.Equal(t, want, IsCounter(key), key)
	}
}

func TestEntityKey(t *testing.T) {
	t.Parallel()
	require.Equal(t, "schedule.nightly", EntityKey(KindSchedule, "nightly"))
	require.Equal(t, "logs.~YmF0Y2gvYXBpLnYy", EntityKey(KindLogs, "batch/api.v2"))
}

// FuzzApply: no message, however malformed, panics the store or makes the
// document anything but numbers under safe names.
func FuzzApply(f *testing.F) {
	for _, m := range []struct {
		subject string
		msg     proto.Message
	}{
		{v1.Subjects{}.RunFinished("a"), &v1.RunFinished{Schedule: "a", RunId: "r", Outcome: v1.Outcome_OUTCOME_FAILED,
			Containers: []*v1.ContainerExit{{Name: "x", ExitCode: 1, HasExitCode: true, Essential: true}}}},
		{v1.Subjects{}.DaemonStats("logrouter", "i"), stats("i", t0, t0, map[string]int64{"proc_records": 3})},
		{v1.Subjects{}.LogStats("c", "s"), &v1.LogStats{Cluster: "c", Service: "s\x00.x", Records: 3, RecordsByLevel: map[string]int64{"ERROR": 2}}},
		{v1.Subjects{}.Task("c", "_"), &v1.TaskStateChanged{TaskArn: "t", LastStatus: "STOPPED"}},
	} {
		data, err := proto.Marshal(m.msg)
		require.NoError(f, err)
		f.Add(m.subject, data)
	}
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		s := New("", nil)
		if err := s.Apply("RUNS", 1, subject, nil, data); err != nil {
			return
		}
		for k := range flat(t, s, t0) {
			require.Regexp(t, `^[-a-zA-Z0-9_.]+$`, k)
		}
		_, err := s.TakeDirty(nil)
		require.NoError(t, err)
	})
}

func BenchmarkApply(b *testing.B) {
	h := nats.Header{v1.HeaderType: []string{"taskyard.v1.RunFinished"}}
	s := New("", nil)
	subj := v1.Subjects{}.RunFinished("job-0001")
	data, _ := proto.Marshal(&v1.RunFinished{RunId: "job-0001-20260101T000000Z-s-0123456789abcdef", Schedule: "job-0001", Cluster: "c",
		ScheduledAt: timestamppb.New(t0), StartedAt: timestamppb.New(t0), FinishedAt: timestamppb.New(t0.Add(time.Minute)), Outcome: v1.Outcome_OUTCOME_SUCCEEDED,
		Containers: []*v1.ContainerExit{{Name: "app", HasExitCode: true, Essential: true}}, TaskIds: []string{"arn:aws:ecs:ap-northeast-1:123456789012:task/c/0123456789abcdef"}})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = s.Apply("RUNS", uint64(i+1), subj, h, data)
	}
}

func BenchmarkTakeDirty1000Schedules(b *testing.B) {
	s := New("", nil)
	for i := range 1000 {
		name := "job-" + string(rune('a'+i%26)) + strconv.Itoa(i)
		apply(b, s, "RUNS", uint64(i+1), v1.Subjects{}.RunFinished(name), &v1.RunFinished{RunId: "r", Schedule: name, Outcome: v1.Outcome_OUTCOME_SUCCEEDED,
			FinishedAt: timestamppb.New(t0), Duration: durationpb.New(time.Minute)})
	}
	b.ReportAllocs()
	for b.Loop() {
		s.mu.Lock()
		for k, v := range s.schedules {
			_ = k
			s.dirty[v] = struct{}{}
		}
		s.mu.Unlock()
		_, _ = s.TakeDirty(nil)
	}
}

// BenchmarkRender10kSchedules renders /api/v1/metrics for 10,000 schedules
// that each have run (dispatches, verdicts, logs), 50 clusters and 20
// logrouter instances.
func BenchmarkRender10kSchedules(b *testing.B) {
	s := New("", nil)
	seq := uint64(0)
	subj := v1.Subjects{}
	for i := range 10000 {
		name := "schedule-" + strconv.Itoa(i)
		cluster := "cluster-" + strconv.Itoa(i%50)
		at := t0.Add(time.Duration(i) * time.Second)
		id := name + "-r"
		seq++
		apply(b, s, "RUNS", seq, subj.RunDispatched(name), &v1.RunDispatched{RunId: id, Schedule: name, Cluster: cluster,
			ScheduledAt: timestamppb.New(at), DispatchedAt: timestamppb.New(at.Add(time.Second)), TaskIds: []string{id}})
		seq++
		apply(b, s, "RUNS", seq, subj.RunFinished(name), &v1.RunFinished{RunId: id, Schedule: name, Cluster: cluster, ScheduledAt: timestamppb.New(at),
			FinishedAt: timestamppb.New(at.Add(time.Minute)), Duration: durationpb.New(time.Minute), Outcome: v1.Outcome_OUTCOME_SUCCEEDED,
			Containers: []*v1.ContainerExit{{Name: "app", HasExitCode: true, Essential: true}}, TaskIds: []string{id}})
		seq++
		apply(b, s, "STATS", seq, subj.LogStats(cluster, name), &v1.LogStats{Cluster: cluster, Service: name, Records: 100, Bytes: 10000,
			RecordsByLevel: map[string]int64{"info": 95, "error": 5}})
	}
	for i := range 20 {
		seq++
		apply(b, s, "STATS", seq, subj.DaemonStats("logrouter", "lr-"+strconv.Itoa(i)), stats("lr-"+strconv.Itoa(i), t0, t0, map[string]int64{"proc_records": 5, "errors": 1}))
	}
	now := t0.Add(24 * time.Hour)
	buf := s.RenderJSON(nil, now, RenderOptions{StaleAfter: time.Minute})
	b.ReportAllocs()
	for b.Loop() {
		buf = s.RenderJSON(buf[:0], now, RenderOptions{StaleAfter: time.Minute})
	}
	b.ReportMetric(float64(len(buf)), "bytes/doc")
}

func TestDecodeMatchesV1Decode(t *testing.T) {
	t.Parallel()
	for _, m := range []proto.Message{&v1.RunDispatched{RunId: "a"}, &v1.RunFinished{RunId: "b"}, &v1.TaskStateChanged{TaskArn: "c"},
		&v1.LogStats{Service: "d"}, &v1.DaemonStats{Instance: "e"}, &v1.Alert{Kind: "f"}, &v1.RunMissed{RunId: "g"}} {
		msg, err := v1.NewMsg(t.Context(), "taskyard.x", m)
		require.NoError(t, err)
		got, err := decode("", "taskyard.x", msg.Header, msg.Data)
		require.NoError(t, err)
		require.True(t, proto.Equal(m, got), "%T", m)
	}
}
