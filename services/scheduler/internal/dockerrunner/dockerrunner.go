// Package dockerrunner runs a schedule's containers as Docker containers
// through the Docker Engine API — the local mirror of ECS + FireLens that
// `docker compose up` uses. Each container of the schedule becomes a Docker
// container (image, entryPoint, command, environment, cpu and memory
// limits) whose stdout/stderr go through Docker's fluentd log driver to the
// logrouter, with labels the logrouter turns into cluster / service /
// container / task / run id.
//
// Like an ECS task (and the exec runner), a task is the set of the
// schedule's containers: when an essential container exits the others are
// stopped, and the task is STOPPED once every container has exited. The
// runner publishes TaskStateChanged PENDING -> RUNNING -> STOPPED on
// <prefix>.task.<cluster>.<schedule> with every container's exit code; a
// container the kernel killed for memory has the reason
// "OutOfMemoryError: Container killed due to memory usage", as on ECS.
//
// A missing image is pulled; when the pull fails (no registry, no such
// image) the task is STOPPED with stop code TaskFailedToStart and the
// reason "CannotPullContainerError: ...". Containers are removed after
// they exit unless Config.Keep is set.
package dockerrunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

// Stop codes and reasons, as ECS spells them.
const (
	StopCodeEssentialExited = "EssentialContainerExited"
	StopCodeFailedToStart   = "TaskFailedToStart"
	StopCodeUserInitiated   = "UserInitiated"
	ReasonEssentialExited   = "Essential container in task exited"
	ReasonOutOfMemory       = "OutOfMemoryError: Container killed due to memory usage"
)

// Container labels. The unqualified ones are the record fields the
// logrouter reads (the fluentd driver's `labels` option copies them into
// every log record); the io.taskyard.* ones find a schedule's containers.
const (
	LabelManaged   = "io.taskyard.managed"
	LabelSchedule  = "io.taskyard.schedule"
	LabelRunID     = "io.taskyard.run-id"
	LabelTask      = "io.taskyard.task"
	LabelCluster   = "io.taskyard.cluster"
	LabelContainer = "io.taskyard.container"
	LabelEssential = "io.taskyard.essential"
	LabelCreated   = "io.taskyard.created"

	logCluster   = "cluster"
	logService   = "service"
	logContainer = "container"
	logTask      = "task"
	logRunID     = "taskyard_run_id"
)

// Config wires a Runner.
type Config struct {
	// Client talks to the Docker engine (client.FromEnv: DOCKER_HOST or
	// the local socket).
	Client *client.Client
	JS     jetstream.JetStream
	Prefix string
	Log    *slog.Logger
	// FluentdAddress is where the Docker engine sends the containers' logs
	// (the logrouter's forward input as the engine's host sees it, e.g.
	// 127.0.0.1:24224); empty keeps Docker's default log driver.
	FluentdAddress string
	// FluentdAsync lets containers start while the logrouter is
	// unreachable (the driver buffers and reconnects).
	FluentdAsync bool
	// Network is the Docker network job containers join ("" = the
	// engine's default bridge).
	Network string
	// KillGrace is the time between SIGTERM and SIGKILL (default 10 s).
	KillGrace time.Duration
	// Keep leaves exited containers in place (debugging).
	Keep bool
	// PullTimeout bounds an image pull (default 5 min).
	PullTimeout time.Duration
	// PublishTimeout bounds the retries of a STOPPED event while NATS is
	// unreachable (default 10 min).
	PublishTimeout time.Duration
}

