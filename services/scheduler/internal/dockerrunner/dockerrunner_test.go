package dockerrunner

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

// dockerClient returns a client of the local engine, or skips the test
// (fails it when TASKYARD_E2E_REQUIRED=1: CI has an engine).
func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = cli.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("TASKYARD_E2E_REQUIRED") == "1" {
			t.Fatalf("no Docker engine reachable and TASKYARD_E2E_REQUIRED=1: %v", err)
		}
		t.Skipf("SKIP: no Docker engine reachable (%v); set TASKYARD_E2E_REQUIRED=1 to make this a failure", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

var (
	jobOnce  sync.Once
	jobImage string
	jobErr   error
)

// buildJobImage builds testdata/job as a static binary into a FROM scratch
// image (no registry needed) once per test binary.
func buildJobImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	jobOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dockerrunner-job")
		if err != nil {
			jobErr = err
			return
		}
		defer os.RemoveAll(dir)
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "job"), "./testdata/job")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			jobErr = errors.New("go build testdata/job: " + err.Error() + ": " + string(out))
			return
		}
		bin, err := os.ReadFile(filepath.Join(dir, "job"))
		if err != nil {
			jobErr = err
			return
		}
		var ctxTar bytes.Buffer
		tw := tar.NewWriter(&ctxTar)
		for _, f := range []struct {
			name string
			mode int64
			data []byte
		}{
			{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY job /job\nENTRYPOINT [\"/job\"]\n")},
			{"job", 0o755, bin},
		} {
			_ = tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))})
			_, _ = tw.Write(f.data)
		}
		_ = tw.Close()
		jobImage = "taskyard-dockerrunner-test-job:" + randHex(4)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		resp, err := cli.ImageBuild(ctx, &ctxTar, build.ImageBuildOptions{Tags: []string{jobImage}, Remove: true, ForceRemove: true})
		if err != nil {
			jobErr = err
			return
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if bytes.Contains(out, []byte(`"error"`)) {
			jobErr = errors.New("docker build: " + string(out))
		}
	})
	require.NoError(t, jobErr)
	return jobImage
}

func TestMain(m *testing.M) {
	code := m.Run()
	if jobImage != "" {
		if cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err == nil {
			_, _ = cli.ImageRemove(context.Background(), jobImage, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	}
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

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

func (e *taskEvents) statuses(id string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		if ev.TaskArn == id {
			out = append(out, ev.LastStatus)
		}
	}
	return out
}

func setup(t *testing.T, cfg Config) (*Runner, *taskEvents) {
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
		if err != nil {
			t.Errorf("decode %s: %v", m.Subject, err)
			return
		}
		evs.mu.Lock()
		evs.evs = append(evs.evs, msg.(*v1.TaskStateChanged))
		evs.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	cfg.JS, cfg.Log = js, logging.Discard()
	r := New(cfg)
	t.Cleanup(func() { r.Shutdown(true) })
	return r, evs
}

func request(name, img string, cmd []string, memory int32, timeout time.Duration) runner.Request {
	spec := &v1.ScheduleSpec{
		Name: name + "-" + randHex(3), Cluster: "local",
		Containers: []*v1.Container{{Name: "main", Image: img, Essential: true, Command: cmd, Memory: memory, Cpu: 256,
			Environment: map[string]string{"MODE": "test"}}},
		Timing: &v1.Timing{TaskCount: 1},
	}
	if timeout > 0 {
		spec.Timing.Timeout = durationpb.New(timeout)
	}
	at := time.Now().UTC().Truncate(time.Second)
	return runner.Request{RunID: v1.RunID(spec.Name, at, v1.Trigger_TRIGGER_MANUAL), Spec: spec, ScheduledAt: at, Trigger: v1.Trigger_TRIGGER_MANUAL}
}

// managed lists the containers of a schedule (any state).
func managed(t *testing.T, cli *client.Client, sched string) []container.Summary {
	t.Helper()
	list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelSchedule+"="+sched))})
	require.NoError(t, err)
	return list
}

