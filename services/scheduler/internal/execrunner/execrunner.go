// Package execrunner runs a schedule's containers as local processes — the
// runner of `taskyard dev`, needing neither AWS nor Docker. The image is
// ignored: a container's entryPoint + command is executed directly, with the
// container's environment and the run's TASKYARD_* variables. Each process
// runs in its own process group so a timeout or a stop reaches its
// children.
//
// Like an ECS task, a task is the set of the schedule's containers; when an
// essential container exits the others are stopped, and the task is STOPPED
// once every container has exited. The runner publishes TaskStateChanged
// PENDING -> RUNNING -> STOPPED on <prefix>.task.<cluster>.<schedule>, with
// the exit code of every container, and sends every stdout/stderr line to a
// log sink with FireLens's field names.
package execrunner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/logsink"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

// Stop codes and reasons, as ECS spells them where ECS has one.
const (
	StopCodeEssentialExited = "EssentialContainerExited"
	StopCodeFailedToStart   = "TaskFailedToStart"
	StopCodeUserInitiated   = "UserInitiated"
	ReasonEssentialExited   = "Essential container in task exited"
)

// inheritedEnv are the daemon's variables passed on to tasks; everything
// else a task sees comes from its schedule.
var inheritedEnv = []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"}

// Config wires a Runner.
type Config struct {
	JS     jetstream.JetStream
	Prefix string
	Log    *slog.Logger
	Sink   logsink.Sink
	// KillGrace is the time between SIGTERM and SIGKILL (default 10 s).
	KillGrace time.Duration
	// Dir is the working directory of the processes ("" = the daemon's).
	Dir string
}

// Runner is the exec runner.
type Runner struct {
	cfg  Config
	subj v1.Subjects

	mu    sync.Mutex
	tasks map[string]*task
	wg    sync.WaitGroup
}

// New returns an exec runner.
func New(cfg Config) *Runner {
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 10 * time.Second
	}
	return &Runner{cfg: cfg, subj: v1.Subjects{Prefix: cfg.Prefix}, tasks: map[string]*task{}}
}

// Name is "exec".
func (r *Runner) Name() string { return "exec" }

type container struct {
	spec     *v1.Container
	cmd      *exec.Cmd
	exitCode int32
	hasExit  bool
	reason   string
	done     chan struct{}
}

type task struct {
	id       string
	runID    string
	schedule string
	cluster  string
	family   string
	version  int64
	created  time.Time
	started  time.Time
	conts    []*container

	mu         sync.Mutex
	stopCode   string
	stopReason string
	stopping   bool
	stoppingAt time.Time
}

// Wait blocks until every task started by the runner is STOPPED and its
// event published.
func (r *Runner) Wait() { r.wg.Wait() }

// Run starts spec.timing.task_count tasks.
func (r *Runner) Run(ctx context.Context, req runner.Request) (runner.Result, error) {
	spec := req.Spec
	n := int(spec.GetTiming().GetTaskCount())
	if n <= 0 {
		n = 1
	}
	family := v1.JobFamily(spec.GetName())
	res := runner.Result{TaskDefinition: family}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("exec:task/%s/%s-%d", spec.GetCluster(), req.RunID, i)
		if err := r.start(ctx, req, id, family); err != nil {
			res.Failures = append(res.Failures, &v1.DispatchFailure{Arn: id, Reason: "CannotStartContainerError", Detail: err.Error()})
			continue
		}
		res.TaskIDs = append(res.TaskIDs, id)
	}
	return res, nil
}