// Runner is the docker runner.
type Runner struct {
	cfg  Config
	subj v1.Subjects

	mu    sync.Mutex
	tasks map[string]*task
	// starting are the tasks this replica is creating (not adoptable).
	starting map[string]bool
	wg       sync.WaitGroup
	// stop ends the watchers on Shutdown.
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a docker runner.
func New(cfg Config) *Runner {
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 10 * time.Second
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = 5 * time.Minute
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 10 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{cfg: cfg, subj: v1.Subjects{Prefix: cfg.Prefix}, tasks: map[string]*task{}, starting: map[string]bool{}, ctx: ctx, cancel: cancel}
}

// Name is "docker".
func (r *Runner) Name() string { return "docker" }

type cont struct {
	name      string // the schedule's container name
	image     string
	essential bool
	id        string // Docker container id ("" when not created)
	// resumed: created and started by a replica that died before it
	// reported the task; this one took the container over.
	resumed  bool
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
	created  time.Time
	conts    []*cont

	mu         sync.Mutex
	version    int64
	started    time.Time
	stopCode   string
	stopReason string
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
		id := fmt.Sprintf("docker:task/%s/%s-%d", spec.GetCluster(), req.RunID, i)
		reason, err := r.start(ctx, req, id, family, i)
		if err != nil {
			res.Failures = append(res.Failures, &v1.DispatchFailure{Arn: id, Reason: reason, Detail: err.Error()})
			continue
		}
		res.TaskIDs = append(res.TaskIDs, id)
	}
	return res, nil
}

// containerName is the Docker name of a task's container: unique per run,
// task index and container, so a run dispatched twice finds the first
// dispatch's container instead of running twice.
func containerName(runID string, i int, name string) string {
	return fmt.Sprintf("taskyard-%s-%d-%s", runID, i, name)
}

// start creates and starts one task's containers. The run id plays the
// part of ECS's clientToken: a task this runner already watches (started
// here, or adopted from a replica that died) is not started again, and a
// container that already exists under the task's name — a leader died
// between creating it and publishing the decision, and the next leader
// runs the fire again with the same run id — is taken over: started if it
// never was, watched either way.
func (r *Runner) start(ctx context.Context, req runner.Request, id, family string, idx int) (string, error) {
	spec := req.Spec
	r.mu.Lock()
	if _, known := r.tasks[id]; known {
		r.mu.Unlock()
		r.cfg.Log.Info("task of this run already running", "task", id, "run", req.RunID)
		return "", nil
	}
	if r.starting[id] {
		r.mu.Unlock()
		return "CannotCreateContainerError", fmt.Errorf("task %s is being started already", id)
	}
	r.starting[id] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.starting, id)
		r.mu.Unlock()
	}()
	t := &task{id: id, runID: req.RunID, schedule: spec.GetName(), cluster: spec.GetCluster(), family: family, created: time.Now()}
	for _, c := range spec.GetContainers() {
		t.conts = append(t.conts, &cont{name: c.GetName(), image: c.GetImage(), essential: c.GetEssential() || len(spec.GetContainers()) == 1, done: make(chan struct{})})
	}
	r.publish(ctx, t, "PENDING")

	fail := func(reason string, err error) (string, error) {
		t.mu.Lock()
		t.stopCode, t.stopReason = StopCodeFailedToStart, reason+": "+err.Error()
		t.mu.Unlock()
		// The task failed to start as a whole: none of its containers run.
		for _, c := range t.conts {
			r.remove(c.id)
			c.id, c.reason = "", reason
			close(c.done)
		}
		r.wg.Add(1)
		go r.finish(t, nil)
		return reason, err
	}

	for i, c := range spec.GetContainers() {
		if len(c.GetImage()) == 0 {
			return fail("CannotStartContainerError", fmt.Errorf("container %s has no image", c.GetName()))
		}
		cfg, hc, nc := r.containerConfig(req, t, c)
		name := containerName(req.RunID, idx, c.GetName())
		if _, err := r.cfg.Client.ImageInspect(ctx, c.GetImage()); err != nil {
			if !cerrdefs.IsNotFound(err) {
				return fail("CannotPullContainerError", fmt.Errorf("container %s: inspect image %s: %w", c.GetName(), c.GetImage(), err))
			}
			if perr := r.pull(ctx, c.GetImage()); perr != nil {
				return fail("CannotPullContainerError", fmt.Errorf("container %s: %w", c.GetName(), perr))
			}
		}
		created, err := r.cfg.Client.ContainerCreate(ctx, cfg, hc, nc, nil, name)
		if cerrdefs.IsConflict(err) {
			existing, ierr := r.cfg.Client.ContainerInspect(ctx, name)
			switch {
			case ierr != nil:
				err = fmt.Errorf("%w (inspecting the existing container: %v)", err, ierr)
			case existing.Config == nil || existing.Config.Labels[LabelTask] != id:
				err = fmt.Errorf("%w (the existing container is not one of task %s)", err, id)
			default:
				t.conts[i].id = existing.ID
				t.conts[i].resumed = existing.State != nil && existing.State.Status != container.StateCreated
				r.cfg.Log.Info("container of this run exists already, taking it over", "task", id, "run", req.RunID,
					"container", name, "state", stateOf(existing))
				continue
			}
		}
		if err != nil {
			return fail("CannotCreateContainerError", fmt.Errorf("create container %s: %w", c.GetName(), err))
		}
		t.conts[i].id = created.ID
	}
	t.mu.Lock()
	t.started = time.Now()
	t.mu.Unlock()
	for _, c := range t.conts {
		if c.resumed {
			continue
		}
		if err := r.cfg.Client.ContainerStart(ctx, c.id, container.StartOptions{}); err != nil {
			return fail("CannotStartContainerError", fmt.Errorf("start container %s: %w", c.name, err))
		}
	}
	r.mu.Lock()
	r.tasks[id] = t
	r.mu.Unlock()
	r.publish(ctx, t, "RUNNING")
	r.watchTask(t, spec.GetTiming().GetTimeout().AsDuration())
	return "", nil
}