func TestExitCodesLogsAndRemoval(t *testing.T) {
	cli := dockerClient(t)
	img := buildJobImage(t, cli)
	fs := newForwardServer(t)
	r, evs := setup(t, Config{Client: cli, FluentdAddress: fs.ln.Addr().String()})

	for _, tc := range []struct {
		name string
		code int32
	}{{"ok", 0}, {"fail", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			q := request(tc.name, img, []string{"exit", string(rune('0' + tc.code)), `{"level":"warn","msg":"hello"}`}, 64, 0)
			res, err := r.Run(context.Background(), q)
			require.NoError(t, err)
			require.Empty(t, res.Failures)
			require.Len(t, res.TaskIDs, 1)
			id := res.TaskIDs[0]
			require.Eventually(t, func() bool { return evs.stopped(id) != nil }, 60*time.Second, 50*time.Millisecond)
			ev := evs.stopped(id)
			require.Equal(t, []string{"PENDING", "RUNNING", "STOPPED"}, evs.statuses(id))
			require.Equal(t, "docker", ev.GetSource())
			require.Equal(t, q.RunID, ev.GetRunId())
			require.Equal(t, StopCodeEssentialExited, ev.GetStopCode())
			require.Len(t, ev.GetContainers(), 1)
			require.True(t, ev.GetContainers()[0].GetHasExitCode())
			require.Equal(t, tc.code, ev.GetContainers()[0].GetExitCode())
			// Removed after exit.
			require.Eventually(t, func() bool { return len(managed(t, cli, q.Spec.Name)) == 0 }, 30*time.Second, 100*time.Millisecond)
			// Both lines reached the fluentd address with the logrouter's fields.
			require.Eventually(t, func() bool { return len(fs.records(q.RunID)) == 2 }, 30*time.Second, 50*time.Millisecond,
				"log records of run %s: %v", q.RunID, fs.records(q.RunID))
			bySource := map[string]map[string]any{}
			for _, rec := range fs.records(q.RunID) {
				bySource[rec["source"].(string)] = rec
				require.Equal(t, "local", rec["cluster"])
				require.Equal(t, q.Spec.Name, rec["service"])
				require.Equal(t, "main", rec["container"])
				require.Equal(t, q.RunID+"-0", rec["task"])
			}
			require.Equal(t, `{"level":"warn","msg":"hello"}`, bySource["stdout"]["log"])
			require.Equal(t, "run "+q.RunID, bySource["stderr"]["log"])
		})
	}
}

func TestOOMKilled(t *testing.T) {
	cli := dockerClient(t)
	img := buildJobImage(t, cli)
	r, evs := setup(t, Config{Client: cli})
	q := request("oom", img, []string{"oom"}, 16, 0)
	res, err := r.Run(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, res.TaskIDs, 1)
	require.Eventually(t, func() bool { return evs.stopped(res.TaskIDs[0]) != nil }, 60*time.Second, 50*time.Millisecond)
	ev := evs.stopped(res.TaskIDs[0])
	c := ev.GetContainers()[0]
	require.Equal(t, int32(137), c.GetExitCode())
	require.Equal(t, ReasonOutOfMemory, c.GetReason())
	require.Contains(t, ev.GetStoppedReason(), "OutOfMemoryError")
}

func TestMissingImageFailsToStart(t *testing.T) {
	cli := dockerClient(t)
	r, evs := setup(t, Config{Client: cli, PullTimeout: 30 * time.Second})
	// A registry name that cannot resolve: the pull fails whether or not
	// this machine reaches a registry.
	q := request("nopull", "registry.invalid/taskyard/no-such-image:1", nil, 0, 0)
	res, err := r.Run(context.Background(), q)
	require.NoError(t, err)
	require.Empty(t, res.TaskIDs)
	require.Len(t, res.Failures, 1)
	require.Equal(t, "CannotPullContainerError", res.Failures[0].GetReason())
	require.Contains(t, res.Failures[0].GetDetail(), "registry.invalid/taskyard/no-such-image:1")
	id := res.Failures[0].GetArn()
	require.Eventually(t, func() bool { return evs.stopped(id) != nil }, 30*time.Second, 50*time.Millisecond)
	ev := evs.stopped(id)
	require.Equal(t, StopCodeFailedToStart, ev.GetStopCode())
	require.Contains(t, ev.GetStoppedReason(), "CannotPullContainerError")
	require.Empty(t, managed(t, cli, q.Spec.Name))
}

