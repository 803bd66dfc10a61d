package taskyardv1_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

func TestValidName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"nightly-report", true},
		{"a", true},
		{"A_1-b", true},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
		{"", false},
		{"-lead", false},
		{"_lead", false},
		{"has.dot", false},
		{"has space", false},
		{"wild*", false},
		{"ünï", false},
	} {
		require.Equal(t, tc.ok, v1.ValidName(tc.name), tc.name)
		require.Equal(t, tc.ok, v1.CheckName(tc.name) == nil, tc.name)
	}
}

func TestRunID(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)
	valid := regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

	id := v1.RunID("nightly-report", at, v1.Trigger_TRIGGER_SCHEDULE)
	require.Equal(t, "nightly-report-20261121T030000Z-s-", id[:len(id)-16])
	require.Regexp(t, valid, id)

	// Same instant in another zone is the same run.
	require.Equal(t, id, v1.RunID("nightly-report", at.In(tokyo), v1.Trigger_TRIGGER_SCHEDULE))
	// A catch-up of the fire is the same run as its normal dispatch.
	require.Equal(t, id, v1.RunID("nightly-report", at, v1.Trigger_TRIGGER_CATCHUP))
	// Manual, another second, another nanosecond, another schedule: different runs.
	require.NotEqual(t, id, v1.RunID("nightly-report", at, v1.Trigger_TRIGGER_MANUAL))
	require.NotEqual(t, id, v1.RunID("nightly-report", at.Add(time.Second), v1.Trigger_TRIGGER_SCHEDULE))
	require.NotEqual(t, id, v1.RunID("nightly-report", at.Add(time.Nanosecond), v1.Trigger_TRIGGER_SCHEDULE))
	require.NotEqual(t, id, v1.RunID("nightly-reporT", at, v1.Trigger_TRIGGER_SCHEDULE))

	// Longest names stay within 64 and distinct names sharing a 28-char
	// prefix do not collide.
	long := strings.Repeat("a", 64)
	long2 := strings.Repeat("a", 63) + "b"
	l1 := v1.RunID(long, at, v1.Trigger_TRIGGER_MANUAL)
	require.LessOrEqual(t, len(l1), v1.MaxRunIDLen)
	require.Regexp(t, valid, l1)
	require.NotEqual(t, l1, v1.RunID(long2, at, v1.Trigger_TRIGGER_MANUAL))
}

func TestSubjectsRoundTrip(t *testing.T) {
	t.Parallel()
	s := v1.Subjects{}
	for _, tc := range []struct {
		subject string
		want    v1.Parsed
	}{
		{s.RunDispatched("job"), v1.Parsed{Family: "run", Kind: "dispatched", Schedule: "job"}},
		{s.RunSkipped("job"), v1.Parsed{Family: "run", Kind: "skipped", Schedule: "job"}},
		{s.RunDispatchFailed("job"), v1.Parsed{Family: "run", Kind: "dispatch_failed", Schedule: "job"}},
		{s.RunFinished("job"), v1.Parsed{Family: "run", Kind: "finished", Schedule: "job"}},
		{s.RunMissed("job"), v1.Parsed{Family: "run", Kind: "missed", Schedule: "job"}},
		{s.Task("batch", "job"), v1.Parsed{Family: "task", Cluster: "batch", Schedule: "job"}},
		{s.Task("batch", ""), v1.Parsed{Family: "task", Cluster: "batch"}},
		{s.Alert(v1.Severity_SEVERITY_CRITICAL, "run_failed"), v1.Parsed{Family: "alert", Severity: "critical", Kind: "run_failed"}},
		{s.LogStats("batch", "job"), v1.Parsed{Family: "logs.stats", Cluster: "batch", Service: "job"}},
		{s.DaemonStats("logrouter", "host.1"), v1.Parsed{Family: "stats", Daemon: "logrouter", Instance: "host_1"}},
		{s.Ctl("scheduler", "apply"), v1.Parsed{Family: "ctl", Daemon: "scheduler", Kind: "apply"}},
	} {
		got, err := s.Parse(tc.subject)
		require.NoError(t, err, tc.subject)
		require.Equal(t, tc.want, got, tc.subject)
	}
	require.Equal(t, "taskyard.task.arn:aws:ecs:x:1:cluster/b_c.job", s.Task("arn:aws:ecs:x:1:cluster/b.c", "job"))
	for _, bad := range []string{"other.run.dispatched.x", "taskyard.run.bogus.x", "taskyard.run.dispatched", "taskyard.nope", "taskyard.alert.critical"} {
		_, err := s.Parse(bad)
		require.Error(t, err, bad)
	}
	custom := v1.Subjects{Prefix: "staging"}
	require.Equal(t, "staging.run.finished.x", custom.RunFinished("x"))
	require.Equal(t, v1.StreamNames{Runs: "STAGING_RUNS", Alerts: "STAGING_ALERTS", Stats: "STAGING_STATS"}, v1.Streams("staging"))
	require.Equal(t, "staging-leases", v1.Buckets("staging").Leases)
}

