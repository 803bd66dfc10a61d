package execrunner

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/scheduler/internal/logsink"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

type taskEvents struct {
	mu  sync.Mutex
	evs []*v1.TaskStateChanged
}

func (e *taskEvents) stopped(id string) *v1.TaskStateChanged {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.evs {
		if ev.TaskArn == id && ev.LastStatus == "STOPPED" {
			return ev
		}
	}
	return nil
}

func setup(t *testing.T, sink logsink.Sink, grace time.Duration) (*Runner, *taskEvents) {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, natsconn.Ensure(context.Background(), js, v1.StoreOptions{}))
	evs := &taskEvents{}
	sub, err := nc.Subscribe("taskyard.task.>", func(m *nats.Msg) {
		msg, err := v1.Decode("", m.Subject, m.Header, m.Data)
		require.NoError(t, err)
		evs.mu.Lock()
		evs.evs = append(evs.evs, msg.(*v1.TaskStateChanged))
		evs.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	r := New(Config{JS: js, Log: logging.Discard(), Sink: sink, KillGrace: grace})
	t.Cleanup(r.Shutdown)
	return r, evs
}

func req(name, script string, timeout time.Duration) runner.Request {
	spec := &v1.ScheduleSpec{
		Name: name, Cluster: "dev",
		Containers: []*v1.Container{{Name: "main", Essential: true, Command: []string{"sh", "-c", script}, Environment: map[string]string{"MODE": "test"}}},
		Timing:     &v1.Timing{TaskCount: 1},
	}
	if timeout > 0 {
		spec.Timing.Timeout = durationpb.New(timeout)
	}
	at := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	return runner.Request{RunID: v1.RunID(name, at, v1.Trigger_TRIGGER_SCHEDULE), Spec: spec, ScheduledAt: at, Trigger: v1.Trigger_TRIGGER_SCHEDULE,
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
}

func TestTimeoutTermThenKill(t *testing.T) {
	t.Parallel()
	r, evs := setup(t, logsink.NewJSON(discard{}), 300*time.Millisecond)
	ctx := context.Background()

	// Ignores SIGTERM: killed after the grace period (128+9).
	res, err := r.Run(ctx, req("stubborn", `trap "" TERM; while :; do sleep 0.05; done`, 200*time.Millisecond))
	require.NoError(t, err)
	require.Len(t, res.TaskIDs, 1)
	// Exits on SIGTERM with its own code.
	res2, err := r.Run(ctx, req("polite", `trap "exit 42" TERM; while :; do sleep 0.05; done`, 200*time.Millisecond))
	require.NoError(t, err)

	require.Eventually(t, func() bool { return evs.stopped(res.TaskIDs[0]) != nil && evs.stopped(res2.TaskIDs[0]) != nil }, 10*time.Second, 10*time.Millisecond)
	s := evs.stopped(res.TaskIDs[0])
	require.Equal(t, int32(137), s.Containers[0].ExitCode)
	require.Equal(t, StopCodeUserInitiated, s.StopCode)
	require.Contains(t, s.StoppedReason, "timeout 200ms exceeded")
	require.NotNil(t, s.StoppingAt)
	p := evs.stopped(res2.TaskIDs[0])
	require.Equal(t, int32(42), p.Containers[0].ExitCode)
}

func TestStopAndStartFailure(t *testing.T) {
	t.Parallel()
	r, evs := setup(t, logsink.NewJSON(discard{}), time.Second)
	ctx := context.Background()
	q := req("long", `sleep 30`, 0)
	res, err := r.Run(ctx, q)
	require.NoError(t, err)
	active, err := r.Active(ctx, q.Spec, nil)
	require.NoError(t, err)
	require.Equal(t, []runner.Task{{ID: res.TaskIDs[0], RunID: q.RunID}}, active)
	require.NoError(t, r.Stop(ctx, q.Spec, nil, res.TaskIDs, "taskyard: replaced by run x"))
	require.Eventually(t, func() bool { return evs.stopped(res.TaskIDs[0]) != nil }, 10*time.Second, 10*time.Millisecond)
	s := evs.stopped(res.TaskIDs[0])
	require.Equal(t, "taskyard: replaced by run x", s.StoppedReason)
	require.Equal(t, int32(128+15), s.Containers[0].ExitCode)

	bad := req("bad", "", 0)
	bad.Spec.Containers[0].Command = []string{"/nonexistent/binary"}
	res, err = r.Run(ctx, bad)
	require.NoError(t, err)
	require.Empty(t, res.TaskIDs)
	require.Len(t, res.Failures, 1)
	require.Equal(t, "CannotStartContainerError", res.Failures[0].Reason)
	require.Eventually(t, func() bool { return evs.stopped(res.Failures[0].Arn) != nil }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, StopCodeFailedToStart, evs.stopped(res.Failures[0].Arn).StopCode)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// eventTime decodes Fluent Forward's EventTime extension (type 0).
type eventTime struct{ time.Time }

func (e *eventTime) MarshalMsgpack() ([]byte, error) {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, uint32(e.Unix()))
	binary.BigEndian.PutUint32(b[4:], uint32(e.Nanosecond()))
	return b, nil
}

func (e *eventTime) UnmarshalMsgpack(b []byte) error {
	if len(b) != 8 {
		return errors.New("bad EventTime")
	}
	e.Time = time.Unix(int64(binary.BigEndian.Uint32(b[:4])), int64(binary.BigEndian.Uint32(b[4:])))
	return nil
}

// forwardServer is a minimal Fluent Forward receiver: it decodes Message
// mode entries [tag, time, record, option] and acks chunks.
type forwardServer struct {
	ln   net.Listener
	mu   sync.Mutex
	recs []map[string]any
	tags []string
}

func newForwardServer(t *testing.T) *forwardServer {
	t.Helper()
	msgpack.RegisterExt(0, (*eventTime)(nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &forwardServer{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *forwardServer) serve(c net.Conn) {
	defer c.Close()
	dec := msgpack.NewDecoder(c)
	for {
		var entry []any
		if err := dec.Decode(&entry); err != nil {
			return
		}
		if len(entry) < 3 {
			return
		}
		tag, _ := entry[0].(string)
		rec, _ := entry[2].(map[string]any)
		s.mu.Lock()
		s.tags = append(s.tags, tag)
		s.recs = append(s.recs, rec)
		s.mu.Unlock()
		if len(entry) == 4 {
			if opt, ok := entry[3].(map[string]any); ok && opt["chunk"] != nil {
				b, _ := msgpack.Marshal(map[string]any{"ack": opt["chunk"]})
				_, _ = c.Write(b)
			}
		}
	}
}

func TestLogLinesOverFluentForward(t *testing.T) {
	t.Parallel()
	fs := newForwardServer(t)
	sink, err := logsink.NewForward(fs.ln.Addr().String(), logging.Discard())
	require.NoError(t, err)
	r, evs := setup(t, sink, time.Second)
	q := req("logger", `echo "{\"level\":\"error\",\"mode\":\"$MODE\",\"run\":\"$TASKYARD_RUN_ID\",\"tp\":\"$TRACEPARENT\",\"at\":\"$TASKYARD_SCHEDULED_AT\"}"; echo plain >&2`, 0)
	res, err := r.Run(context.Background(), q)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return evs.stopped(res.TaskIDs[0]) != nil }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return len(fs.recs) == 2
	}, 10*time.Second, 10*time.Millisecond)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	bySource := map[string]map[string]any{}
	for i, rec := range fs.recs {
		bySource[rec["source"].(string)] = rec
		require.Equal(t, "main-firelens-"+q.RunID+"-0", fs.tags[i])
	}
	out := bySource["stdout"]
	require.Equal(t, `{"level":"error","mode":"test","run":"`+q.RunID+`","tp":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","at":"2026-06-01T10:00:00Z"}`, out["log"])
	require.Equal(t, "dev", out["ecs_cluster"])
	require.Equal(t, res.TaskIDs[0], out["ecs_task_arn"])
	require.Equal(t, "taskyard-job-logger", out["ecs_task_definition"])
	require.Equal(t, "main", out["container_name"])
	require.Equal(t, q.RunID, out["taskyard_run_id"])
	require.Equal(t, "plain", bySource["stderr"]["log"])
}
