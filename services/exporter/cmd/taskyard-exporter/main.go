// Command taskyard-exporter serves every taskyard number: Fluent-Bit-shaped
// JSON on /api/v1/metrics (for mackerel-plugin-json, mackerel-plugin-taskyard
// and check-taskyard) and Prometheus exposition on /metrics. Flags have
// TASKYARD_* environment fallbacks; run with --help for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/taskyard/taskyard/services/exporter/app"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "taskyard-exporter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("taskyard-exporter", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: taskyard-exporter [flags]

Consumes taskyard's run, task, alert, log-volume and daemon-stats events
(durable JetStream consumers exporter-<instance>; counters persisted in KV
<prefix>-snapshots) and serves:
  GET /api/v1/metrics   Fluent-Bit-shaped JSON (mackerel-plugin-json -diff, mackerel-plugin-taskyard, check-taskyard)
  GET /metrics          Prometheus exposition
  GET /healthz, /readyz

Flags (each also read from the TASKYARD_* variable named in its usage):
`)
		fs.PrintDefaults()
	}
	var cfg app.Config
	f := config.New(fs, nil)
	cfg.Register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	level, err := logging.ParseLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	log := logging.New(os.Stderr, level, app.Daemon)
	if err := app.Run(ctx, cfg, app.Deps{Log: log}); err != nil {
		log.Error("exporter stopped", "err", err)
		return err
	}
	return nil
}
