// Package app is the taskyard exitwatch daemon: configuration, wiring and
// Run. It is public so that `taskyard dev` runs exitwatch in-process; the
// logic lives in the internal packages (ecsevent, sqssource, ecspoll,
// runstore, verdict, tracker, deliver, ping, control).
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/control"
	"github.com/taskyard/taskyard/services/exitwatch/internal/deliver"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecsevent"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecspoll"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ping"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/sqssource"
	"github.com/taskyard/taskyard/services/exitwatch/internal/tracker"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/health"
	"github.com/taskyard/taskyard/services/kit/lifecycle"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/kit/telemetry"
)

// Daemon is the daemon's name in logs, subjects and metrics.
const Daemon = "exitwatch"

// Config is exitwatch's configuration.
type Config struct {
	NATS     natsconn.Config
	Instance string
	LogLevel string
	// HTTPListen serves /healthz, /readyz, /metrics and the ping API.
	HTTPListen string

	// ClustersDir holds the cluster profiles (taskLimit, ECS cluster name).
	ClustersDir string
	// RoutesFile routes alerts to channels; without it alerts go to the log.
	RoutesFile string
	// AlertWebhook sends every alert to this URL as protojson (dev mode);
	// it replaces RoutesFile.
	AlertWebhook string
	// ChecksFile defines the ping checks.
	ChecksFile string

	// SQSQueueURL is the queue the EventBridge rule on ECS Task State
	// Change feeds.
	SQSQueueURL string
	// SQSWait is the long-polling wait.
	SQSWait time.Duration
	// ECSPollClusters are polled with ListTasks/DescribeTasks (fallback for
	// accounts without the EventBridge rule).
	ECSPollClusters []string
	ECSPollInterval time.Duration
	// AWSRegion and AWSEndpoint override the SDK's defaults.
	AWSRegion, AWSEndpoint string

	LostAfter         time.Duration
	StuckPendingAfter time.Duration
	MissedGrace       time.Duration
	SilentGrace       time.Duration
	OverlapRuns       int
	StopOverrun       bool
	WatchUnmanaged    bool
	SummaryEvery      time.Duration
	Tick              time.Duration
	Workers           int
	ReplayFrom        time.Duration
}

