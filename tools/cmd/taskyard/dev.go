package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/taskyard/taskyard/services/kit/lifecycle"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// devEnv is what `taskyard dev` gives each daemon it runs in-process.
type devEnv struct {
	Log *slog.Logger
	// NATS reaches the embedded server.
	NATS natsconn.Config
	// DataDir is the root of dev state; each daemon uses DataDir/<daemon>.
	DataDir string
	// SchedulesDir and ClustersDir are applied/loaded at start ("" = none).
	SchedulesDir, ClustersDir string
	// ForwardListen is where the logrouter listens for Fluent Forward;
	// ForwardAddr is the address the runners send to (same, as a dial address).
	ForwardListen, ForwardAddr string
	// LogsDir receives the logrouter's file output.
	LogsDir string
	// MetricsListen is the exporter's listen address.
	MetricsListen string
	// AlertWebhook, when set, receives every alert as protojson.
	AlertWebhook string
	// SchedulerHTTP, ExitwatchHTTP and LogrouterHTTP are the daemons'
	// health/metrics listen addresses (exitwatch's also serves the ping API).
	SchedulerHTTP, ExitwatchHTTP, LogrouterHTTP string
}

type devFlags struct {
	natsListen    string
	schedules     string
	clusters      string
	data          string
	forwardListen string
	logsDir       string
	metricsListen string
	alertWebhook  string
	logLevel      string
	schedulerHTTP string
	exitwatchHTTP string
	logrouterHTTP string
}

func newDevCmd(g *globals) *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole system in one process: embedded NATS, the daemons, a local runner",
		Long: `Run taskyard on one laptop with no AWS and no Docker: an embedded NATS
server with JetStream (state under --data), the streams and buckets, and every
daemon in-process, jobs run as local processes by the exec runner.

Stop it with Ctrl-C: every daemon shuts down gracefully. State (JetStream,
spools, log files) stays under --data for the next start.`,
		Example: `  taskyard dev --schedules examples/schedules --clusters examples/clusters
  taskyard events tail        # in another terminal`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.natsListen, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server")
	fl.StringVar(&f.schedules, "schedules", "", "directory of schedule files to apply at start")
	fl.StringVar(&f.clusters, "clusters", "", "directory of cluster profiles")
	fl.StringVar(&f.data, "data", ".data", "directory for JetStream, spools and logs")
	fl.StringVar(&f.forwardListen, "forward-listen", "127.0.0.1:24224", "logrouter Fluent Forward listen address")
	fl.StringVar(&f.logsDir, "logs-dir", "", "logrouter file output directory (default DATA/logs)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "127.0.0.1:2020", "exporter listen address (/api/v1/metrics, /metrics)")
	fl.StringVar(&f.alertWebhook, "alert-webhook", "", "URL that receives every alert as JSON (default: alerts go to the log)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level of the daemons: debug, info, warn, error")
	fl.StringVar(&f.schedulerHTTP, "scheduler-http", "127.0.0.1:8081", "scheduler /healthz, /readyz, /metrics")
	fl.StringVar(&f.exitwatchHTTP, "exitwatch-http", "127.0.0.1:8082", "exitwatch /healthz, /readyz, /metrics and the ping API")
	fl.StringVar(&f.logrouterHTTP, "logrouter-http", "127.0.0.1:2021", "logrouter /api/v1/metrics, /api/v1/health, /healthz, /readyz, /metrics")
	return cmd
}

func runDev(ctx context.Context, g *globals, f devFlags) error {
	level, err := logging.ParseLevel(f.logLevel)
	if err != nil {
		return usageError("--log-level: %v", err)
	}
	base := logging.New(g.errOut, level, "")
	log := base.With("daemon", "dev")
	data, err := filepath.Abs(f.data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: f.natsListen, StoreDir: filepath.Join(data, "nats")})
	if err != nil {
		return err
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	log.Info("embedded nats listening", "url", srv.ClientURL(), "store", filepath.Join(data, "nats"))

	natsCfg := g.NATS
	natsCfg.URL = srv.ClientURL()
	nc, err := natsconn.Connect(ctx, natsCfg, "taskyard-dev", log)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	if err := natsconn.Ensure(ctx, js, natsCfg.StoreOptions()); err != nil {
		nc.Close()
		return err
	}
	nc.Close()

	env := devEnv{
		Log:           base,
		NATS:          natsCfg,
		DataDir:       data,
		SchedulesDir:  f.schedules,
		ClustersDir:   f.clusters,
		ForwardListen: f.forwardListen,
		LogsDir:       f.logsDir,
		MetricsListen: f.metricsListen,
		AlertWebhook:  f.alertWebhook,
		SchedulerHTTP: f.schedulerHTTP,
		ExitwatchHTTP: f.exitwatchHTTP,
		LogrouterHTTP: f.logrouterHTTP,
	}
	if env.LogsDir == "" {
		env.LogsDir = filepath.Join(data, "logs")
	}
	return runDevDaemons(ctx, env)
}

// runDevDaemons starts every daemon in-process and waits for ctx.
//
// Shutdown is ordered: the scheduler stops first (its runners stop their
// jobs and flush the jobs' last log lines to the logrouter), then the other
// daemons, so nothing a job logged is cut off by a logrouter that is
// already gone. If any daemon fails, all stop.
func runDevDaemons(ctx context.Context, env devEnv) error {
	builders := []struct {
		name  string
		build func(devEnv) (lifecycle.Actor, error)
	}{
		// The logrouter first: runners send job output to it.
		{"logrouter", devLogrouter},
		{"exporter", devExporter},
		{"exitwatch", devExitwatch},
		{"scheduler", devScheduler},
	}
	var producers, rest []lifecycle.Actor
	for _, b := range builders {
		e := env
		e.Log = env.Log.With("daemon", b.name)
		if b.name == "scheduler" && env.ForwardListen != "" {
			e.ForwardAddr = env.ForwardListen
		}
		a, err := b.build(e)
		if err != nil {
			return fmt.Errorf("dev %s: %w", b.name, err)
		}
		if a == nil {
			continue
		}
		if b.name == "scheduler" {
			producers = append(producers, a)
		} else {
			rest = append(rest, a)
		}
	}
	env.Log.Info("taskyard dev running", "daemon", "dev", "daemons", len(producers)+len(rest))

	// restCtx outlives ctx until the producers have stopped.
	restCtx, stopRest := context.WithCancel(context.Background())
	defer stopRest()
	prodCtx, stopProducers := context.WithCancel(ctx)
	defer stopProducers()
	prodDone := make(chan error, 1)
	go func() { prodDone <- lifecycle.Run(prodCtx, producers...) }()
	restDone := make(chan error, 1)
	go func() { restDone <- lifecycle.Run(restCtx, rest...) }()

	select {
	case err := <-prodDone:
		// The producers stopped: on Ctrl-C (nil) or on their own failure.
		stopRest()
		if rerr := <-restDone; err == nil {
			err = rerr
		}
		return err
	case err := <-restDone:
		// A consumer daemon stopped before Ctrl-C: that is a failure.
		if err == nil && ctx.Err() == nil {
			err = errors.New("a daemon stopped unexpectedly")
		}
		stopProducers()
		if perr := <-prodDone; err == nil {
			err = perr
		}
		return err
	}
}