func (r *Runner) start(ctx context.Context, req runner.Request, id, family string) error {
	spec := req.Spec
	t := &task{id: id, runID: req.RunID, schedule: spec.GetName(), cluster: spec.GetCluster(), family: family, created: time.Now()}
	for _, c := range spec.GetContainers() {
		t.conts = append(t.conts, &container{spec: c, done: make(chan struct{})})
	}
	r.publish(ctx, t, "PENDING")

	env := r.baseEnv()
	for k, v := range req.Env() {
		env[k] = v
	}
	var startErr error
	for _, c := range t.conts {
		argv := append(slices.Clone(c.spec.GetEntryPoint()), c.spec.GetCommand()...)
		if len(argv) == 0 {
			startErr = fmt.Errorf("container %s has neither entryPoint nor command", c.spec.GetName())
			break
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = r.cfg.Dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cenv := map[string]string{}
		for k, v := range env {
			cenv[k] = v
		}
		for k, v := range c.spec.GetEnvironment() {
			cenv[k] = v
		}
		for k, v := range req.Env() { // the run's variables win
			cenv[k] = v
		}
		cmd.Env = envList(cenv)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			startErr = err
			break
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			startErr = err
			break
		}
		if err := cmd.Start(); err != nil {
			startErr = fmt.Errorf("container %s: %w", c.spec.GetName(), err)
			break
		}
		c.cmd = cmd
		var pipes sync.WaitGroup
		pipes.Add(2)
		go func() { defer pipes.Done(); r.lines(t, c, "stdout", stdout) }()
		go func() { defer pipes.Done(); r.lines(t, c, "stderr", stderr) }()
		go func() {
			pipes.Wait()
			err := cmd.Wait()
			c.exitCode, c.hasExit = exitCode(cmd, err)
			close(c.done)
		}()
	}
	if startErr != nil {
		t.mu.Lock()
		t.stopCode, t.stopReason = StopCodeFailedToStart, "CannotStartContainerError: "+startErr.Error()
		t.mu.Unlock()
		for _, c := range t.conts {
			if c.cmd == nil {
				close(c.done)
				c.reason = "CannotStartContainerError"
			}
		}
		r.signal(t, syscall.SIGKILL)
		r.wg.Add(1)
		go r.finish(t, nil)
		return startErr
	}
	t.started = time.Now()
	r.mu.Lock()
	r.tasks[id] = t
	r.mu.Unlock()
	r.publish(ctx, t, "RUNNING")

	var timeout <-chan time.Time
	if d := spec.GetTiming().GetTimeout(); d != nil && d.AsDuration() > 0 {
		tm := time.NewTimer(d.AsDuration())
		timeout = tm.C
		r.wg.Add(1)
		go r.finish(t, func() { tm.Stop() })
		go r.supervise(t, timeout, d.AsDuration())
		return nil
	}
	r.wg.Add(1)
	go r.finish(t, nil)
	go r.supervise(t, nil, 0)
	return nil
}

// supervise stops the task when an essential container exits or the
// timeout passes.
func (r *Runner) supervise(t *task, timeout <-chan time.Time, d time.Duration) {
	essentialDone := make(chan struct{})
	var once sync.Once
	for _, c := range t.conts {
		if c.spec.GetEssential() || len(t.conts) == 1 {
			go func() {
				<-c.done
				once.Do(func() { close(essentialDone) })
			}()
		}
	}
	allDone := make(chan struct{})
	go func() {
		for _, c := range t.conts {
			<-c.done
		}
		close(allDone)
	}()
	select {
	case <-allDone:
	case <-essentialDone:
		t.mu.Lock()
		if t.stopCode == "" {
			t.stopCode, t.stopReason = StopCodeEssentialExited, ReasonEssentialExited
		}
		t.mu.Unlock()
		r.terminate(t, allDone)
	case <-timeout:
		t.mu.Lock()
		if t.stopCode == "" {
			t.stopCode, t.stopReason = StopCodeUserInitiated, fmt.Sprintf("taskyard: timeout %s exceeded", d)
		}
		t.mu.Unlock()
		r.terminate(t, allDone)
	}
}

// terminate sends SIGTERM, then SIGKILL after KillGrace.
func (r *Runner) terminate(t *task, allDone <-chan struct{}) {
	t.mu.Lock()
	if !t.stopping {
		t.stopping, t.stoppingAt = true, time.Now()
	}
	t.mu.Unlock()
	r.signal(t, syscall.SIGTERM)
	grace := time.NewTimer(r.cfg.KillGrace)
	defer grace.Stop()
	select {
	case <-allDone:
	case <-grace.C:
		r.signal(t, syscall.SIGKILL)
	}
}

func (r *Runner) signal(t *task, sig syscall.Signal) {
	for _, c := range t.conts {
		if c.cmd == nil || c.cmd.Process == nil {
			continue
		}
		select {
		case <-c.done:
			continue
		default:
		}
		// The negative pid signals the whole process group.
		_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	}
}

func (r *Runner) finish(t *task, cleanup func()) {
	defer r.wg.Done()
	for _, c := range t.conts {
		<-c.done
	}
	if cleanup != nil {
		cleanup()
	}
	t.mu.Lock()
	if t.stopCode == "" {
		t.stopCode, t.stopReason = StopCodeEssentialExited, ReasonEssentialExited
	}
	t.mu.Unlock()
	r.mu.Lock()
	delete(r.tasks, t.id)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.publish(ctx, t, "STOPPED")
}

