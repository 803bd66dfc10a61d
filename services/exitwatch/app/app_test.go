package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/app"
	"github.com/taskyard/taskyard/services/exitwatch/internal/awstest"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// hook is the generic webhook alerts are sent to.
type hook struct {
	*httptest.Server
	mu     sync.Mutex
	alerts []*v1.Alert
	raw    []string
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var a v1.Alert
		if err := protojson.Unmarshal(body, &a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.alerts = append(h.alerts, &a)
		h.raw = append(h.raw, string(body))
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) find(kind, schedule string) (*v1.Alert, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, a := range h.alerts {
		if a.GetKind() == kind && a.GetSchedule() == schedule {
			return a, h.raw[i]
		}
	}
	return nil, ""
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

const profile = `name: batch
cluster: arn:aws:ecs:eu-west-1:123456789012:cluster/batch
launchType: FARGATE
network:
  subnets: [subnet-0a1b2c]
  securityGroups: [sg-0123abcd]
executionRoleArn: arn:aws:iam::123456789012:role/taskyard-execution
taskLimit: 50
`

const checks = `checks:
  - name: backup
    period: 1h
    grace: 5m
    runbook: https://runbooks.example.com/backup
`

func TestRunEndToEnd(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	q := awstest.NewSQS()
	defer q.Close()
	wh := newHook(t)
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "clusters"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "clusters", "batch.yml"), []byte(profile), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "checks.yml"), []byte(checks), 0o644))

	// The schedule the failing run belongs to, as the scheduler applies it.
	spec := &v1.ScheduleSpec{Name: "nightly-report", Cluster: "batch", Type: "scheduled",
		Containers: []*v1.Container{{Name: "app", Image: "report:1", Memory: 512, Essential: true}},
		Timing:     &v1.Timing{Expression: "cron(0 3 * * ? *)", Enabled: true, TaskCount: 1, Concurrency: "forbid"},
		Alerts:     &v1.AlertSettings{Runbook: "https://runbooks.example.com/nightly-report", Severity: "critical"}}
	data, err := proto.Marshal(spec)
	require.NoError(t, err)
	_, err = env.KV(t, "taskyard-schedules").Put(context.Background(), spec.GetName(), data)
	require.NoError(t, err)

	var cfg app.Config
	cfg.NATS = natsconn.Config{URL: env.URL, Prefix: "taskyard", Replicas: 1}
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.ClustersDir = filepath.Join(dir, "clusters")
	cfg.ChecksFile = filepath.Join(dir, "checks.yml")
	cfg.AlertWebhook = wh.URL
	cfg.SQSQueueURL, cfg.SQSWait, cfg.AWSEndpoint = q.QueueURL, time.Second, q.URL
	cfg.ECSPollInterval = 30 * time.Second
	cfg.LostAfter, cfg.StuckPendingAfter, cfg.MissedGrace, cfg.SilentGrace = 15*time.Minute, 10*time.Minute, time.Minute, 2*time.Minute
	cfg.OverlapRuns, cfg.Workers, cfg.ReplayFrom, cfg.Tick = 2, 4, time.Hour, 20*time.Millisecond
	awsCfg := aws.Config{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")}
	// The daemon's clock starts just after the recorded ECS events below
	// (exit3-out-of-order.json, 03:00–03:04:40): the run they finish was
	// dispatched minutes ago, not a day ago, whatever today is — else a
	// tick that comes before the SQS messages judges it lost.
	clk := &clock{t: time.Date(2026, 11, 21, 3, 4, 41, 0, time.UTC)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	base := "http://" + ln.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, cfg, app.Deps{Log: logging.Discard(), NC: env.NC, Now: clk.Now, AWS: &awsCfg, Listener: ln})
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)

	t.Run("sqs run_failed reaches the webhook", func(t *testing.T) {
		raw, err := os.ReadFile("../testdata/ecs-events/exit3-out-of-order.json")
		require.NoError(t, err)
		var evs []json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &evs))
		runID := "nightly-report-20261121T030000Z-s-9f2c4e1a7b3d5e60"
		_, err = v1.Publish(ctx, env.JS, "taskyard.run.dispatched.nightly-report", &v1.RunDispatched{RunId: runID, Schedule: "nightly-report", Cluster: "batch",
			ScheduledAt: timestamppb.New(time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)), DispatchedAt: timestamppb.New(time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)),
			Trigger: v1.Trigger_TRIGGER_SCHEDULE, Runner: "ecs", TaskCount: 1,
			TaskIds: []string{"arn:aws:ecs:eu-west-1:123456789012:task/batch/7c1f3e9a2b4d4f6e8a0c1e3f5a7b9d1e"}}, runID)
		require.NoError(t, err)
		for _, e := range evs {
			q.Send(string(e))
		}
		require.Eventually(t, func() bool { a, _ := wh.find("run_failed", "nightly-report"); return a != nil }, 15*time.Second, 20*time.Millisecond)
		a, body := wh.find("run_failed", "nightly-report")
		require.Equal(t, "run_failed", kindOf(t, body))
		require.Equal(t, "3", a.GetFields()["exit_code"], "alert: %s", body)
		require.Equal(t, "https://runbooks.example.com/nightly-report", a.GetRunbookUrl())
		require.Equal(t, "batch", a.GetCluster(), "cluster ARN mapped to the profile name")
		require.Eventually(t, func() bool { return q.Len() == 0 }, 5*time.Second, 20*time.Millisecond, "SQS messages deleted after publishing")
		require.Empty(t, q.Problems)
	})

	t.Run("ping success, failure and missing ping", func(t *testing.T) {
		get := func(path string, body string) int {
			method := http.MethodGet
			if body != "" {
				method = http.MethodPost
			}
			req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		require.Equal(t, http.StatusNotFound, get("/ping/unknown", ""))
		require.Equal(t, http.StatusNotFound, get("/ping/backup/nonsense", ""))
		require.Equal(t, http.StatusOK, get("/ping/backup/start?rid=r1", ""))
		clk.Add(time.Minute)
		require.Equal(t, http.StatusOK, get("/ping/backup?rid=r1", ""))
		require.Eventually(t, func() bool { return recordOutcome(t, env, "backup", v1.Outcome_OUTCOME_SUCCEEDED) }, 10*time.Second, 20*time.Millisecond)

		require.Equal(t, http.StatusOK, get("/ping/backup/fail", "pg_dump: error: connection to server failed: disk full"))
		require.Eventually(t, func() bool { a, _ := wh.find("run_failed", "backup"); return a != nil }, 10*time.Second, 20*time.Millisecond)
		a, _ := wh.find("run_failed", "backup")
		require.Equal(t, "1", a.GetFields()["exit_code"])
		require.Contains(t, a.GetFields()["container_reason"], "disk full")
		require.Equal(t, "https://runbooks.example.com/backup", a.GetRunbookUrl())

		require.Equal(t, http.StatusOK, get("/ping/backup/0", ""))
		require.Eventually(t, func() bool { a, _ := wh.find("recovered", "backup"); return a != nil }, 10*time.Second, 20*time.Millisecond)

		// No ping for period + grace: run_missed.
		clk.Add(66 * time.Minute)
		require.Eventually(t, func() bool { a, _ := wh.find("run_missed", "backup"); return a != nil }, 10*time.Second, 20*time.Millisecond)
	})

	t.Run("status over ctl", func(t *testing.T) {
		msg, err := env.NC.Request("taskyard.ctl.exitwatch.status", nil, 5*time.Second)
		require.NoError(t, err)
		var rep v1.StatusReply
		require.NoError(t, proto.Unmarshal(msg.Data, &rep))
		states := map[string]string{}
		for _, e := range rep.GetEntries() {
			states[e.GetName()] = e.GetState()
		}
		require.Equal(t, "down", states["backup"])
		require.Equal(t, "down", states["nightly-report"])
	})

	t.Run("metrics and health", func(t *testing.T) {
		resp, err := http.Get(base + "/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(body), "exitwatch_runs_finished")
		resp, err = http.Get(base + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})
}

// recordOutcome reports whether a run record of schedule has outcome.
func recordOutcome(t *testing.T, env *natstest.Env, schedule string, o v1.Outcome) bool {
	kv := env.KV(t, "taskyard-runs")
	keys, err := kv.ListKeys(context.Background())
	require.NoError(t, err)
	for k := range keys.Keys() {
		e, err := kv.Get(context.Background(), k)
		if err != nil {
			continue
		}
		var r v1.RunRecord
		if proto.Unmarshal(e.Value(), &r) == nil && r.GetSchedule() == schedule && r.GetOutcome() == o {
			return true
		}
	}
	return false
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cfg := app.Config{NATS: natsconn.Config{URL: "nats://x", Prefix: "taskyard", Replicas: 1}, HTTPListen: ":0", SQSWait: time.Minute, ECSPollInterval: time.Millisecond,
		OverlapRuns: 0, Workers: 0, Tick: time.Second, ReplayFrom: time.Hour, LostAfter: time.Minute, StuckPendingAfter: time.Minute,
		SQSQueueURL: "queue", AlertWebhook: "ftp://x", RoutesFile: "/nonexistent/routes.yml"}
	err := cfg.Validate()
	for _, want := range []string{"sqs-wait: 1m0s", "ecs-poll-interval", "overlap-runs: 0", "workers: 0", `sqs-queue-url: "queue"`, `alert-webhook: "ftp://x"`, "routes: stat /nonexistent/routes.yml"} {
		require.ErrorContains(t, err, want)
	}
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

// Two replicas share the consumers: every failed run reaches the webhook
// exactly once.
func TestTwoReplicasDeliverOnce(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	wh := newHook(t)
	ctx, cancel := context.WithCancel(context.Background())
	var dones []chan error
	for i := range 2 {
		cfg := app.DevConfig(natsconn.Config{URL: env.URL, Prefix: "taskyard", Replicas: 1}, "127.0.0.1:0", "", wh.URL)
		cfg.Instance = "replica-" + strconv.Itoa(i)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- app.Run(ctx, cfg, app.Deps{Log: logging.Discard(), NC: env.NC, Listener: ln}) }()
		dones = append(dones, done)
	}
	defer func() {
		cancel()
		for _, d := range dones {
			require.NoError(t, <-d)
		}
	}()
	// Both replicas are up once their delivery consumers exist.
	require.Eventually(t, func() bool {
		_, err := env.JS.Consumer(ctx, "ALERTS", "exitwatch-deliver-webhook")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	const runs = 20
	at := time.Now().UTC()
	for i := range runs {
		id := v1.RunID("twice", at.Add(time.Duration(i)*time.Second), v1.Trigger_TRIGGER_MANUAL)
		_, err := v1.Publish(ctx, env.JS, "taskyard.run.dispatched.twice", &v1.RunDispatched{RunId: id, Schedule: "twice", Cluster: "dev",
			DispatchedAt: timestamppb.New(at), TaskIds: []string{"t-" + id}, TaskCount: 1, Runner: "exec"}, id)
		require.NoError(t, err)
		_, err = v1.Publish(ctx, env.JS, "taskyard.task.dev.twice", &v1.TaskStateChanged{TaskArn: "t-" + id, RunId: id, Schedule: "twice", Cluster: "dev",
			LastStatus: "STOPPED", Version: 3, StartedAt: timestamppb.New(at), StoppedAt: timestamppb.New(at.Add(time.Second)),
			Containers: []*v1.ContainerState{{Name: "job", ExitCode: 1, HasExitCode: true}}}, "t-"+id+":3")
		require.NoError(t, err)
	}
	count := func() map[string]int {
		wh.mu.Lock()
		defer wh.mu.Unlock()
		seen := map[string]int{}
		for _, a := range wh.alerts {
			if a.GetKind() == "run_failed" {
				seen[a.GetRunId()]++
			}
		}
		return seen
	}
	require.Eventually(t, func() bool { return len(count()) == runs }, 20*time.Second, 20*time.Millisecond)
	// Everything consumed and acknowledged: no second delivery is coming.
	for _, c := range []struct{ stream, name string }{{"RUNS", "exitwatch-tracker"}, {"ALERTS", "exitwatch-deliver-webhook"}} {
		require.Eventually(t, func() bool {
			cons, err := env.JS.Consumer(ctx, c.stream, c.name)
			if err != nil {
				return false
			}
			info, err := cons.Info(ctx)
			return err == nil && info.NumPending == 0 && info.NumAckPending == 0
		}, 20*time.Second, 20*time.Millisecond, c.name)
	}
	for id, n := range count() {
		require.Equal(t, 1, n, id)
	}
}
