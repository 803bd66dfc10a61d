// Package app is the taskyard scheduler daemon: configuration, wiring and
// Run. It is public so that `taskyard dev` runs the scheduler in-process;
// the logic lives in the internal packages (engine, lease, control,
// execrunner, ecsrunner).
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/docker/docker/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/health"
	"github.com/taskyard/taskyard/services/kit/lifecycle"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/kit/telemetry"
	"github.com/taskyard/taskyard/services/scheduler/internal/clock"
	"github.com/taskyard/taskyard/services/scheduler/internal/control"
	"github.com/taskyard/taskyard/services/scheduler/internal/dockerrunner"
	"github.com/taskyard/taskyard/services/scheduler/internal/ecsrunner"
	"github.com/taskyard/taskyard/services/scheduler/internal/engine"
	"github.com/taskyard/taskyard/services/scheduler/internal/execrunner"
	"github.com/taskyard/taskyard/services/scheduler/internal/lease"
	"github.com/taskyard/taskyard/services/scheduler/internal/logsink"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

// Runner names.
const (
	RunnerExec   = "exec"
	RunnerECS    = "ecs"
	RunnerDocker = "docker"
)

// Runner starts and stops a schedule's tasks; Deps.Runner replaces the
// configured one (benchmarks, tests).
type Runner = runner.Runner

// RunRequest is one run a Runner is asked to start.
type RunRequest = runner.Request

// RunResult is what a Runner started.
type RunResult = runner.Result

// RunningTask is a task a Runner reports as not STOPPED.
type RunningTask = runner.Task

// Clock is the time source of the timer loop.
type Clock = clock.Clock

// ManualClock is a Clock that moves only when told to (tests, benchmarks).
type ManualClock = clock.Manual

// NewManualClock returns a ManualClock at t.
func NewManualClock(t time.Time) *ManualClock { return clock.NewManual(t) }

// Config is the scheduler's configuration.
type Config struct {
	NATS natsconn.Config
	// Runner is exec or ecs.
	Runner string
	// ClustersDir holds the cluster profiles (*.yml, *.yaml).
	ClustersDir string
	// Instance names this replica in the lease and in events.
	Instance string
	// LeaseTTL is the leader lease TTL; every replica must use the same.
	LeaseTTL time.Duration
	// ReleaseLease deletes a held lease on shutdown so another replica
	// takes over at once instead of after LeaseTTL.
	ReleaseLease bool
	// HTTPListen serves /healthz, /readyz and /metrics ("" = off).
	HTTPListen string
	// ForwardAddr (exec runner): send task log lines over Fluent Forward
	// to host:port; empty writes them to stdout as JSON lines.
	ForwardAddr string
	// KillGrace (exec runner) is the time between SIGTERM and SIGKILL.
	KillGrace time.Duration
	// WorkDir (exec runner) is the processes' working directory.
	WorkDir string
	// ClaimAhead claims each fire in KV this long before its time so the
	// claim's round trip is not part of the dispatch lag.
	ClaimAhead time.Duration
	// ECS runner.
	ECS ECSConfig
	// Docker runner.
	Docker DockerConfig
	// LogLevel of the daemon's own logs (debug, info, warn, error).
	LogLevel string
}

// Daemon is the daemon's name in logs, metrics and subjects.
const Daemon = "scheduler"

// ECSConfig configures the ecs runner.
type ECSConfig struct {
	Region string
	// Endpoint overrides the ECS endpoint URL (VPC endpoints, tests).
	Endpoint string
	// RunTaskRate is the RunTask calls per second allowed (ECS's own
	// limit is 20 per second sustained).
	RunTaskRate float64
	// RunTaskBurst is the token bucket size.
	RunTaskBurst int
}

// DockerConfig configures the docker runner.
type DockerConfig struct {
	// Host is the engine address (unix:///var/run/docker.sock,
	// tcp://...); empty uses DOCKER_HOST or the local socket.
	Host string
	// FluentdAddress is the logrouter's forward input as the Docker
	// engine's host reaches it; empty keeps Docker's default log driver.
	FluentdAddress string
	// FluentdAsync lets job containers start while the logrouter is down.
	FluentdAsync bool
	// Network is the Docker network job containers join.
	Network string
	// Keep leaves exited job containers in place.
	Keep bool
	// PullTimeout bounds an image pull.
	PullTimeout time.Duration
}

