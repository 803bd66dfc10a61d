package main

import (
	"context"
	"path/filepath"

	"github.com/taskyard/taskyard/services/kit/lifecycle"
	"github.com/taskyard/taskyard/services/logrouter/app"
)

// devLogrouter runs the logrouter in `taskyard dev`: Fluent Forward on
// --forward-listen, every record to --logs-dir/taskyard.ndjson and to
// stdout, HTTP (health, /api/v1/metrics) on env.LogrouterHTTP, spools under
// <data>/logrouter/spool.
func devLogrouter(env devEnv) (lifecycle.Actor, error) {
	listen := env.ForwardListen
	if listen == "" {
		listen = "127.0.0.1:24224"
	}
	cfg := app.DevConfig(env.NATS, listen, "", env.LogrouterHTTP, env.LogsDir, filepath.Join(env.DataDir, "logrouter"))
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		return app.Run(ctx, cfg, app.Deps{Log: env.Log})
	}, nil
}
