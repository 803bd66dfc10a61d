// Package e2e runs exitwatch next to the real scheduler (exec runner) on an
// embedded NATS. The scheduler is imported by this test only; the daemons
// share nothing but the contract in production code.
package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	exitwatch "github.com/taskyard/taskyard/services/exitwatch/app"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	scheduler "github.com/taskyard/taskyard/services/scheduler/app"
)

type hook struct {
	*httptest.Server
	mu     sync.Mutex
	alerts []*v1.Alert
	bodies []string
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a := &v1.Alert{}
		if err := protojson.Unmarshal(body, a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.alerts = append(h.alerts, a)
		h.bodies = append(h.bodies, string(body))
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) first(kind, schedule string) (*v1.Alert, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, a := range h.alerts {
		if a.GetKind() == kind && a.GetSchedule() == schedule {
			return a, h.bodies[i]
		}
	}
	return nil, ""
}

func spec(name, expr, script string, timeout time.Duration) *v1.ScheduleSpec {
	s := &v1.ScheduleSpec{
		Name: name, Cluster: "dev", Type: "scheduled",
		Containers: []*v1.Container{{Name: "job", Image: "local", Memory: 64, Essential: true, Command: []string{"sh", "-c", script}}},
		Timing: &v1.Timing{Expression: expr, Timezone: "UTC", TaskCount: 1, Concurrency: "forbid", Enabled: true,
			StartingDeadline: durationpb.New(5 * time.Second), CatchUp: &v1.CatchUp{Mode: "none"}},
		Alerts: &v1.AlertSettings{Runbook: "https://runbooks.example.com/" + name, Severity: "critical"},
	}
	if timeout > 0 {
		s.Timing.Timeout = durationpb.New(timeout)
	}
	return s
}

func create(t *testing.T, nc *nats.Conn, specs ...*v1.ScheduleSpec) {
	t.Helper()
	data, err := proto.Marshal(&v1.ApplyRequest{Schedules: specs, AppliedBy: "e2e"})
	require.NoError(t, err)
	var rep v1.ApplyReply
	require.Eventually(t, func() bool {
		m, err := nc.Request(v1.Subjects{}.Ctl("scheduler", "create"), data, 5*time.Second)
		return err == nil && proto.Unmarshal(m.Data, &rep) == nil
	}, 20*time.Second, 100*time.Millisecond)
	require.Empty(t, rep.GetError())
	require.True(t, rep.GetApplied())
}

// TestWithScheduler: a job exiting 3 yields RunFinished FAILED and a webhook
// POST naming exit code 3 and the runbook; a run past its timeout yields
// run_overrun; stopping the scheduler yields run_missed.
func TestWithScheduler(t *testing.T) {
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	natsCfg := natsconn.Config{URL: srv.ClientURL(), Prefix: v1.DefaultPrefix, Replicas: 1}

	clusters := filepath.Join(t.TempDir(), "clusters")
	require.NoError(t, os.MkdirAll(clusters, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(clusters, "dev.yml"), []byte("name: dev\ncluster: dev\nlaunchType: EXTERNAL\nnetworkMode: host\ntaskLimit: 20\n"), 0o644))

	var finishedMu sync.Mutex
	var finished []*v1.RunFinished
	sub, err := nc.Subscribe("taskyard.run.finished.>", func(m *nats.Msg) {
		f := &v1.RunFinished{}
		if proto.Unmarshal(m.Data, f) == nil {
			finishedMu.Lock()
			finished = append(finished, f)
			finishedMu.Unlock()
		}
	})
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()

	wh := newHook(t)
	ecfg := exitwatch.DevConfig(natsCfg, "127.0.0.1:0", clusters, wh.URL)
	ecfg.Tick, ecfg.MissedGrace = 50*time.Millisecond, time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ectx, ecancel := context.WithCancel(context.Background())
	edone := make(chan error, 1)
	go func() {
		edone <- exitwatch.Run(ectx, ecfg, exitwatch.Deps{Log: logging.New(io.Discard, 0, "exitwatch"), Listener: ln})
	}()
	defer func() { ecancel(); require.NoError(t, <-edone) }()

	var scfg scheduler.Config
	scfg.NATS, scfg.Runner, scfg.Instance, scfg.ClustersDir = natsCfg, scheduler.RunnerExec, "e2e", clusters
	// The lease bucket TTL must match what exitwatch ensured (the default).
	scfg.LeaseTTL, scfg.ReleaseLease, scfg.KillGrace, scfg.LogLevel = 10*time.Second, true, 2*time.Second, "info"
	scfg.WorkDir = t.TempDir()
	sctx, scancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() {
		sdone <- scheduler.Run(sctx, scfg, scheduler.Deps{Log: logging.New(io.Discard, 0, "scheduler"), Stdout: io.Discard})
	}()
	schedulerStopped := false
	defer func() {
		if !schedulerStopped {
			scancel()
			<-sdone
		}
	}()

	create(t, nc,
		spec("fails", "rate(3 seconds)", "echo working; exit 3", 0),
		// Ignores SIGTERM: runs past its 1s timeout until the kill grace ends.
		spec("slow", "rate(5 seconds)", "trap '' TERM; sleep 4", time.Second),
		spec("heartbeat", "rate(2 seconds)", "exit 0", 0),
	)

	// exit 3 -> RunFinished FAILED + webhook POST with exit code and runbook.
	require.Eventually(t, func() bool { a, _ := wh.first("run_failed", "fails"); return a != nil }, 30*time.Second, 50*time.Millisecond)
	a, body := wh.first("run_failed", "fails")
	require.Equal(t, "run_failed", kindOf(t, body))
	require.Equal(t, "3", a.GetFields()["exit_code"])
	require.Equal(t, "job", a.GetFields()["container"])
	require.Equal(t, "https://runbooks.example.com/fails", a.GetRunbookUrl())
	finishedMu.Lock()
	var failed *v1.RunFinished
	for _, f := range finished {
		if f.GetRunId() == a.GetRunId() {
			failed = f
		}
	}
	finishedMu.Unlock()
	require.NotNil(t, failed)
	require.Equal(t, v1.Outcome_OUTCOME_FAILED, failed.GetOutcome())
	require.Contains(t, failed.GetReason(), "container job exited 3")

	// Past its timeout: run_overrun while it runs, then TIMED_OUT.
	require.Eventually(t, func() bool { a, _ := wh.first("run_overrun", "slow"); return a != nil }, 90*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		finishedMu.Lock()
		defer finishedMu.Unlock()
		for _, f := range finished {
			if f.GetSchedule() == "slow" {
				return f.GetOutcome() == v1.Outcome_OUTCOME_TIMED_OUT
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond)

	// The heartbeat succeeded while the scheduler ran; stopping the
	// scheduler makes its next fires missed.
	require.Eventually(t, func() bool {
		finishedMu.Lock()
		defer finishedMu.Unlock()
		for _, f := range finished {
			if f.GetSchedule() == "heartbeat" && f.GetOutcome() == v1.Outcome_OUTCOME_SUCCEEDED {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond)
	stopAt := time.Now()
	scancel()
	require.NoError(t, <-sdone)
	schedulerStopped = true
	require.Eventually(t, func() bool { a, _ := wh.first("run_missed", "heartbeat"); return a != nil }, 30*time.Second, 50*time.Millisecond)
	m, _ := wh.first("run_missed", "heartbeat")
	expected, err := time.Parse(time.RFC3339, m.GetFields()["expected_at"])
	require.NoError(t, err)
	require.False(t, expected.Before(stopAt.Add(-3*time.Second)), "the missed fire is one after the scheduler stopped (expected %s, stopped %s)", expected, stopAt)
	require.Equal(t, "https://runbooks.example.com/heartbeat", m.GetRunbookUrl())
}

// kindOf reads the "kind" of a protojson Alert body (protojson's spacing
// varies between builds, so bodies are parsed, not compared as text).
func kindOf(t *testing.T, body string) string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	k, _ := m["kind"].(string)
	return k
}