// Register binds the flags and their TASKYARD_* variables.
func (c *Config) Register(f *config.Flags) {
	c.NATS.Register(f)
	host, _ := os.Hostname()
	f.String(&c.LogLevel, "log-level", "info", "level of the daemon's own logs: debug, info, warn, error")
	f.String(&c.Runner, "runner", RunnerExec, "where tasks run: exec (local processes), ecs (AWS ECS RunTask) or docker (containers through the Docker Engine API)")
	f.String(&c.ClustersDir, "clusters-dir", "", "directory of cluster profiles (*.yml); schedules must name one of them when set")
	f.String(&c.Instance, "instance", host, "name of this replica in the leader lease and in events")
	f.Duration(&c.LeaseTTL, "lease-ttl", 10*time.Second, "leader lease TTL: a crashed leader is replaced after at most this long; the same on every replica")
	f.Duration(&c.ClaimAhead, "claim-ahead", time.Second, "claim each fire in KV this long before its time (the runner is still called on time)")
	f.Bool(&c.ReleaseLease, "release-lease", true, "on shutdown, release a held lease so another replica takes over at once")
	f.String(&c.HTTPListen, "http-listen", ":8081", "address of /healthz, /readyz and /metrics (empty: off)")
	f.String(&c.ForwardAddr, "forward-addr", "", "exec runner: send task logs over Fluent Forward to host:port (the logrouter); empty writes them to stdout as JSON")
	f.Duration(&c.KillGrace, "kill-grace", 10*time.Second, "exec runner: time between SIGTERM and SIGKILL when a task times out or is stopped")
	f.String(&c.WorkDir, "workdir", "", "exec runner: working directory of task processes")
	f.String(&c.ECS.Region, "ecs-region", "", "ecs runner: AWS region (default from the AWS SDK's usual sources)")
	f.String(&c.ECS.Endpoint, "ecs-endpoint", "", "ecs runner: ECS endpoint URL override")
	f.Float(&c.ECS.RunTaskRate, "runtask-rate", 20, "ecs runner: RunTask calls per second at most")
	f.Int(&c.ECS.RunTaskBurst, "runtask-burst", 20, "ecs runner: RunTask token bucket size")
	f.String(&c.Docker.Host, "docker-host", "", "docker runner: Docker engine address (empty: DOCKER_HOST or unix:///var/run/docker.sock)")
	f.String(&c.Docker.FluentdAddress, "docker-fluentd-address", "127.0.0.1:24224", "docker runner: logrouter forward address as the Docker engine's host reaches it (fluentd log driver); empty: Docker's default log driver")
	f.Bool(&c.Docker.FluentdAsync, "docker-fluentd-async", true, "docker runner: start job containers even while the logrouter is unreachable (the driver buffers and reconnects)")
	f.String(&c.Docker.Network, "docker-network", "", "docker runner: Docker network job containers join (empty: the default bridge)")
	f.Bool(&c.Docker.Keep, "docker-keep-containers", false, "docker runner: keep exited job containers (debugging)")
	f.Duration(&c.Docker.PullTimeout, "docker-pull-timeout", 5*time.Minute, "docker runner: longest image pull")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var p config.Problems
	c.NATS.Validate(&p)
	p.Check(c.Runner == RunnerExec || c.Runner == RunnerECS || c.Runner == RunnerDocker, "runner: %q is not exec, ecs or docker", c.Runner)
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		p.Addf("log-level: %v", err)
	}
	p.Check(c.Instance != "", "instance: must not be empty")
	p.Check(c.LeaseTTL >= 500*time.Millisecond, "lease-ttl: %s is shorter than 500ms", c.LeaseTTL)
	p.Check(c.KillGrace > 0, "kill-grace: must be positive")
	p.Check(c.ClaimAhead >= 0 && c.ClaimAhead < c.LeaseTTL/2, "claim-ahead: %s must be between 0 and half the lease TTL", c.ClaimAhead)
	if c.ClustersDir != "" {
		if fi, err := os.Stat(c.ClustersDir); err != nil {
			p.Addf("clusters-dir: %v", err)
		} else if !fi.IsDir() {
			p.Addf("clusters-dir: %s is not a directory", c.ClustersDir)
		}
	}
	if c.Runner == RunnerECS {
		p.Check(c.ClustersDir != "", "clusters-dir: required with runner ecs (the profiles say where and how tasks run)")
		p.Check(c.ECS.RunTaskRate > 0, "runtask-rate: must be positive")
		p.Check(c.ECS.RunTaskBurst >= 1, "runtask-burst: must be at least 1")
	}
	if c.Runner == RunnerDocker {
		if c.Docker.FluentdAddress != "" {
			if _, _, err := net.SplitHostPort(c.Docker.FluentdAddress); err != nil {
				p.Addf("docker-fluentd-address: %v", err)
			}
		}
		p.Check(c.Docker.PullTimeout > 0, "docker-pull-timeout: must be positive")
	}
	if c.ForwardAddr != "" {
		if _, _, err := net.SplitHostPort(c.ForwardAddr); err != nil {
			p.Addf("forward-addr: %v", err)
		}
	}
	return p.Err()
}