func stateOf(c container.InspectResponse) string {
	if c.State == nil {
		return ""
	}
	return string(c.State.Status)
}

// watchTask waits for every container and supervises the task: an
// essential container's exit or the timeout stops the rest.
func (r *Runner) watchTask(t *task, timeout time.Duration) {
	for _, c := range t.conts {
		go r.waitContainer(c)
	}
	r.wg.Add(1)
	var tm *time.Timer
	var tc <-chan time.Time
	if timeout > 0 {
		tm = time.NewTimer(timeout)
		tc = tm.C
	}
	go r.finish(t, func() {
		if tm != nil {
			tm.Stop()
		}
	})
	go r.supervise(t, tc, timeout)
}

// waitContainer blocks until the container is not running and records its
// exit code and reason.
func (r *Runner) waitContainer(c *cont) {
	defer close(c.done)
	for {
		waitC, errC := r.cfg.Client.ContainerWait(r.ctx, c.id, container.WaitConditionNotRunning)
		select {
		case <-waitC:
		case err := <-errC:
			if r.ctx.Err() != nil {
				return
			}
			if cerrdefs.IsNotFound(err) {
				c.reason = "container removed before its exit was seen"
				return
			}
			r.cfg.Log.Warn("wait for container", "container", c.id, "err", err)
			select {
			case <-time.After(time.Second):
			case <-r.ctx.Done():
				return
			}
			continue
		}
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, err := r.cfg.Client.ContainerInspect(ctx, c.id)
	if err != nil || in.State == nil {
		c.reason = fmt.Sprintf("inspect exited container: %v", err)
		return
	}
	c.exitCode, c.hasExit = int32(in.State.ExitCode), true
	switch {
	case in.State.OOMKilled:
		c.reason = ReasonOutOfMemory
	case in.State.Error != "":
		c.reason = in.State.Error
	}
}

func (r *Runner) supervise(t *task, timeout <-chan time.Time, d time.Duration) {
	essentialDone := make(chan struct{})
	var once sync.Once
	for _, c := range t.conts {
		if c.essential {
			go func() {
				<-c.done
				once.Do(func() { close(essentialDone) })
			}()
		}
	}
	allDone := allDoneChan(t)
	select {
	case <-allDone:
	case <-r.ctx.Done():
	case <-essentialDone:
		t.mu.Lock()
		if t.stopCode == "" {
			t.stopCode, t.stopReason = StopCodeEssentialExited, ReasonEssentialExited
		}
		t.mu.Unlock()
		r.terminate(t)
	case <-timeout:
		t.mu.Lock()
		if t.stopCode == "" {
			t.stopCode, t.stopReason = StopCodeUserInitiated, fmt.Sprintf("taskyard: timeout %s exceeded", d)
		}
		t.mu.Unlock()
		r.terminate(t)
	}
}

func allDoneChan(t *task) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for _, c := range t.conts {
			<-c.done
		}
		close(ch)
	}()
	return ch
}

