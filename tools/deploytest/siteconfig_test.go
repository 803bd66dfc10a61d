package deploytest

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	exitwatchapp "github.com/taskyard/taskyard/services/exitwatch/app"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	schedulerapp "github.com/taskyard/taskyard/services/scheduler/app"
)

// siteDir is the example site configuration the -site images are built from.
const siteDir = "deploy/ecs/site-config"

// TestSiteClusterProfiles loads the example profiles with the scheduler's and
// exitwatch's own loaders and checks they fit the rest of deploy/: roles the
// scheduler may pass, log routing to the logrouter's Cloud Map name.
func TestSiteClusterProfiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(repoRoot(t), siteDir, "clusters")
	profiles, err := schedulerapp.LoadProfiles(dir)
	require.NoError(t, err)
	require.NotEmpty(t, profiles)
	_, err = exitwatchapp.LoadProfiles(dir)
	require.NoError(t, err)

	var passable []string
	for _, st := range loadPolicy(t, "deploy/iam/scheduler-policy.json").Statement {
		for _, a := range st.Action {
			if a == "iam:PassRole" {
				passable = append(passable, st.Resource...)
			}
		}
	}
	canPass := func(arn string) bool {
		for _, r := range passable {
			if r == arn || (strings.HasSuffix(r, "*") && strings.HasPrefix(arn, strings.TrimSuffix(r, "*"))) {
				return true
			}
		}
		return false
	}
	for name, p := range profiles {
		require.True(t, canPass(p.ExecutionRoleARN), "profile %s: the scheduler may not pass %s", name, p.ExecutionRoleARN)
		if p.TaskRoleARN != "" {
			require.True(t, canPass(p.TaskRoleARN), "profile %s: the scheduler may not pass %s", name, p.TaskRoleARN)
		}
		if p.LogRouting != nil {
			require.Equal(t, "logrouter."+testEnv["TASKYARD_DISCOVERY_NAMESPACE"], p.LogRouting.Host, "profile %s", name)
			require.Equal(t, 24224, p.LogRouting.Port, "profile %s", name)
		}
	}
}

// taskEnv is a container's environment as ECS would give it: environment
// values with /etc/taskyard/ mapped to deploy/ecs/site-config, secrets as
// test values, NATS pointed at an embedded server with one replica.
func taskEnv(t *testing.T, rel, name string) map[string]string {
	t.Helper()
	root := repoRoot(t)
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	c := container(t, loadTaskDef(t, rel), name)
	env := map[string]string{}
	for _, e := range c.Environment {
		env[aws.ToString(e.Name)] = strings.Replace(aws.ToString(e.Value), "/etc/taskyard/", filepath.Join(root, siteDir)+"/", 1)
	}
	for _, s := range c.Secrets {
		env[aws.ToString(s.Name)] = "secret-" + aws.ToString(s.Name)
	}
	env["TASKYARD_NATS_URL"] = srv.ClientURL()
	env["TASKYARD_NATS_REPLICAS"] = "1"
	return env
}

// bootUntilReady parses env into a daemon's flags exactly as its main does
// (config.Flags with TASKYARD_* fallback), runs it on a listener until
// /readyz answers 200, then cancels it and waits for a clean stop.
func bootUntilReady(t *testing.T, daemon string, env map[string]string, run func(ctx context.Context, f *config.Flags, ln net.Listener) error) {
	t.Helper()
	fs := flag.NewFlagSet(daemon, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := config.New(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, f, ln) }()
	client := &http.Client{Timeout: time.Second}
	url := fmt.Sprintf("http://%s/readyz", ln.Addr())
	var runErr error
	stopped := false
	require.Eventually(t, func() bool {
		select {
		case runErr = <-done:
			stopped = true
			return true
		default:
		}
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond)
	require.False(t, stopped, "%s stopped before it was ready: %v", daemon, runErr)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not stop", daemon)
	}
}

// TestExitwatchSiteConfigBoots boots exitwatch from its task definition
// (the queue URL left out: there is no SQS here). Its routes file is only
// loaded by Run, so this is how it gets checked. Not parallel: the routes
// file's variables are expanded from the process environment, as in the
// container.
func TestExitwatchSiteConfigBoots(t *testing.T) {
	env := taskEnv(t, "deploy/ecs/exitwatch/task-definition.json", "exitwatch")
	delete(env, "TASKYARD_SQS_QUEUE_URL")
	for k, v := range env {
		if !strings.HasPrefix(k, "TASKYARD_") {
			t.Setenv(k, v) // what the routes file expands
		}
	}
	// The dead letter goes to the task's volume; here, a temp dir.
	data, err := os.ReadFile(env["TASKYARD_ROUTES"])
	require.NoError(t, err)
	routes := filepath.Join(t.TempDir(), "exitwatch-routes.yml")
	require.NoError(t, os.WriteFile(routes, []byte(strings.ReplaceAll(string(data), "/var/lib/taskyard/exitwatch", t.TempDir())), 0o600))
	env["TASKYARD_ROUTES"] = routes

	bootUntilReady(t, "exitwatch", env, func(ctx context.Context, f *config.Flags, ln net.Listener) error {
		var cfg exitwatchapp.Config
		cfg.Register(f)
		if err := f.Parse(nil); err != nil {
			return err
		}
		return exitwatchapp.Run(ctx, cfg, exitwatchapp.Deps{Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Listener: ln})
	})
}

// TestSchedulerBootsWithTheECSRunner boots the scheduler from its task
// definition: --runner ecs with the site's cluster profiles, the ECS
// endpoint pointed at a local capture server (nothing is due, so nothing
// but what the runner does at start may reach it).
func TestSchedulerBootsWithTheECSRunner(t *testing.T) {
	t.Parallel()
	env := taskEnv(t, "deploy/ecs/scheduler/task-definition.json", "scheduler")
	require.Equal(t, "ecs", env["TASKYARD_RUNNER"])
	capture, _ := newECSCapture(t)
	env["TASKYARD_ECS_ENDPOINT"] = capture.srv.URL
	bootUntilReady(t, "scheduler", env, func(ctx context.Context, f *config.Flags, ln net.Listener) error {
		var cfg schedulerapp.Config
		cfg.Register(f)
		if err := f.Parse(nil); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		return schedulerapp.Run(ctx, cfg, schedulerapp.Deps{Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Listener: ln})
	})
}
