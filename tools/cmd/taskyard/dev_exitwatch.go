package main

import (
	"context"

	"github.com/taskyard/taskyard/services/exitwatch/app"
	"github.com/taskyard/taskyard/services/kit/lifecycle"
)

// devExitwatch runs exitwatch in `taskyard dev`: it follows the exec
// runner's runs on the embedded NATS, reads task limits from
// env.ClustersDir, serves health, metrics and the ping API on
// env.ExitwatchHTTP, and sends every alert to env.AlertWebhook (the Alert as
// protojson) when set, else to the log.
func devExitwatch(env devEnv) (lifecycle.Actor, error) {
	cfg := app.DevConfig(env.NATS, env.ExitwatchHTTP, env.ClustersDir, env.AlertWebhook)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		return app.Run(ctx, cfg, app.Deps{Log: env.Log})
	}, nil
}