// terminate stops every running container: SIGTERM, SIGKILL after
// KillGrace (docker stop).
func (r *Runner) terminate(t *task) {
	t.mu.Lock()
	if t.stoppingAt.IsZero() {
		t.stoppingAt = time.Now()
	}
	t.mu.Unlock()
	secs := int((r.cfg.KillGrace + time.Second - 1) / time.Second)
	var wg sync.WaitGroup
	for _, c := range t.conts {
		select {
		case <-c.done:
			continue
		default:
		}
		if c.id == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.KillGrace+30*time.Second)
			defer cancel()
			if err := r.cfg.Client.ContainerStop(ctx, c.id, container.StopOptions{Timeout: &secs}); err != nil && !cerrdefs.IsNotFound(err) {
				r.cfg.Log.Warn("stop container", "container", c.id, "err", err)
			}
		}()
	}
	wg.Wait()
}

func (r *Runner) remove(id string) {
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.cfg.Client.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		r.cfg.Log.Warn("remove container", "container", id, "err", err)
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
	if r.ctx.Err() != nil {
		// Shutdown without the containers' exit: another replica adopts
		// them (Active) and reports their end.
		r.mu.Lock()
		delete(r.tasks, t.id)
		r.mu.Unlock()
		return
	}
	t.mu.Lock()
	if t.stopCode == "" {
		t.stopCode, t.stopReason = StopCodeEssentialExited, ReasonEssentialExited
	}
	for _, c := range t.conts {
		if c.reason == ReasonOutOfMemory && t.stopCode == StopCodeEssentialExited {
			t.stopReason = ReasonEssentialExited + ": " + c.name + ": " + ReasonOutOfMemory
		}
	}
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.PublishTimeout)
	defer cancel()
	r.publish(ctx, t, "STOPPED")
	if !r.cfg.Keep {
		for _, c := range t.conts {
			r.remove(c.id)
		}
	}
	r.mu.Lock()
	delete(r.tasks, t.id)
	r.mu.Unlock()
}

// containerConfig builds the Docker configuration of one container.
func (r *Runner) containerConfig(req runner.Request, t *task, c *v1.Container) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	env := map[string]string{}
	for k, v := range c.GetEnvironment() {
		env[k] = v
	}
	for k, v := range req.Env() { // the run's variables win
		env[k] = v
	}
	envList := make([]string, 0, len(env))
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	sort.Strings(envList)
	labels := map[string]string{
		LabelManaged:   "true",
		LabelSchedule:  t.schedule,
		LabelRunID:     t.runID,
		LabelTask:      t.id,
		LabelCluster:   t.cluster,
		LabelContainer: c.GetName(),
		LabelEssential: strconv.FormatBool(c.GetEssential() || len(req.Spec.GetContainers()) == 1),
		LabelCreated:   t.created.UTC().Format(time.RFC3339Nano),
		logCluster:     t.cluster,
		logService:     t.schedule,
		logContainer:   c.GetName(),
		logTask:        t.id[strings.LastIndexByte(t.id, '/')+1:],
		logRunID:       t.runID,
	}
	cfg := &container.Config{
		Image:  c.GetImage(),
		Env:    envList,
		Labels: labels,
	}
	if len(c.GetEntryPoint()) > 0 {
		cfg.Entrypoint = slices.Clone(c.GetEntryPoint())
	}
	if len(c.GetCommand()) > 0 {
		cfg.Cmd = slices.Clone(c.GetCommand())
	}
	hc := &container.HostConfig{}
	// ECS units: 1024 CPU units = 1 vCPU; memory in MiB (hard limit) and
	// memoryReservation (soft limit).
	if cpu := c.GetCpu(); cpu > 0 {
		hc.NanoCPUs = int64(cpu) * 1e9 / 1024
	}
	if m := c.GetMemory(); m > 0 {
		hc.Memory = int64(m) << 20
		hc.MemorySwap = hc.Memory // no swap beyond the limit, like ECS
	}
	if m := c.GetMemoryReservation(); m > 0 {
		hc.MemoryReservation = int64(m) << 20
	}
	if r.cfg.FluentdAddress != "" {
		hc.LogConfig = container.LogConfig{Type: "fluentd", Config: map[string]string{
			"fluentd-address": r.cfg.FluentdAddress,
			"tag":             c.GetName() + "-docker-" + labels[logTask],
			"labels":          strings.Join([]string{logCluster, logService, logContainer, logTask, logRunID}, ","),
			"fluentd-async":   strconv.FormatBool(r.cfg.FluentdAsync),
		}}
	}
	var nc *network.NetworkingConfig
	if r.cfg.Network != "" {
		hc.NetworkMode = container.NetworkMode(r.cfg.Network)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{r.cfg.Network: {}}}
	}
	return cfg, hc, nc
}