// Register binds the flags and their TASKYARD_* variables.
func (c *Config) Register(f *config.Flags) {
	c.NATS.Register(f)
	host, _ := os.Hostname()
	f.String(&c.Instance, "instance", host, "name of this replica in logs and events")
	f.String(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.String(&c.HTTPListen, "http-listen", ":8082", "HTTP address of /healthz, /readyz, /metrics and the ping API (/ping/...)")
	f.String(&c.ClustersDir, "clusters", "", "directory of cluster profiles (*.yml): taskLimit for cluster_capacity, ECS cluster names")
	f.String(&c.RoutesFile, "routes", "", "alert routes file (channels and routes); without it every alert goes to the log")
	f.String(&c.AlertWebhook, "alert-webhook", "", "send every alert to this URL as protojson (replaces --routes)")
	f.String(&c.ChecksFile, "checks", "", "ping checks file for jobs that run outside taskyard")
	f.String(&c.SQSQueueURL, "sqs-queue-url", "", "SQS queue fed by an EventBridge rule on 'ECS Task State Change'")
	f.Duration(&c.SQSWait, "sqs-wait", 20*time.Second, "SQS long-polling wait (at most 20s)")
	f.List(&c.ECSPollClusters, "ecs-poll-clusters", nil, "ECS clusters to poll with ListTasks/DescribeTasks (fallback without EventBridge)")
	f.Duration(&c.ECSPollInterval, "ecs-poll-interval", 30*time.Second, "ECS polling interval")
	f.String(&c.AWSRegion, "aws-region", "", "AWS region (default: the SDK's, e.g. AWS_REGION)")
	f.String(&c.AWSEndpoint, "aws-endpoint", "", "AWS endpoint override for SQS and ECS (e.g. a local SQS)")
	f.Duration(&c.LostAfter, "lost-after", 15*time.Minute, "a dispatched run with no task event after this is LOST")
	f.Duration(&c.StuckPendingAfter, "stuck-pending-after", 10*time.Minute, "a task not RUNNING this long after creation raises task_stuck_pending")
	f.Duration(&c.MissedGrace, "missed-grace", time.Minute, "grace after a fire's startingDeadline before run_missed")
	f.Duration(&c.SilentGrace, "silent-grace", 2*time.Minute, "wait for log counts this long after a run finished before silent_run")
	f.Int(&c.OverlapRuns, "overlap-runs", 2, "runs of a concurrency=allow schedule that may overlap before the overlap alert")
	f.Bool(&c.StopOverrun, "stop-overrun", false, "stop (ECS StopTask) the tasks of a run past its timeout")
	f.Bool(&c.WatchUnmanaged, "watch-unmanaged", false, "raise exit alerts for tasks taskyard did not start (watched clusters)")
	f.Duration(&c.SummaryEvery, "summary-every", 15*time.Minute, "period of the summary alert (0 disables it)")
	f.Duration(&c.Tick, "rule-tick", 5*time.Second, "how often time-based rules are evaluated")
	f.Int(&c.Workers, "workers", 8, "events processed in parallel (each run always on the same worker)")
	f.Duration(&c.ReplayFrom, "replay-from", time.Hour, "a newly created consumer starts with events this old")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var p config.Problems
	c.NATS.Validate(&p)
	p.Check(c.HTTPListen != "", "http-listen: must not be empty")
	p.Check(c.SQSWait > 0 && c.SQSWait <= 20*time.Second, "sqs-wait: %s is not between 1s and 20s", c.SQSWait)
	p.Check(c.ECSPollInterval >= time.Second, "ecs-poll-interval: %s is shorter than 1s", c.ECSPollInterval)
	p.Check(c.LostAfter > 0, "lost-after: must be positive")
	p.Check(c.StuckPendingAfter > 0, "stuck-pending-after: must be positive")
	p.Check(c.MissedGrace >= 0, "missed-grace: must not be negative")
	p.Check(c.SilentGrace >= 0, "silent-grace: must not be negative")
	p.Check(c.OverlapRuns >= 1, "overlap-runs: %d is less than 1", c.OverlapRuns)
	p.Check(c.SummaryEvery == 0 || c.SummaryEvery >= time.Minute, "summary-every: %s is shorter than 1m", c.SummaryEvery)
	p.Check(c.Tick >= 10*time.Millisecond, "rule-tick: %s is too short", c.Tick)
	p.Check(c.Workers >= 1 && c.Workers <= 256, "workers: %d is not between 1 and 256", c.Workers)
	p.Check(c.ReplayFrom > 0, "replay-from: must be positive")
	if c.SQSQueueURL != "" {
		p.Check(strings.HasPrefix(c.SQSQueueURL, "https://") || strings.HasPrefix(c.SQSQueueURL, "http://"), "sqs-queue-url: %q is not a queue URL", c.SQSQueueURL)
	}
	if c.AlertWebhook != "" {
		p.Check(strings.HasPrefix(c.AlertWebhook, "http://") || strings.HasPrefix(c.AlertWebhook, "https://"), "alert-webhook: %q is not an http(s) URL", c.AlertWebhook)
	}
	for _, f := range []struct{ flag, path string }{{"routes", c.RoutesFile}, {"checks", c.ChecksFile}, {"clusters", c.ClustersDir}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			p.Addf("%s: %v", f.flag, err)
		}
	}
	return p.Err()
}

// Deps are the collaborators Run uses; zero values get defaults.
type Deps struct {
	Log       *slog.Logger
	Telemetry *telemetry.Telemetry
	// NC is used when set (dev mode); otherwise Run connects from cfg.
	NC *nats.Conn
	// Now is the clock of the rules (time.Now when nil).
	Now func() time.Time
	// AWS is the SDK configuration for SQS and ECS (loaded from the
	// environment when nil and needed).
	AWS *aws.Config
	// HTTP is the client for webhooks and Slack.
	HTTP *http.Client
	// Listener, when set, serves HTTP instead of listening on HTTPListen.
	Listener net.Listener
}

// LoadProfiles reads every *.yml / *.yaml file of dir as a cluster profile
// and returns what the rules need of them.
func LoadProfiles(dir string) (map[string]tracker.Cluster, error) {
	profiles, err := schedule.LoadProfileDir(dir)
	if err != nil {
		return nil, fmt.Errorf("clusters: %w", err)
	}
	out := make(map[string]tracker.Cluster, len(profiles))
	for name, p := range profiles {
		out[name] = tracker.Cluster{Name: name, ECSCluster: ecsevent.ClusterName(p.Cluster), TaskLimit: p.TaskLimit}
	}
	return out, nil
}

