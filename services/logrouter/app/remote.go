package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/lrconfig"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
)

func buildRemoteSink(ctx context.Context, oc lrconfig.Output, fc *lrconfig.File, format event.Format, c *output.Counters, now func() time.Time, log *slog.Logger) (output.Sink, int, int, error) {
	return nil, 0, 0, fmt.Errorf("output type %q is not available", oc.Type)
}
