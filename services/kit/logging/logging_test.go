package logging_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/logging"
)

func TestJSONWithLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	lvl, err := logging.ParseLevel("WARN")
	require.NoError(t, err)
	l := logging.New(&buf, lvl, "scheduler")
	l.Info("dropped")
	l.Warn("lease lost", "instance", "a")
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	require.Equal(t, "WARN", line["level"])
	require.Equal(t, "lease lost", line["msg"])
	require.Equal(t, "scheduler", line["daemon"])
	require.Equal(t, "a", line["instance"])

	_, err = logging.ParseLevel("loud")
	require.ErrorContains(t, err, `log level "loud"`)
	_ = slog.LevelInfo
}
