// Package app is the taskyard exporter daemon: it consumes every run, task,
// alert, log-volume and daemon-stats event from JetStream (durable
// consumers, so it catches up after a restart), keeps monotonic counters in
// KV, and serves them as Fluent-Bit-shaped JSON on GET /api/v1/metrics and
// as Prometheus exposition on GET /metrics. It is public so that
// `taskyard dev` can run it in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/aggregate"
	"github.com/taskyard/taskyard/services/exporter/internal/ingest"
	"github.com/taskyard/taskyard/services/exporter/internal/promexport"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/health"
	"github.com/taskyard/taskyard/services/kit/lifecycle"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/kit/telemetry"
)

// Daemon is the daemon name in subjects, consumer names and telemetry.
const Daemon = "exporter"

// Version is reported in the exporter's own DaemonStats.
var Version = "dev"

// Config is the exporter's configuration.
type Config struct {
	NATS natsconn.Config
	// Listen is the HTTP address of /api/v1/metrics, /metrics, /healthz,
	// /readyz.
	Listen string
	// Instance names this exporter's consumers and snapshot (default: host
	// name). Two exporters with the same instance share a position: don't.
	Instance string
	// Clusters are cluster profile files or directories; their taskLimit
	// becomes cluster.<name>.task_limit.
	Clusters []string
	// FlushInterval is the longest time between snapshot writes.
	FlushInterval time.Duration
	// StaleAfter: a daemon instance that has not reported for longer is
	// reported down.
	StaleAfter time.Duration
	// StatsInterval is how often the exporter publishes its own DaemonStats.
	StatsInterval time.Duration
	// LogLevel is debug, info, warn or error.
	LogLevel string
}

// Register binds the flags and their TASKYARD_* variables.
func (c *Config) Register(f *config.Flags) {
	c.NATS.Register(f)
	host, _ := os.Hostname()
	f.String(&c.Listen, "listen", ":2020", "HTTP listen address of /api/v1/metrics, /metrics, /healthz and /readyz")
	f.String(&c.Instance, "instance", host, "instance name: names the durable consumers (exporter-<instance>) and the snapshot keys; unique per exporter")
	f.List(&c.Clusters, "clusters", nil, "cluster profile files or directories whose taskLimit is exported as cluster.<name>.task_limit")
	f.Duration(&c.FlushInterval, "flush-interval", time.Second, "longest time between counter snapshot writes")
	f.Duration(&c.StaleAfter, "stale-after", time.Minute, "a daemon instance is reported down (daemons.<daemon>.<instance>.up = 0) when its last stats report is older than this")
	f.Duration(&c.StatsInterval, "stats-interval", 15*time.Second, "how often the exporter publishes its own stats on <prefix>.stats.exporter.<instance>")
	f.String(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var p config.Problems
	c.NATS.Validate(&p)
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Addf("listen: %q is not host:port: %v", c.Listen, err)
	}
	p.Check(c.Instance != "", "instance: must not be empty (the host name could not be read; set --instance)")
	p.Check(c.FlushInterval >= 10*time.Millisecond && c.FlushInterval <= time.Minute, "flush-interval: %s is not between 10ms and 1m", c.FlushInterval)
	p.Check(c.StaleAfter > 0, "stale-after: %s must be positive", c.StaleAfter)
	p.Check(c.StatsInterval > 0, "stats-interval: %s must be positive", c.StatsInterval)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("log-level: %q is not debug, info, warn or error", c.LogLevel)
	}
	for _, path := range c.Clusters {
		if _, err := os.Stat(path); err != nil {
			p.Addf("clusters: %v", err)
		}
	}
	return p.Err()
}

