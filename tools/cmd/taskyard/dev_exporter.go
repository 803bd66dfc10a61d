package main

import (
	"context"
	"time"

	"github.com/taskyard/taskyard/services/exporter/app"
	"github.com/taskyard/taskyard/services/kit/lifecycle"
)

// devExporter builds the in-process exporter for taskyard dev: it listens on
// env.MetricsListen (default 127.0.0.1:2020) for /api/v1/metrics, /metrics,
// /healthz and /readyz, reads task limits from env.ClustersDir, and keeps
// its counters in the embedded NATS (instance "dev").
func devExporter(env devEnv) (lifecycle.Actor, error) {
	cfg := app.Config{
		NATS:          env.NATS,
		Listen:        env.MetricsListen,
		Instance:      "dev",
		FlushInterval: time.Second,
		StaleAfter:    time.Minute,
		StatsInterval: 15 * time.Second,
		LogLevel:      "info",
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:2020"
	}
	if env.ClustersDir != "" {
		cfg.Clusters = []string{env.ClustersDir}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		return app.Run(ctx, cfg, app.Deps{Log: env.Log})
	}, nil
}