// pull pulls ref, reading the progress stream to its end (an error in the
// stream is the pull's error).
func (r *Runner) pull(ctx context.Context, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PullTimeout)
	defer cancel()
	rc, err := r.cfg.Client.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("pull image %s: %w", ref, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("pull image %s: %w", ref, err)
		}
		if m.Error != "" {
			return fmt.Errorf("pull image %s: %s", ref, m.Error)
		}
	}
}

func (r *Runner) publish(ctx context.Context, t *task, status string) {
	t.mu.Lock()
	t.version++
	ev := &v1.TaskStateChanged{
		TaskArn: t.id, ClusterArn: t.cluster, Cluster: t.cluster, Schedule: t.schedule, RunId: t.runID,
		LastStatus: status, DesiredStatus: "RUNNING", StartedBy: "taskyard:" + t.schedule, Group: "taskyard:" + t.runID,
		TaskDefinitionArn: t.family, Version: t.version, Source: "docker",
		CreatedAt: timestamppb.New(t.created), EventTime: timestamppb.Now(), LaunchType: "DOCKER",
	}
	if !t.started.IsZero() && status != "PENDING" {
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
		cs := &v1.ContainerState{Name: c.name, Image: c.image, Essential: c.essential, LastStatus: status}
		if status == "STOPPED" {
			cs.ExitCode, cs.HasExitCode, cs.Reason = c.exitCode, c.hasExit, c.reason
		}
		ev.Containers = append(ev.Containers, cs)
	}
	msgID := fmt.Sprintf("%s:%d", t.id, version)
	// A STOPPED event is the only word of the task's end: it is retried
	// until ctx ends (NATS restarting, a JetStream leader election); the
	// Nats-Msg-Id makes a retry of a publish that did land harmless.
	delay := 250 * time.Millisecond
	for {
		_, err := v1.Publish(ctx, r.cfg.JS, r.subj.Task(t.cluster, t.schedule), ev, msgID)
		if err == nil {
			return
		}
		if status != "STOPPED" || ctx.Err() != nil {
			r.cfg.Log.Error("publish task state", "task", t.id, "status", status, "err", err)
			return
		}
		r.cfg.Log.Warn("publish task state, retrying", "task", t.id, "status", status, "err", err, "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			r.cfg.Log.Error("publish task state", "task", t.id, "status", status, "err", ctx.Err())
			return
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// Stop stops tasks (SIGTERM, SIGKILL after the grace period), recording
// reason. Tasks this replica did not start are adopted first.
func (r *Runner) Stop(ctx context.Context, spec *v1.ScheduleSpec, profile *schedule.Profile, taskIDs []string, reason string) error {
	if spec != nil {
		if _, err := r.Active(ctx, spec, profile); err != nil {
			return err
		}
	}
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
		go r.terminate(t)
	}
	if len(missing) > 0 {
		return fmt.Errorf("stop: no running task %v", missing)
	}
	return nil
}

// Active lists the schedule's tasks that have a running container. Tasks
// started by another replica (a leader that died) are adopted: this
// replica watches them and publishes their STOPPED event.
func (r *Runner) Active(ctx context.Context, spec *v1.ScheduleSpec, _ *schedule.Profile) ([]runner.Task, error) {
	list, err := r.cfg.Client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelSchedule+"="+spec.GetName()),
	)})
	if err != nil {
		return nil, fmt.Errorf("list containers of %s: %w", spec.GetName(), err)
	}
	r.adopt(list)
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

