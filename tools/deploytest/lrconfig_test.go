package deploytest

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/config"
	logrouterapp "github.com/taskyard/taskyard/services/logrouter/app"
)

// TestLogrouterConfigLoads validates deploy/ecs/site-config/logrouter.yml with
// the logrouter's own Config.Validate, which loads the file with its real
// parser (unknown fields, outputs, routes, ${VAR} expansion from the
// environment the task definition provides).
func TestLogrouterConfigLoads(t *testing.T) {
	t.Setenv("LOG_BUCKET", testEnv["TASKYARD_LOG_BUCKET"])
	t.Setenv("DD_API_KEY", "0123456789abcdef0123456789abcdef")
	fs := flag.NewFlagSet("logrouter", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg logrouterapp.Config
	cfg.Register(config.New(fs, func(string) (string, bool) { return "", false }))
	cfg.ConfigFile = filepath.Join(repoRoot(t), "deploy/ecs/site-config/logrouter.yml")
	cfg.NoNATS = true
	require.NoError(t, cfg.Validate())

	// The same check fails on a misspelt field, so it is not vacuous.
	data, err := os.ReadFile(cfg.ConfigFile)
	require.NoError(t, err)
	bad := filepath.Join(t.TempDir(), "logrouter.yml")
	require.NoError(t, os.WriteFile(bad, bytes.Replace(data, []byte("keyTemplate:"), []byte("keyTemplat:"), 1), 0o600))
	cfg.ConfigFile = bad
	require.ErrorContains(t, cfg.Validate(), "keyTemplat")
}