func TestTimeoutStopsAndKeep(t *testing.T) {
	cli := dockerClient(t)
	img := buildJobImage(t, cli)
	r, evs := setup(t, Config{Client: cli, Keep: true, KillGrace: time.Second})
	q := request("timeout", img, []string{"sleep", "5m"}, 0, 2*time.Second)
	res, err := r.Run(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, res.TaskIDs, 1)
	act, err := r.Active(context.Background(), q.Spec, nil)
	require.NoError(t, err)
	require.Equal(t, []runner.Task{{ID: res.TaskIDs[0], RunID: q.RunID}}, act)
	require.Eventually(t, func() bool { return evs.stopped(res.TaskIDs[0]) != nil }, 60*time.Second, 50*time.Millisecond)
	ev := evs.stopped(res.TaskIDs[0])
	require.Equal(t, StopCodeUserInitiated, ev.GetStopCode())
	require.Contains(t, ev.GetStoppedReason(), "timeout 2s exceeded")
	require.Equal(t, int32(143), ev.GetContainers()[0].GetExitCode())
	// Keep: the exited container stays.
	list := managed(t, cli, q.Spec.Name)
	require.Len(t, list, 1)
	require.Equal(t, "exited", list[0].State)
	require.NoError(t, cli.ContainerRemove(context.Background(), list[0].ID, container.RemoveOptions{Force: true}))
}

func TestAdoptsTasksOfAnotherReplica(t *testing.T) {
	cli := dockerClient(t)
	img := buildJobImage(t, cli)
	first, evs := setup(t, Config{Client: cli, KillGrace: time.Second})
	q := request("adopt", img, []string{"sleep", "5m"}, 0, 0)
	res, err := first.Run(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, res.TaskIDs, 1)
	// The first replica goes away without stopping its task.
	first.Shutdown(false)

	second := New(Config{Client: cli, JS: first.cfg.JS, Log: logging.Discard(), KillGrace: time.Second})
	t.Cleanup(func() { second.Shutdown(true) })
	act, err := second.Active(context.Background(), q.Spec, nil)
	require.NoError(t, err)
	require.Equal(t, []runner.Task{{ID: res.TaskIDs[0], RunID: q.RunID}}, act)
	require.NoError(t, second.Stop(context.Background(), q.Spec, nil, []string{res.TaskIDs[0]}, "operator said so"))
	require.Eventually(t, func() bool { return evs.stopped(res.TaskIDs[0]) != nil }, 60*time.Second, 50*time.Millisecond)
	ev := evs.stopped(res.TaskIDs[0])
	require.Equal(t, "operator said so", ev.GetStoppedReason())
	require.Greater(t, ev.GetVersion(), int64(2))
	require.Eventually(t, func() bool { return len(managed(t, cli, q.Spec.Name)) == 0 }, 30*time.Second, 100*time.Millisecond)
	_, err = cli.ContainerInspect(context.Background(), containerName(q.RunID, 0, "main"))
	require.True(t, cerrdefs.IsNotFound(err), "container still there: %v", err)
}

// waitSleeping waits until the job in container id printed "sleeping":
// its SIGTERM handler is in place (see testdata/job).
func waitSleeping(t *testing.T, cli *client.Client, id string) {
	t.Helper()
	require.Eventually(t, func() bool {
		rc, err := cli.ContainerLogs(context.Background(), id, container.LogsOptions{ShowStdout: true})
		if err != nil {
			return false
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return bytes.Contains(b, []byte("sleeping"))
	}, 60*time.Second, 50*time.Millisecond, "the job in %s never printed sleeping", id)
}

// removeOnFailure removes what a failed test left of schedule sched.
func removeOnFailure(t *testing.T, cli *client.Client, sched string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, c := range managed(t, cli, sched) {
			_ = cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
		}
	})
}

