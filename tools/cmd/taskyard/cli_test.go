package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// runCLI runs the taskyard command with args and returns stdout, stderr and
// the exit code main would use.
func runCLI(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	code := 0
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
			errOut.WriteString(ee.msg)
		} else {
			code = 1
			errOut.WriteString(err.Error())
		}
	}
	return out.String(), errOut.String(), code
}

func TestValidateBrokenDirectory(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCLI(t, context.Background(), "schedule", "validate", "../../../services/kit/schedule/testdata/broken")
	require.Equal(t, 1, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	files := map[string]int{}
	for _, l := range lines {
		// file:line:col: field: message
		parts := strings.SplitN(l, ":", 5)
		require.Len(t, parts, 5, l)
		require.NotEmpty(t, parts[1], l)
		require.NotEmpty(t, parts[2], l)
		files[parts[0]]++
	}
	require.Len(t, files, 3, "every broken file is reported")
	require.Contains(t, out, "broken/typos.yml:16:3: schedule.timeZone: unknown field")
	require.Contains(t, out, "broken/values.yml:11:15: schedule.expression: cron day-of-week: \"8\" out of range 1-7")
	require.Contains(t, errOut, "problem(s) found")
}

func TestValidateGoodSummary(t *testing.T) {
	t.Parallel()
	out, _, code := runCLI(t, context.Background(), "schedule", "validate", "../../../services/kit/schedule/testdata/good")
	require.Equal(t, 0, code)
	require.Contains(t, out, "nightly-report\tcron(0 3 ? * MON-FRI *)\tAsia/Tokyo\tfargate cpu=512 memory=2048MiB")
}

func TestNext(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want []string
		code int
	}{
		{"tokyo weekdays", []string{"--expr", "cron(0 12 ? * MON-FRI *)", "--tz", "Asia/Tokyo", "-n", "3", "--from", "2026-11-21T00:00:00Z"},
			[]string{"2026-11-23T12:00:00+09:00", "2026-11-24T12:00:00+09:00", "2026-11-25T12:00:00+09:00"}, 0},
		{"from is exclusive", []string{"--expr", "*/30 * * * *", "-n", "2", "--from", "2026-11-21T10:00:00Z"},
			[]string{"2026-11-21T10:30:00Z", "2026-11-21T11:00:00Z"}, 0},
		{"spring forward skips 02:30", []string{"--expr", "cron(30 2 * * ? *)", "--tz", "America/New_York", "-n", "2", "--from", "2026-03-07T12:00:00-05:00"},
			[]string{"2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"}, 0},
		{"at fires once", []string{"--expr", "at(2026-12-24T18:00:00)", "--tz", "Europe/London", "--from", "2026-11-21T00:00:00Z"},
			[]string{"2026-12-24T18:00:00Z"}, 0},
		{"bad expression", []string{"--expr", "cron(nope)"}, nil, 2},
		{"bad zone", []string{"--expr", "rate(5 minutes)", "--tz", "Mars/Olympus"}, nil, 2},
		{"bad from", []string{"--expr", "rate(5 minutes)", "--from", "yesterday"}, nil, 2},
		{"nothing to evaluate", nil, nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCLI(t, context.Background(), append([]string{"schedule", "next"}, tc.args...)...)
			require.Equal(t, tc.code, code, errOut)
			if tc.want != nil {
				require.Equal(t, tc.want, strings.Fields(out))
			}
		})
	}
}

func TestNextFromFile(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCLI(t, context.Background(), "schedule", "next", "-n", "2", "--from", "2026-11-20T00:00:00Z",
		"../../../services/kit/schedule/testdata/good/schedules/nightly-report.yml")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, []string{"2026-11-23T03:00:00+09:00", "2026-11-24T03:00:00+09:00"}, strings.Fields(out))
}

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEventsTailJSON(t *testing.T) {
	t.Parallel()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	cmd := newRootCmd(out, errOut)
	cmd.SetArgs([]string{"events", "tail", "--json", "--nats-url", srv.ClientURL()})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	require.Eventually(t, func() bool { return strings.Contains(errOut.String(), "tailing") }, 10*time.Second, 10*time.Millisecond)

	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, natsconn.Ensure(ctx, js, v1.StoreOptions{}))
	s := v1.Subjects{}
	at := time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)
	id := v1.RunID("job", at, v1.Trigger_TRIGGER_SCHEDULE)
	_, err = v1.Publish(ctx, js, s.RunDispatched("job"), &v1.RunDispatched{
		RunId: id, Schedule: "job", ScheduledAt: timestamppb.New(at), DispatchedAt: timestamppb.New(at.Add(40 * time.Millisecond)),
		Trigger: v1.Trigger_TRIGGER_SCHEDULE, Runner: "exec",
	}, id)
	require.NoError(t, err)
	_, err = v1.Publish(ctx, js, s.RunFinished("job"), &v1.RunFinished{RunId: id, Schedule: "job", Outcome: v1.Outcome_OUTCOME_FAILED}, "")
	require.NoError(t, err)
	// A control request is not an event.
	require.NoError(t, nc.Publish(s.Ctl("scheduler", "list"), []byte("x")))

	require.Eventually(t, func() bool { return strings.Count(out.String(), "\n") >= 2 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	sc := bufio.NewScanner(strings.NewReader(out.String()))
	var got []map[string]any
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		got = append(got, m)
	}
	require.Len(t, got, 2)
	require.Equal(t, "taskyard.run.dispatched.job", got[0]["subject"])
	require.Equal(t, "taskyard.v1.RunDispatched", got[0]["type"])
	ev := got[0]["event"].(map[string]any)
	require.Equal(t, id, ev["runId"])
	require.Equal(t, "2026-11-21T03:00:00Z", ev["scheduledAt"])
	require.Equal(t, "2026-11-21T03:00:00.040Z", ev["dispatchedAt"])
	require.Equal(t, "TRIGGER_SCHEDULE", ev["trigger"])
	require.Equal(t, "OUTCOME_FAILED", got[1]["event"].(map[string]any)["outcome"])
	_ = io.Discard
}

func TestEnvFallbackAndValidation(t *testing.T) {
	t.Setenv("TASKYARD_SUBJECT_PREFIX", "bad.prefix")
	_, errOut, code := runCLI(t, context.Background(), "schedule", "next", "--expr", "rate(1 minute)")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `subject-prefix: "bad.prefix"`)
}
