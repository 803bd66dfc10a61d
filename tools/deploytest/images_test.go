package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"
)

// dockerStages splits deploy/docker/Dockerfile into its build targets.
func dockerStages(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/docker/Dockerfile"))
	require.NoError(t, err)
	stages := map[string]string{}
	var name string
	for _, line := range strings.Split(string(data), "\n") {
		if m := regexp.MustCompile(`^FROM \S+ AS (\S+)`).FindStringSubmatch(line); m != nil {
			name = m[1]
		}
		if name != "" {
			stages[name] += line + "\n"
		}
	}
	return stages
}

// TestTaskDefinitionsFitTheImages: the taskyard images (deploy/docker,
// `make images`) run as the user the task definitions name, expose the
// ports the containers map, and the exporter image has the plugin binaries
// where Dockerfile.mackerel copies them from.
func TestTaskDefinitionsFitTheImages(t *testing.T) {
	t.Parallel()
	stages := dockerStages(t)
	require.Contains(t, stages["base"], "USER 65532:65532")
	require.Contains(t, stages["base"], "/usr/local/bin/httpcheck", "the images' health check binary")
	for daemon, files := range daemonTaskDefs {
		stage, ok := stages[daemon]
		require.True(t, ok, "deploy/docker/Dockerfile has no target %s", daemon)
		require.Contains(t, stage, "/usr/local/bin/taskyard-"+daemon)
		var exposed []int32
		for _, m := range regexp.MustCompile(`(?m)^EXPOSE (.+)$`).FindAllStringSubmatch(stage, -1) {
			for _, p := range strings.Fields(m[1]) {
				n, err := strconv.Atoi(p)
				require.NoError(t, err)
				exposed = append(exposed, int32(n))
			}
		}
		for _, rel := range files {
			c := container(t, loadTaskDef(t, rel), daemon)
			require.Equal(t, "65532:65532", aws.ToString(c.User), rel)
			for _, pm := range c.PortMappings {
				require.Contains(t, exposed, aws.ToInt32(pm.ContainerPort), "%s maps a port the image does not expose", rel)
			}
			// The daemon's own container is health-checked with the image's
			// httpcheck against its /readyz on its HTTP port.
			require.NotNil(t, c.HealthCheck, "%s: %s has no health check", rel, daemon)
			cmd := c.HealthCheck.Command
			require.GreaterOrEqual(t, len(cmd), 3, rel)
			require.Equal(t, []string{"CMD", "/usr/local/bin/httpcheck"}, cmd[:2], rel)
			require.Equal(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", daemonPort(t, daemon)), cmd[len(cmd)-1], rel)
		}
	}
	docker, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/ecs/exporter/Dockerfile.mackerel"))
	require.NoError(t, err)
	require.Contains(t, string(docker), "ARG TASKYARD_BIN_DIR=/usr/local/bin")
	require.Regexp(t, `COPY [^\n]*\bmackerel-plugin-taskyard\b[^\n]*\bcheck-taskyard\b[^\n]* /usr/local/bin/`, stages["exporter"])
}