// Deps are the exporter's collaborators.
type Deps struct {
	Log *slog.Logger
	// Telemetry provides the meter (whose Prometheus handler serves
	// /metrics); built from the environment when nil.
	Telemetry *telemetry.Telemetry
	// NC is the NATS connection; Run connects from cfg.NATS when nil (and
	// closes what it opened).
	NC *nats.Conn
	// Clock is the time source of seconds_since_* and staleness (time.Now
	// when nil).
	Clock func() time.Time
	// Listener, when set, is served instead of listening on cfg.Listen.
	Listener net.Listener
	// Started, when set, is called once the exporter has restored its
	// snapshot, created its consumers and is serving.
	Started func(addr net.Addr)
}

// Run runs the exporter until ctx is cancelled.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clock := deps.Clock
	if clock == nil {
		clock = time.Now
	}
	tel := deps.Telemetry
	if tel == nil {
		t, err := telemetry.New(ctx, telemetry.Options{Service: "taskyard-exporter", Instance: cfg.Instance, Version: Version})
		if err != nil {
			return err
		}
		defer func() { _ = t.Shutdown(context.Background()) }()
		tel = t
	}
	nc := deps.NC
	if nc == nil {
		c, err := natsconn.Connect(ctx, cfg.NATS, "taskyard-exporter "+cfg.Instance, log)
		if err != nil {
			return err
		}
		defer c.Close()
		nc = c
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := natsconn.Ensure(ctx, js, cfg.NATS.StoreOptions()); err != nil {
		return err
	}

	// One process per instance: wait for the instance's lease.
	host, _ := os.Hostname()
	lease, err := ingest.AcquireLease(ctx, js, cfg.NATS.Prefix, cfg.Instance,
		fmt.Sprintf("%s pid %d since %s", host, os.Getpid(), clock().UTC().Format(time.RFC3339)), log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			log.Warn("release instance lease", "err", err)
		}
	}()

	limits, err := taskLimits(cfg.Clusters)
	if err != nil {
		return err
	}
	pm, err := promexport.New(tel.Meter)
	if err != nil {
		return err
	}
	store := aggregate.New(cfg.NATS.Prefix, pm)
	store.SetTaskLimits(limits)
	if err := pm.Observe(store, clock, cfg.StaleAfter, "logrouter"); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}

	ing := ingest.New(js, store, log, ingest.Config{Prefix: cfg.NATS.Prefix, Instance: cfg.Instance, FlushInterval: cfg.FlushInterval})
	n, err := ing.Restore(ctx)
	if err != nil {
		return err
	}
	log.Info("snapshot restored", "entities", n, "instance", cfg.Instance)
	// After a reconnect the consumers are recreated (see Resubscribe).
	prevReconnect := nc.Opts.ReconnectedCB
	nc.SetReconnectHandler(func(c *nats.Conn) {
		if prevReconnect != nil {
			prevReconnect(c)
		}
		ing.Resubscribe()
	})
	defer nc.SetReconnectHandler(prevReconnect)

	ln := deps.Listener
	if ln == nil {
		l, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", cfg.Listen, err)
		}
		ln = l
	}
	srv := health.New(log)
	srv.AddCheck("nats", health.NATSCheck(nc))
	srv.AddCheck("consumers", func(context.Context) error {
		if !ing.Ready() {
			return errors.New("consumers not running")
		}
		return nil
	})
	srv.Handle("GET /api/v1/metrics", metricsHandler(store, clock, aggregate.RenderOptions{StaleAfter: cfg.StaleAfter}))
	srv.Handle("GET /metrics", tel.Handler())

	w := &watcher{js: js, store: store, log: log, prefix: cfg.NATS.Prefix}
	var once sync.Once
	started := func() {
		if deps.Started != nil {
			once.Do(func() { deps.Started(ln.Addr()) })
		}
	}
	return lifecycle.Run(ctx,
		func(ctx context.Context) error { return srv.Run(ctx, ln) },
		ing.Run,
		lease.Keep,
		w.schedules,
		w.states,
		func(ctx context.Context) error {
			return publishStats(ctx, js, cfg, clock, store, ing, log, started)
		},
	)
}

