package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/taskyard/taskyard/services/kit/schedule"
)

// composeFile is the part of a Compose file these checks read.
type composeFile struct {
	Services map[string]struct {
		Image       string   `yaml:"image"`
		Profiles    []string `yaml:"profiles"`
		Ports       []string `yaml:"ports"`
		Volumes     []string `yaml:"volumes"`
		ReadOnly    bool     `yaml:"read_only"`
		User        string   `yaml:"user"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		Command any `yaml:"command"`
	} `yaml:"services"`
}

func readCompose(t *testing.T, rel string) composeFile {
	t.Helper()
	root, err := repoRoot()
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(root, rel))
	require.NoError(t, err)
	var c composeFile
	require.NoError(t, yaml.Unmarshal(data, &c), rel)
	return c
}

// TestComposeFile checks docker-compose.yml without a Docker engine:
// healthchecks everywhere, ports on 127.0.0.1 only, the daemons read-only
// as 65532, the socket on the schedulers, profile ha.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	c := readCompose(t, "docker-compose.yml")
	oneShot := map[string]bool{"s3-init": true, "schedules": true, "demojob": true}
	for _, svc := range services {
		require.Contains(t, c.Services, svc)
	}
	for name, s := range c.Services {
		if !oneShot[name] {
			require.NotNil(t, s.Healthcheck, "%s has no healthcheck", name)
			require.NotEmpty(t, s.Healthcheck.Test, name)
		}
		for _, p := range s.Ports {
			require.True(t, strings.HasPrefix(p, "127.0.0.1:"), "%s publishes %s beyond localhost", name, p)
		}
	}
	for _, d := range []string{"scheduler", "scheduler-standby", "exitwatch", "logrouter", "exporter"} {
		s := c.Services[d]
		require.True(t, s.ReadOnly, "%s: read_only", d)
		require.Equal(t, "65532:65532", s.User, d)
		require.Contains(t, s.Healthcheck.Test, "/usr/local/bin/httpcheck", d)
	}
	for _, d := range []string{"scheduler", "scheduler-standby"} {
		require.Contains(t, c.Services[d].Volumes, "/var/run/docker.sock:/var/run/docker.sock", d)
	}
	require.Equal(t, []string{"ha"}, c.Services["scheduler-standby"].Profiles)
	require.Empty(t, c.Services["scheduler"].Profiles)
	published := strings.Join(append(c.Services["exporter"].Ports, c.Services["logrouter"].Ports...), " ")
	require.Contains(t, published, ":2020")
	require.Contains(t, published, ":24224")

	o := readCompose(t, "deploy/compose/local-build.yml")
	for _, svc := range []string{"nats", "s3", "s3-init"} {
		require.Contains(t, o.Services, svc)
		require.True(t, strings.HasPrefix(o.Services[svc].Image, "${TASKYARD_IMAGE_REGISTRY:-taskyard}/"), "%s: %s", svc, o.Services[svc].Image)
	}
}

// TestComposeSchedules: the demo schedules the stack applies are valid
// against the cluster profiles it mounts.
func TestComposeSchedules(t *testing.T) {
	t.Parallel()
	root, err := repoRoot()
	require.NoError(t, err)
	scheds, profiles, err := schedule.LoadPaths(filepath.Join(root, "deploy/compose/schedules"), filepath.Join(root, "examples/clusters"))
	require.NoError(t, err)
	require.Len(t, scheds, 2)
	names := map[string]bool{}
	for _, p := range profiles {
		names[p.Name] = true
	}
	for _, s := range scheds {
		require.True(t, names[s.Cluster], "schedule %s names cluster %s, which examples/clusters does not have", s.Name, s.Cluster)
	}
}
