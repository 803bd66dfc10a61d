package deliver_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/exitwatch/internal/deliver"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestParseEnvInValuesOnly: ${VAR} is replaced in values, never in
// comments, and a value with YAML syntax in it stays one value.
func TestParseEnvInValuesOnly(t *testing.T) {
	t.Parallel()
	yml := `# tokens come from ${VAR} (a comment, not a reference)
channels:
  - name: hook
    type: webhook
    url: ${HOOK_URL}
    headers:
      Authorization: "Bearer ${TOKEN}"
    timeout: ${TIMEOUT}
routes:
  - severities: [critical]
    channels: [hook]
`
	c, err := deliver.Parse("routes.yml", []byte(yml), envOf(map[string]string{
		"HOOK_URL": "https://hooks.example.test/a#frag: x",
		"TOKEN":    "s3cr#t",
		"TIMEOUT":  "3s",
	}))
	require.NoError(t, err)
	require.Equal(t, "https://hooks.example.test/a#frag: x", c.Channels[0].URL)
	require.Equal(t, "Bearer s3cr#t", c.Channels[0].Headers["Authorization"])
	require.Equal(t, "3s", c.Channels[0].Timeout.String())
}

func TestParseEnvAndFieldErrorsNameTheLine(t *testing.T) {
	t.Parallel()
	_, err := deliver.Parse("routes.yml", []byte("channels:\n  - name: hook\n    type: webhook\n    url: ${MISSING}\n"), envOf(nil))
	require.ErrorContains(t, err, "routes.yml:4: environment variable MISSING is not set")

	_, err = deliver.Parse("routes.yml", []byte("# comment\n\nchannels:\n  - name: hook\n    type: webhook\n    url: ${URL}\n    colour: red\n"),
		envOf(map[string]string{"URL": "https://x.test/"}))
	require.ErrorContains(t, err, "line 7: field colour not found")
}

// TestExampleRoutesLoad loads the shipped example with exactly the
// variables it references set, as an operator would run it.
func TestExampleRoutesLoad(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../../../examples/exitwatch-routes.yml")
	require.NoError(t, err)
	_, err = deliver.Parse("exitwatch-routes.yml", data, envOf(map[string]string{
		"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_WEBHOOK_URL": "https://hooks.slack.test/services/x",
		"PAGER_WEBHOOK_URL": "https://pager.test/hook", "PAGER_TOKEN": "t",
	}))
	require.NoError(t, err)
}