// Deps are what Run does not build itself.
type Deps struct {
	Log       *slog.Logger
	Telemetry *telemetry.Telemetry
	// NC is used when set (dev mode); otherwise Run connects from cfg.
	NC *nats.Conn
	// Clock drives the timer loop (real time when nil). The lease always
	// uses real time: its TTL is enforced by the NATS server.
	Clock Clock
	// Runner replaces the configured runner when set.
	Runner Runner
	// Stdout receives task log lines as JSON when no forward address is
	// set (os.Stdout when nil).
	Stdout io.Writer
	// Listener, when set, serves HTTP instead of listening on HTTPListen.
	Listener net.Listener
}

// LoadProfiles reads every *.yml / *.yaml file of dir as a cluster
// profile (schedule.LoadProfileDir). Every problem of every file is
// reported at once.
func LoadProfiles(dir string) (map[string]*schedule.Profile, error) {
	profiles, err := schedule.LoadProfileDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cluster profiles:\n%w", err)
	}
	return profiles, nil
}

// Run runs the scheduler until ctx is cancelled.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	err := run(ctx, cfg, deps)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // cancelled while starting
	}
	return err
}

func run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tel := deps.Telemetry
	if tel == nil {
		tel = telemetry.Noop()
	}
	clk := deps.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	profiles, err := LoadProfiles(cfg.ClustersDir)
	if err != nil {
		return err
	}
	nc := deps.NC
	if nc == nil {
		nc, err = natsconn.Connect(ctx, cfg.NATS, "taskyard-scheduler "+cfg.Instance, log)
		if err != nil {
			return err
		}
		defer nc.Close()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	opts := cfg.NATS.StoreOptions()
	opts.LeaseTTL = cfg.LeaseTTL
	if err := natsconn.Ensure(ctx, js, opts); err != nil {
		return err
	}
	b := v1.Buckets(cfg.NATS.Prefix)
	kvSchedules, err := js.KeyValue(ctx, b.Schedules)
	if err != nil {
		return fmt.Errorf("kv %s: %w", b.Schedules, err)
	}
	kvState, err := js.KeyValue(ctx, b.State)
	if err != nil {
		return fmt.Errorf("kv %s: %w", b.State, err)
	}
	kvLeases, err := js.KeyValue(ctx, b.Leases)
	if err != nil {
		return fmt.Errorf("kv %s: %w", b.Leases, err)
	}

	run := deps.Runner
	var shutdownRunner func()
	if run == nil {
		switch cfg.Runner {
		case RunnerExec:
			var sink logsink.Sink
			if cfg.ForwardAddr != "" {
				fw, err := logsink.NewForward(cfg.ForwardAddr, log)
				if err != nil {
					return err
				}
				sink = fw
			} else {
				w := deps.Stdout
				if w == nil {
					w = os.Stdout
				}
				sink = logsink.NewJSON(w)
			}
			er := execrunner.New(execrunner.Config{JS: js, Prefix: cfg.NATS.Prefix, Log: log, Sink: sink, KillGrace: cfg.KillGrace, Dir: cfg.WorkDir})
			run = er
			shutdownRunner = func() {
				er.Shutdown()
				if err := sink.Close(); err != nil {
					log.Warn("close log sink", "err", err)
				}
			}
		case RunnerECS:
			client, err := ecsrunner.NewClient(ctx, cfg.ECS.Region, cfg.ECS.Endpoint)
			if err != nil {
				return err
			}
			run = ecsrunner.New(ecsrunner.Config{Client: client, Log: log, Rate: cfg.ECS.RunTaskRate, Burst: cfg.ECS.RunTaskBurst})
		case RunnerDocker:
			opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
			if cfg.Docker.Host != "" {
				opts = append(opts, client.WithHost(cfg.Docker.Host))
			}
			dc, err := client.NewClientWithOpts(opts...)
			if err != nil {
				return fmt.Errorf("docker client: %w", err)
			}
			dr := dockerrunner.New(dockerrunner.Config{
				Client: dc, JS: js, Prefix: cfg.NATS.Prefix, Log: log,
				FluentdAddress: cfg.Docker.FluentdAddress, FluentdAsync: cfg.Docker.FluentdAsync,
				Network: cfg.Docker.Network, KillGrace: cfg.KillGrace, Keep: cfg.Docker.Keep, PullTimeout: cfg.Docker.PullTimeout,
			})
			run = dr
			// Job containers outlive a stopping scheduler: the replica
			// that leads next adopts them (Active) and reports their end.
			shutdownRunner = func() {
				dr.Shutdown(false)
				_ = dc.Close()
			}
		}
	}
	if shutdownRunner != nil {
		defer shutdownRunner()
	}

	ls := lease.New(kvLeases, lease.Key, cfg.Instance, cfg.LeaseTTL, log)
	eng, err := engine.New(engine.Config{
		Prefix: cfg.NATS.Prefix, Instance: cfg.Instance, Clock: clk, Runner: run, Profiles: profiles,
		JS: js, State: kvState, Leader: ls, Log: log, Meter: tel.Meter, Tracer: tel.Tracer,
		Lookahead: cfg.ClaimAhead,
	})
	if err != nil {
		return err
	}
	ctl := control.New(control.Config{
		Prefix: cfg.NATS.Prefix, NC: nc, Schedules: kvSchedules, State: kvState, Profiles: profiles,
		Engine: eng, Clock: clk, Log: log,
	})

	loaded := make(chan struct{})
	watch := func(ctx context.Context) error { return watchSchedules(ctx, kvSchedules, eng, profiles, log, loaded) }

	subj := v1.Subjects{Prefix: cfg.NATS.Prefix}
	taskSub, err := nc.Subscribe(subj.Tasks(), func(m *nats.Msg) {
		ev := &v1.TaskStateChanged{}
		if proto.Unmarshal(m.Data, ev) == nil {
			eng.TaskEvent(ev)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subj.Tasks(), err)
	}
	defer func() { _ = taskSub.Unsubscribe() }()
	finSub, err := nc.Subscribe(subj.RunFinished("*"), func(m *nats.Msg) {
		rf := &v1.RunFinished{}
		if proto.Unmarshal(m.Data, rf) == nil {
			eng.RunFinished(rf)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subj.RunFinished("*"), err)
	}
	defer func() { _ = finSub.Unsubscribe() }()

	actors := []lifecycle.Actor{
		watch,
		ctl.Run,
		// The engine starts once the schedules are loaded, so a takeover
		// catches up every schedule; the lease campaigns after that.
		func(ctx context.Context) error {
			select {
			case <-loaded:
			case <-ctx.Done():
				return nil
			}
			errc := make(chan error, 1)
			lctx, cancel := context.WithCancel(ctx)
			go func() { errc <- ls.Run(lctx, cfg.ReleaseLease) }()
			err := eng.Run(ctx)
			cancel()
			return errors.Join(err, <-errc)
		},
	}
	if cfg.HTTPListen != "" || deps.Listener != nil {
		hs := health.New(log)
		hs.AddCheck("nats", health.NATSCheck(nc))
		hs.AddCheck("schedules", func(context.Context) error {
			select {
			case <-loaded:
				return nil
			default:
				return errors.New("schedules not loaded yet")
			}
		})
		hs.Handle("GET /metrics", tel.Handler())
		ln := deps.Listener
		if ln == nil {
			ln, err = net.Listen("tcp", cfg.HTTPListen)
			if err != nil {
				return fmt.Errorf("http listen %s: %w", cfg.HTTPListen, err)
			}
		}
		actors = append(actors, func(ctx context.Context) error { return hs.Run(ctx, ln) })
	}
	log.Info("scheduler starting", "instance", cfg.Instance, "runner", run.Name(), "profiles", len(profiles), "lease_ttl", cfg.LeaseTTL)
	return lifecycle.Run(ctx, actors...)
}

// watchSchedules feeds KV taskyard-schedules into the engine: the initial
// values, then every change as it happens.
func watchSchedules(ctx context.Context, kv jetstream.KeyValue, eng *engine.Engine, profiles map[string]*schedule.Profile, log *slog.Logger, loaded chan<- struct{}) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch schedules: %w", err)
	}
	defer func() { _ = w.Stop() }()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("schedule watch closed")
			}
			if e == nil {
				if initial {
					initial = false
					log.Info("schedules loaded", "count", eng.Len())
					close(loaded)
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				eng.Remove(e.Key())
				log.Info("schedule removed", "schedule", e.Key())
				continue
			}
			spec := &v1.ScheduleSpec{}
			if err := proto.Unmarshal(e.Value(), spec); err != nil {
				log.Error("decode schedule", "key", e.Key(), "err", err)
				continue
			}
			if probs := control.Validate(spec, profiles); len(probs) > 0 {
				// Written by something other than apply, or the profiles
				// changed: keep it out rather than guess.
				log.Error("schedule rejected", "schedule", e.Key(), "problems", probs)
				eng.Remove(e.Key())
				continue
			}
			if err := eng.Upsert(spec); err != nil {
				log.Error("schedule rejected", "schedule", e.Key(), "err", err)
				continue
			}
			if !initial {
				log.Info("schedule updated", "schedule", e.Key(), "revision", e.Revision())
			}
		}
	}
}