func TestSeverityNames(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"critical", "warning", "info"} {
		s, err := v1.ParseSeverity(n)
		require.NoError(t, err)
		require.Equal(t, n, v1.SeverityName(s))
	}
	_, err := v1.ParseSeverity("loud")
	require.ErrorContains(t, err, `unknown severity "loud"`)
}

func TestDecodeByHeaderAndSubject(t *testing.T) {
	t.Parallel()
	s := v1.Subjects{}
	in := &v1.RunFinished{RunId: "r1", Schedule: "job", Outcome: v1.Outcome_OUTCOME_FAILED}
	msg, err := v1.NewMsg(context.Background(), s.RunFinished("job"), in)
	require.NoError(t, err)
	require.Equal(t, "taskyard.v1.RunFinished", msg.Header.Get(v1.HeaderType))

	got, err := v1.Decode("", msg.Subject, msg.Header, msg.Data)
	require.NoError(t, err)
	require.True(t, proto.Equal(in, got))

	// Without the type header the subject decides.
	got, err = v1.Decode("", msg.Subject, nil, msg.Data)
	require.NoError(t, err)
	require.True(t, proto.Equal(in, got))

	_, err = v1.Decode("", s.Ctl("scheduler", "list"), nil, msg.Data)
	require.ErrorContains(t, err, "no known message type")
	_, err = v1.Decode("", msg.Subject, msg.Header, []byte{0xff, 0xff})
	require.ErrorContains(t, err, "decode taskyard.v1.RunFinished")
}

func TestTraceparentCarried(t *testing.T) {
	t.Parallel()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	msg, err := v1.NewMsg(ctx, "taskyard.run.dispatched.job", &v1.RunDispatched{RunId: "r"})
	require.NoError(t, err)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", msg.Header.Get("traceparent"))

	out := trace.SpanContextFromContext(v1.ContextFromHeader(context.Background(), msg.Header))
	require.Equal(t, tid, out.TraceID())
	require.True(t, out.IsRemote())
}

// TestStreamsOnJetStream creates every stream and bucket on a real embedded
// server twice (idempotent), then checks that a dispatch decision published
// twice under its run id is stored once.
func TestStreamsOnJetStream(t *testing.T) {
	t.Parallel()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(srv.Shutdown)
	require.True(t, srv.ReadyForConnections(10*time.Second))

	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()

	for range 2 {
		for _, sc := range v1.StreamConfigs(v1.StoreOptions{}) {
			_, err := js.CreateOrUpdateStream(ctx, sc)
			require.NoError(t, err, sc.Name)
		}
		for _, kc := range v1.KVConfigs(v1.StoreOptions{}) {
			_, err := js.CreateOrUpdateKeyValue(ctx, kc)
			require.NoError(t, err, kc.Bucket)
		}
	}

	s := v1.Subjects{}
	at := time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)
	id := v1.RunID("job", at, v1.Trigger_TRIGGER_SCHEDULE)
	ev := &v1.RunDispatched{RunId: id, Schedule: "job", ScheduledAt: timestamppb.New(at)}
	ack1, err := v1.Publish(ctx, js, s.RunDispatched("job"), ev, id)
	require.NoError(t, err)
	require.False(t, ack1.Duplicate)
	ack2, err := v1.Publish(ctx, js, s.RunDispatched("job"), ev, id)
	require.NoError(t, err)
	require.True(t, ack2.Duplicate)

	st, err := js.Stream(ctx, "RUNS")
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs)

	raw, err := st.GetLastMsgForSubject(ctx, s.RunDispatched("job"))
	require.NoError(t, err)
	got, err := v1.Decode("", raw.Subject, nats.Header(raw.Header), raw.Data)
	require.NoError(t, err)
	require.True(t, proto.Equal(ev, got))
}

func TestJobFamily(t *testing.T) {
	t.Parallel()
	require.Equal(t, "taskyard-job-nightly", v1.JobFamily("nightly"))
	s, ok := v1.ScheduleFromJobFamily("taskyard-job-nightly")
	require.True(t, ok)
	require.Equal(t, "nightly", s)
	for _, f := range []string{"taskyard-scheduler", "taskyard-job-", "other", ""} {
		_, ok := v1.ScheduleFromJobFamily(f)
		require.False(t, ok, f)
	}
}