// metricsHandler serves the /api/v1/metrics document.
func metricsHandler(store *aggregate.Store, clock func() time.Time, o aggregate.RenderOptions) http.Handler {
	pool := sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		bp := pool.Get().(*[]byte)
		b := store.RenderJSON((*bp)[:0], clock(), o)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		*bp = b
		pool.Put(bp)
	})
}

func taskLimits(paths []string) (map[string]int64, error) {
	limits := map[string]int64{}
	var errs []error
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		profiles := map[string]*schedule.Profile{}
		if fi.IsDir() {
			profiles, err = schedule.LoadProfileDir(path)
		} else {
			var p *schedule.Profile
			if p, err = schedule.LoadProfile(path); err == nil {
				profiles[p.Name] = p
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for name, p := range profiles {
			limits[name] = int64(p.TaskLimit)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("load cluster profiles: %w", err)
	}
	return limits, nil
}

// watcher follows the scheduler's buckets for what is not an event: which
// schedules exist, their duration budget, and their next fire.
type watcher struct {
	js     jetstream.JetStream
	store  *aggregate.Store
	log    *slog.Logger
	prefix string
}

func (w *watcher) watch(ctx context.Context, bucket string, apply func(key string, value []byte, deleted bool)) error {
	kv, err := w.js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("open kv bucket %s: %w", bucket, err)
	}
	kw, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch kv bucket %s: %w", bucket, err)
	}
	defer func() { _ = kw.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-kw.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				continue
			}
			apply(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut)
		}
	}
}

func (w *watcher) schedules(ctx context.Context) error {
	return w.watch(ctx, v1.Buckets(w.prefix).Schedules, func(key string, value []byte, deleted bool) {
		var spec v1.ScheduleSpec
		if !deleted {
			if err := proto.Unmarshal(value, &spec); err != nil {
				w.log.Warn("undecodable schedule spec", "key", key, "err", err)
				return
			}
		}
		w.store.SetScheduleInfo(key, func(i *aggregate.ScheduleInfo) {
			i.Known = !deleted
			i.Budget = spec.GetTiming().GetTimeout().AsDuration()
		})
	})
}

func (w *watcher) states(ctx context.Context) error {
	return w.watch(ctx, v1.Buckets(w.prefix).State, func(key string, value []byte, deleted bool) {
		var st v1.ScheduleState
		if !deleted {
			if err := proto.Unmarshal(value, &st); err != nil {
				w.log.Warn("undecodable schedule state", "key", key, "err", err)
				return
			}
		}
		name := st.GetSchedule()
		if name == "" {
			name = key
		}
		w.store.SetScheduleInfo(name, func(i *aggregate.ScheduleInfo) {
			i.NextFire = time.Time{}
			if st.GetNextFire() != nil {
				i.NextFire = st.GetNextFire().AsTime()
			}
		})
	})
}

// publishStats publishes the exporter's own DaemonStats at start and every
// cfg.StatsInterval, so daemons.exporter.<instance>.up tells that the
// exporter itself is alive.
func publishStats(ctx context.Context, js jetstream.JetStream, cfg Config, clock func() time.Time, store *aggregate.Store, ing *ingest.Ingester, log *slog.Logger, started func()) error {
	startedAt := timestamppb.New(clock())
	subj := v1.Subjects{Prefix: cfg.NATS.Prefix}.DaemonStats(Daemon, cfg.Instance)
	publish := func() {
		m := &v1.DaemonStats{
			Daemon: Daemon, Instance: cfg.Instance, Time: timestamppb.New(clock()), StartedAt: startedAt, Version: Version,
			Gauges: map[string]float64{
				"events_applied":   float64(store.Applied()),
				"snapshot_flushes": float64(ing.Flushes()),
				"bad_messages":     float64(ing.BadMessages()),
			},
		}
		if _, err := v1.Publish(ctx, js, subj, m, ""); err != nil && ctx.Err() == nil {
			log.Warn("publish own stats", "err", err)
		}
	}
	// The first report, and Started, wait for the consumers.
	for !ing.Ready() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
	publish()
	started()
	t := time.NewTicker(cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			publish()
		}
	}
}