func (r *Runner) lines(t *task, c *container, source string, rd io.Reader) {
	br := bufio.NewReaderSize(rd, 64*1024)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := string(line)
			if text[len(text)-1] == '\n' {
				text = text[:len(text)-1]
			}
			if n := len(text); n > 0 && text[n-1] == '\r' {
				text = text[:n-1]
			}
			if r.cfg.Sink != nil {
				r.cfg.Sink.Write(logsink.Record{
					Time: time.Now(), Cluster: t.cluster, TaskARN: t.id, TaskDefinition: t.family,
					Container: c.spec.GetName(), Source: source, Log: text, RunID: t.runID,
				})
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (r *Runner) publish(ctx context.Context, t *task, status string) {
	t.mu.Lock()
	t.version++
	ev := &v1.TaskStateChanged{
		TaskArn: t.id, ClusterArn: t.cluster, Cluster: t.cluster, Schedule: t.schedule, RunId: t.runID,
		LastStatus: status, DesiredStatus: "RUNNING", StartedBy: "taskyard:" + t.schedule, Group: "taskyard:" + t.runID,
		TaskDefinitionArn: t.family, Version: t.version, Source: "exec",
		CreatedAt: timestamppb.New(t.created), EventTime: timestamppb.Now(), LaunchType: "EXEC",
	}
	if !t.started.IsZero() {
		ev.StartedAt = timestamppb.New(t.started)
	}
	if !t.stoppingAt.IsZero() {
		ev.StoppingAt = timestamppb.New(t.stoppingAt)
	}
	if status == "STOPPED" {
		ev.DesiredStatus = "STOPPED"
		ev.StopCode, ev.StoppedReason = t.stopCode, t.stopReason
		ev.StoppedAt = timestamppb.Now()
	}
	version := t.version
	t.mu.Unlock()
	for _, c := range t.conts {
		cs := &v1.ContainerState{Name: c.spec.GetName(), Image: c.spec.GetImage(), Essential: c.spec.GetEssential(), LastStatus: status}
		if status == "STOPPED" {
			cs.ExitCode, cs.HasExitCode, cs.Reason = c.exitCode, c.hasExit, c.reason
		}
		ev.Containers = append(ev.Containers, cs)
	}
	msgID := fmt.Sprintf("%s:%d", t.id, version)
	if _, err := v1.Publish(ctx, r.cfg.JS, r.subj.Task(t.cluster, t.schedule), ev, msgID); err != nil {
		r.cfg.Log.Error("publish task state", "task", t.id, "status", status, "err", err)
	}
}

// Stop stops tasks (SIGTERM, SIGKILL after the grace period), recording
// reason.
func (r *Runner) Stop(_ context.Context, _ *v1.ScheduleSpec, _ *schedule.Profile, taskIDs []string, reason string) error {
	var missing []string
	for _, id := range taskIDs {
		r.mu.Lock()
		t := r.tasks[id]
		r.mu.Unlock()
		if t == nil {
			missing = append(missing, id)
			continue
		}
		t.mu.Lock()
		if t.stopCode == "" || t.stopCode == StopCodeEssentialExited {
			t.stopCode, t.stopReason = StopCodeUserInitiated, reason
		}
		t.mu.Unlock()
		allDone := make(chan struct{})
		go func() {
			for _, c := range t.conts {
				<-c.done
			}
			close(allDone)
		}()
		go r.terminate(t, allDone)
	}
	if len(missing) > 0 {
		return fmt.Errorf("stop: no running task %v", missing)
	}
	return nil
}

// Active lists the schedule's running local tasks.
func (r *Runner) Active(_ context.Context, spec *v1.ScheduleSpec, _ *schedule.Profile) ([]runner.Task, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []runner.Task
	for _, t := range r.tasks {
		if t.schedule == spec.GetName() {
			out = append(out, runner.Task{ID: t.id, RunID: t.runID})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ClusterLoad counts the running local tasks of the profile's cluster.
func (r *Runner) ClusterLoad(_ context.Context, p *schedule.Profile) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.tasks {
		if t.cluster == p.Name {
			n++
		}
	}
	return n, nil
}

func (r *Runner) baseEnv() map[string]string {
	env := map[string]string{}
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	return env
}

func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// exitCode returns the process's exit code; a process killed by a signal
// reports 128+signal like a shell (137 for SIGKILL).
func exitCode(cmd *exec.Cmd, err error) (int32, bool) {
	if cmd.ProcessState == nil {
		return 0, false
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int32(128 + int(ws.Signal())), true
	}
	_ = err
	return int32(cmd.ProcessState.ExitCode()), true
}

// Shutdown stops every running task (SIGTERM, SIGKILL after the grace
// period) and waits until their STOPPED events are published.
func (r *Runner) Shutdown() {
	r.mu.Lock()
	ids := make([]string, 0, len(r.tasks))
	for id := range r.tasks {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	if len(ids) > 0 {
		_ = r.Stop(context.Background(), nil, nil, ids, "taskyard: scheduler shutting down")
	}
	r.wg.Wait()
}