// Run runs exitwatch until ctx ends. It returns nil when ctx ends, also
// while it is still starting.
func Run(ctx context.Context, cfg Config, deps Deps) (err error) {
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = nil
		}
	}()
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
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	meter := tel.Meter.Meter("github.com/taskyard/taskyard/services/exitwatch")

	clusters, err := LoadProfiles(cfg.ClustersDir)
	if err != nil {
		return err
	}
	routes := deliver.LogOnly()
	switch {
	case cfg.AlertWebhook != "":
		routes = deliver.WebhookAll(cfg.AlertWebhook)
	case cfg.RoutesFile != "":
		if routes, err = deliver.Load(cfg.RoutesFile, nil); err != nil {
			return err
		}
	}
	var checks *ping.File
	if cfg.ChecksFile != "" {
		if checks, err = ping.Load(cfg.ChecksFile); err != nil {
			return err
		}
	}

	nc := deps.NC
	if nc == nil {
		nc, err = natsconn.Connect(ctx, cfg.NATS, "taskyard-exitwatch "+cfg.Instance, log)
		if err != nil {
			return err
		}
		defer nc.Close()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := natsconn.Ensure(ctx, js, cfg.NATS.StoreOptions()); err != nil {
		return err
	}
	b := v1.Buckets(cfg.NATS.Prefix)
	kvRuns, err := js.KeyValue(ctx, b.Runs)
	if err != nil {
		return fmt.Errorf("kv %s: %w", b.Runs, err)
	}
	kvSchedules, err := js.KeyValue(ctx, b.Schedules)
	if err != nil {
		return fmt.Errorf("kv %s: %w", b.Schedules, err)
	}
	kvSnap, err := js.KeyValue(ctx, b.Snapshots)
	if err != nil {
		return fmt.Errorf("kv %s: %w", b.Snapshots, err)
	}

	// Runs ctx for the background watchers; cancelled when Run returns.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	retain := max(cfg.SummaryEvery, cfg.SilentGrace) + 10*time.Minute
	store := runstore.New(kvRuns, log, retain, now)
	if err := store.Watch(wctx); err != nil {
		return err
	}
	list := watchlist.New(log, now)
	if checks != nil {
		for _, it := range checks.Checks {
			list.Put(it)
		}
	}
	if err := list.WatchSchedules(wctx, kvSchedules); err != nil {
		return err
	}

	clusterOf := func(arn string) string {
		n := ecsevent.ClusterName(arn)
		for _, c := range clusters {
			if c.ECSCluster == n {
				return c.Name
			}
		}
		return n
	}
	var awsCfg aws.Config
	needAWS := cfg.SQSQueueURL != "" || len(cfg.ECSPollClusters) > 0 || cfg.StopOverrun
	if needAWS {
		if deps.AWS != nil {
			awsCfg = *deps.AWS
		} else {
			var opts []func(*awsconfig.LoadOptions) error
			if cfg.AWSRegion != "" {
				opts = append(opts, awsconfig.WithRegion(cfg.AWSRegion))
			}
			if awsCfg, err = awsconfig.LoadDefaultConfig(ctx, opts...); err != nil {
				return fmt.Errorf("aws config: %w", err)
			}
		}
		if cfg.AWSEndpoint != "" {
			awsCfg.BaseEndpoint = aws.String(cfg.AWSEndpoint)
		}
	}
	var ecsClient *ecs.Client
	if len(cfg.ECSPollClusters) > 0 || cfg.StopOverrun {
		ecsClient = ecs.NewFromConfig(awsCfg)
	}

	tdeps := tracker.Deps{JS: js, Store: store, List: list, Log: log.With("component", "tracker"), Now: now, Meter: meter,
		Tracer: tel.Tracer.Tracer("github.com/taskyard/taskyard/services/exitwatch")}
	if cfg.StopOverrun && ecsClient != nil {
		tdeps.Stopper = ecspoll.Stopper{API: ecsClient}
	}
	tr, err := tracker.New(tracker.Config{
		Prefix: cfg.NATS.Prefix, Instance: cfg.Instance, LostAfter: cfg.LostAfter, StuckPendingAfter: cfg.StuckPendingAfter,
		MissedGrace: cfg.MissedGrace, SilentGrace: cfg.SilentGrace, OverlapRuns: cfg.OverlapRuns, StopOverrun: cfg.StopOverrun,
		WatchUnmanaged: cfg.WatchUnmanaged, Clusters: clusters, Workers: cfg.Workers, Tick: cfg.Tick, SummaryEvery: cfg.SummaryEvery,
		ReplayFrom: cfg.ReplayFrom,
	}, tdeps)
	if err != nil {
		return err
	}
	disp, err := deliver.New(routes, cfg.NATS.Prefix, deliver.Deps{JS: js, Threads: deliver.NewThreadStore(kvSnap), Log: log.With("component", "deliver"),
		Now: now, Meter: meter, HTTP: deps.HTTP})
	if err != nil {
		return err
	}
	// Delivery consumers exist before anything can raise an alert.
	consumers, err := disp.Consumers(ctx)
	if err != nil {
		return err
	}

	hs := health.New(log)
	hs.AddCheck("nats", health.NATSCheck(nc))
	hs.AddCheck("runs", func(context.Context) error {
		if !store.Ready() {
			return errors.New("run records not loaded yet")
		}
		return nil
	})
	hs.Handle("GET /metrics", tel.Handler())
	if checks != nil {
		ps := ping.New(checks, list, store, js, cfg.NATS.Prefix, log.With("component", "ping"), now)
		hs.Handle("/ping/", ps)
	}

	ln := deps.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return fmt.Errorf("http-listen %s: %w", cfg.HTTPListen, err)
		}
	}
	actors := []lifecycle.Actor{
		func(ctx context.Context) error { return hs.Run(ctx, ln) },
		tr.Run,
		func(ctx context.Context) error { return disp.Run(ctx, consumers) },
		func(ctx context.Context) error {
			return control.Serve(ctx, nc, cfg.NATS.Prefix, control.Deps{List: list, Store: store, Rules: tr, Log: log, Now: now, MissedGrace: cfg.MissedGrace})
		},
	}
	if cfg.SQSQueueURL != "" {
		src, err := sqssource.New(sqssource.Config{QueueURL: cfg.SQSQueueURL, Prefix: cfg.NATS.Prefix, WaitTime: cfg.SQSWait, ClusterOf: clusterOf},
			sqs.NewFromConfig(awsCfg), js, log.With("component", "sqs"), meter)
		if err != nil {
			return err
		}
		actors = append(actors, src.Run)
	}
	if len(cfg.ECSPollClusters) > 0 {
		names := append([]string(nil), cfg.ECSPollClusters...)
		sort.Strings(names)
		p := ecspoll.New(ecspoll.Config{Clusters: names, Interval: cfg.ECSPollInterval, Prefix: cfg.NATS.Prefix, ClusterOf: clusterOf},
			ecsClient, js, log.With("component", "ecspoll"), now)
		actors = append(actors, p.Run)
	}
	log.Info("exitwatch started", "instance", cfg.Instance, "http", ln.Addr().String(), "clusters", len(clusters),
		"sqs", cfg.SQSQueueURL != "", "ecs_poll", len(cfg.ECSPollClusters), "checks", checks != nil)
	return lifecycle.Run(ctx, actors...)
}

// DefaultConfig is the configuration with every flag at its default.
func DefaultConfig() Config {
	var c Config
	fs := flag.NewFlagSet("exitwatch", flag.ContinueOnError)
	c.Register(config.New(fs, func(string) (string, bool) { return "", false }))
	_ = fs.Parse(nil)
	return c
}

// DevConfig is the configuration of `taskyard dev`: the embedded NATS,
// HTTP (health, metrics, ping API) on httpListen, cluster profiles from
// clustersDir, and every alert to alertWebhook when set, else to the log.
func DevConfig(nc natsconn.Config, httpListen, clustersDir, alertWebhook string) Config {
	c := DefaultConfig()
	c.NATS = nc
	c.Instance = "dev"
	c.HTTPListen = httpListen
	c.ClustersDir = clustersDir
	c.AlertWebhook = alertWebhook
	c.Tick = time.Second
	return c
}