// adopt starts watching the tasks of listed containers this replica does
// not know yet; the STOPPED event of an adopted task has version 3 (its
// starter published PENDING and RUNNING), so a STOPPED its starter did
// publish is dropped by JetStream as a duplicate.
func (r *Runner) adopt(list []container.Summary) {
	byTask := map[string][]container.Summary{}
	for _, s := range list {
		byTask[s.Labels[LabelTask]] = append(byTask[s.Labels[LabelTask]], s)
	}
	for id, cs := range byTask {
		if id == "" {
			continue
		}
		running := false
		for _, s := range cs {
			running = running || s.State == "running"
		}
		r.mu.Lock()
		_, known := r.tasks[id]
		known = known || r.starting[id]
		r.mu.Unlock()
		// An exited container that is still there was not reported (its
		// replica died between the exit and the removal) unless
		// containers are kept.
		if known || (!running && r.cfg.Keep) {
			continue
		}
		l := cs[0].Labels
		created, _ := time.Parse(time.RFC3339Nano, l[LabelCreated])
		t := &task{id: id, runID: l[LabelRunID], schedule: l[LabelSchedule], cluster: l[LabelCluster],
			family: v1.JobFamily(l[LabelSchedule]), created: created, started: created, version: 2}
		sort.Slice(cs, func(i, j int) bool { return cs[i].Labels[LabelContainer] < cs[j].Labels[LabelContainer] })
		for _, s := range cs {
			t.conts = append(t.conts, &cont{name: s.Labels[LabelContainer], image: s.Image, id: s.ID,
				essential: s.Labels[LabelEssential] == "true", done: make(chan struct{})})
		}
		r.mu.Lock()
		if _, known := r.tasks[id]; known || r.starting[id] {
			r.mu.Unlock()
			continue
		}
		r.tasks[id] = t
		r.mu.Unlock()
		r.cfg.Log.Info("adopted task", "task", id, "run", t.runID)
		r.watchTask(t, 0)
	}
}

// ClusterLoad counts the tasks of the profile's cluster with a running
// container (started by any replica). Only the leader asks (before a
// dispatch), so it also adopts the running tasks nobody watches — those of
// a leader that died — whatever their schedule's concurrency policy.
func (r *Runner) ClusterLoad(ctx context.Context, p *schedule.Profile) (int, error) {
	list, err := r.cfg.Client.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelCluster+"="+p.Name),
	)})
	if err != nil {
		return 0, fmt.Errorf("list containers of cluster %s: %w", p.Name, err)
	}
	r.adopt(list)
	tasks := map[string]bool{}
	for _, s := range list {
		tasks[s.Labels[LabelTask]] = true
	}
	return len(tasks), nil
}

// Shutdown stops watching: running containers keep running (another
// replica adopts them through Active) unless stopTasks is set, in which
// case they are stopped and their STOPPED events published first.
func (r *Runner) Shutdown(stopTasks bool) {
	if stopTasks {
		r.mu.Lock()
		var ts []*task
		for _, t := range r.tasks {
			ts = append(ts, t)
		}
		r.mu.Unlock()
		for _, t := range ts {
			t.mu.Lock()
			if t.stopCode == "" {
				t.stopCode, t.stopReason = StopCodeUserInitiated, "taskyard: scheduler shutting down"
			}
			t.mu.Unlock()
			r.terminate(t)
		}
		r.wg.Wait()
	}
	r.cancel()
	r.wg.Wait()
}