// TestRunAgainTakesOverTheRunsContainers: a leader that dies between the
// runner call and the publication of its decision leaves the next leader to
// run the fire again under the same run id. The containers the first one
// created are taken over — started if they never were — instead of failing
// with a name conflict or running the job twice.
func TestRunAgainTakesOverTheRunsContainers(t *testing.T) {
	cli := dockerClient(t)
	img := buildJobImage(t, cli)

	t.Run("created, never started", func(t *testing.T) {
		r, evs := setup(t, Config{Client: cli})
		q := request("created", img, []string{"exit", "3", "from the first dispatch"}, 0, 0)
		removeOnFailure(t, cli, q.Spec.Name)
		id := fmt.Sprintf("docker:task/%s/%s-0", q.Spec.GetCluster(), q.RunID)
		// What the dead leader did: create the container, nothing more.
		dead := &task{id: id, runID: q.RunID, schedule: q.Spec.GetName(), cluster: q.Spec.GetCluster(), created: time.Now()}
		cfg, hc, nc := r.containerConfig(q, dead, q.Spec.GetContainers()[0])
		_, err := cli.ContainerCreate(context.Background(), cfg, hc, nc, nil, containerName(q.RunID, 0, "main"))
		require.NoError(t, err)

		res, err := r.Run(context.Background(), q)
		require.NoError(t, err)
		require.Empty(t, res.Failures)
		require.Equal(t, []string{id}, res.TaskIDs)
		require.Eventually(t, func() bool { return evs.stopped(id) != nil }, 60*time.Second, 50*time.Millisecond)
		require.Equal(t, int32(3), evs.stopped(id).GetContainers()[0].GetExitCode(), "the taken-over container ran")
		require.Eventually(t, func() bool { return len(managed(t, cli, q.Spec.Name)) == 0 }, 30*time.Second, 100*time.Millisecond)
	})

	t.Run("running", func(t *testing.T) {
		first, evs := setup(t, Config{Client: cli, KillGrace: time.Second})
		q := request("running", img, []string{"sleep", "5m"}, 0, 0)
		removeOnFailure(t, cli, q.Spec.Name)
		res, err := first.Run(context.Background(), q)
		require.NoError(t, err)
		require.Len(t, res.TaskIDs, 1)
		id := res.TaskIDs[0]
		before := managed(t, cli, q.Spec.Name)
		require.Len(t, before, 1)
		first.Shutdown(false) // dies without stopping its task

		second := New(Config{Client: cli, JS: first.cfg.JS, Log: logging.Discard(), KillGrace: time.Second})
		t.Cleanup(func() { second.Shutdown(true) })
		again, err := second.Run(context.Background(), q)
		require.NoError(t, err)
		require.Empty(t, again.Failures)
		require.Equal(t, []string{id}, again.TaskIDs)
		after := managed(t, cli, q.Spec.Name)
		require.Len(t, after, 1, "the job runs once")
		require.Equal(t, before[0].ID, after[0].ID)
		require.Equal(t, "running", after[0].State)

		// The second replica watches it: a repeated Run is a no-op, Stop
		// stops it and its STOPPED event comes out.
		again, err = second.Run(context.Background(), q)
		require.NoError(t, err)
		require.Equal(t, []string{id}, again.TaskIDs)
		require.NoError(t, second.Stop(context.Background(), nil, nil, []string{id}, "operator said so"))
		require.Eventually(t, func() bool { return evs.stopped(id) != nil }, 60*time.Second, 50*time.Millisecond)
		require.Equal(t, "operator said so", evs.stopped(id).GetStoppedReason())
		require.Eventually(t, func() bool { return len(managed(t, cli, q.Spec.Name)) == 0 }, 30*time.Second, 100*time.Millisecond)
	})
}

// forwardServer is a minimal Fluent Forward receiver for what Docker's
// fluentd driver sends: Message mode entries [tag, time, record(, option)].
type forwardServer struct {
	ln   net.Listener
	mu   sync.Mutex
	recs []map[string]any
}

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
		if err := dec.Decode(&entry); err != nil || len(entry) < 3 {
			return
		}
		rec, _ := entry[2].(map[string]any)
		s.mu.Lock()
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

func (s *forwardServer) records(runID string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, r := range s.recs {
		if r["taskyard_run_id"] == runID {
			out = append(out, r)
		}
	}
	return out
}

func TestClusterLoadAdoptsOrphans(t *testing.T) {
	cli := dockerClient(t)
	img := buildJobImage(t, cli)
	first, evs := setup(t, Config{Client: cli, KillGrace: time.Second})
	q := request("orphan", img, []string{"sleep", "5m"}, 0, 0)
	q.Spec.Cluster = "orphans-" + randHex(3)
	res, err := first.Run(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, res.TaskIDs, 1)
	first.Shutdown(false)

	second := New(Config{Client: cli, JS: first.cfg.JS, Log: logging.Discard(), KillGrace: time.Second})
	t.Cleanup(func() { second.Shutdown(true) })
	n, err := second.ClusterLoad(context.Background(), &schedule.Profile{Name: q.Spec.Cluster})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	// The container ends on its own (here: stopped behind the runner's
	// back); the adopter reports it and removes it.
	docker := managed(t, cli, q.Spec.Name)
	require.Len(t, docker, 1)
	waitSleeping(t, cli, docker[0].ID)
	secs := 1
	require.NoError(t, cli.ContainerStop(context.Background(), docker[0].ID, container.StopOptions{Timeout: &secs}))
	require.Eventually(t, func() bool { return evs.stopped(res.TaskIDs[0]) != nil }, 60*time.Second, 50*time.Millisecond)
	require.Equal(t, int32(143), evs.stopped(res.TaskIDs[0]).GetContainers()[0].GetExitCode())
	require.Eventually(t, func() bool { return len(managed(t, cli, q.Spec.Name)) == 0 }, 30*time.Second, 100*time.Millisecond)
}
