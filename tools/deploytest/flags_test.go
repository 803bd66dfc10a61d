package deploytest

import (
	"flag"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	exitwatchapp "github.com/taskyard/taskyard/services/exitwatch/app"
	exporterapp "github.com/taskyard/taskyard/services/exporter/app"
	"github.com/taskyard/taskyard/services/kit/config"
	logrouterapp "github.com/taskyard/taskyard/services/logrouter/app"
	schedulerapp "github.com/taskyard/taskyard/services/scheduler/app"
)

// daemonFlags registers a daemon's flags, as its main does, on a fresh flag
// set. A nil entry (a daemon whose app package does not exist) makes the
// checks needing it skip, naming why.
var daemonFlags = map[string]func(*config.Flags){
	"scheduler": func(f *config.Flags) { var c schedulerapp.Config; c.Register(f) },
	"exitwatch": func(f *config.Flags) { var c exitwatchapp.Config; c.Register(f) },
	"logrouter": func(f *config.Flags) { var c logrouterapp.Config; c.Register(f) },
	"exporter":  func(f *config.Flags) { var c exporterapp.Config; c.Register(f) },
}

// daemonHTTPFlag is the flag holding each daemon's HTTP listen address.
var daemonHTTPFlag = map[string]string{
	"scheduler": "http-listen",
	"exitwatch": "http-listen",
	"logrouter": "http-listen",
	"exporter":  "listen",
}

// fallbackHTTPPort is the documented default port of a daemon whose app
// package could not be imported (see daemonFlags).
var fallbackHTTPPort = map[string]int{"scheduler": 8081, "exitwatch": 8082, "logrouter": 2021, "exporter": 2020}

// registeredFlags returns the daemon's flags by name, or skips the test
// when its app package is not available.
func registeredFlags(t *testing.T, daemon string) *flag.FlagSet {
	t.Helper()
	reg, ok := daemonFlags[daemon]
	require.True(t, ok, "unknown daemon %s", daemon)
	if reg == nil {
		t.Skipf("services/%s/app does not exist; its flags cannot be checked (add it to daemonFlags)", daemon)
	}
	fs := flag.NewFlagSet(daemon, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	reg(config.New(fs, func(string) (string, bool) { return "", false }))
	return fs
}

// daemonTaskDefs maps each daemon to the task definitions running it and
// the name of its container there.
var daemonTaskDefs = map[string][]string{
	"scheduler": {"deploy/ecs/scheduler/task-definition.json"},
	"exitwatch": {"deploy/ecs/exitwatch/task-definition.json"},
	"logrouter": {"deploy/ecs/logrouter/task-definition.json", "deploy/ecs/logrouter/fargate/task-definition.json"},
	"exporter":  {"deploy/ecs/exporter/task-definition.json"},
}

func TestTaskyardEnvVarsAreRealFlags(t *testing.T) {
	t.Parallel()
	for daemon, files := range daemonTaskDefs {
		t.Run(daemon, func(t *testing.T) {
			t.Parallel()
			fs := registeredFlags(t, daemon)
			envs := map[string]string{}
			fs.VisitAll(func(fl *flag.Flag) { envs[config.EnvName(fl.Name)] = fl.Name })
			for _, rel := range files {
				c := container(t, loadTaskDef(t, rel), daemon)
				var names []string
				for _, e := range c.Environment {
					names = append(names, aws.ToString(e.Name))
				}
				for _, s := range c.Secrets {
					names = append(names, aws.ToString(s.Name))
				}
				for _, n := range names {
					if !strings.HasPrefix(n, "TASKYARD_") {
						continue
					}
					_, ok := envs[n]
					require.True(t, ok, "%s: %s sets %s, which no flag of %s reads", rel, daemon, n, daemon)
				}
			}
		})
	}
}

func TestImagesAndPortsMatchDaemons(t *testing.T) {
	t.Parallel()
	for daemon, files := range daemonTaskDefs {
		t.Run(daemon, func(t *testing.T) {
			t.Parallel()
			port := daemonPort(t, daemon)
			image := regexp.MustCompile(`^` + regexp.QuoteMeta(testEnv["TASKYARD_IMAGE_REGISTRY"]) + `/taskyard-` + daemon + `(-site)?:(.+)$`)
			for _, rel := range files {
				td := loadTaskDef(t, rel)
				c := container(t, td, daemon)
				m := image.FindStringSubmatch(aws.ToString(c.Image))
				require.NotNil(t, m, "%s: image %s is not <registry>/taskyard-%s[-site]:<tag>", rel, aws.ToString(c.Image), daemon)
				if m[1] == "-site" {
					require.Equal(t, testEnv["TASKYARD_SITE_VERSION"], m[2], rel)
					require.FileExists(t, filepath.Join(repoRoot(t), "deploy/ecs", daemon, "Dockerfile.site"), "%s: a -site image needs its Dockerfile", rel)
				} else {
					require.Equal(t, testEnv["TASKYARD_VERSION"], m[2], rel)
				}
				var ports []int32
				for _, pm := range c.PortMappings {
					ports = append(ports, aws.ToInt32(pm.ContainerPort))
					if td.NetworkMode == "awsvpc" && pm.HostPort != nil {
						require.Equal(t, aws.ToInt32(pm.ContainerPort), aws.ToInt32(pm.HostPort), "%s: awsvpc host port must equal the container port", rel)
					}
				}
				require.Contains(t, ports, int32(port), "%s: %s serves HTTP on %d by default", rel, daemon, port)
			}
		})
	}
}

// daemonPort is the daemon's default HTTP port, from its app.Config when
// its package is available, else from fallbackHTTPPort.
func daemonPort(t *testing.T, daemon string) int {
	t.Helper()
	if daemonFlags[daemon] == nil {
		return fallbackHTTPPort[daemon]
	}
	fl := registeredFlags(t, daemon).Lookup(daemonHTTPFlag[daemon])
	require.NotNil(t, fl, "%s has no flag %s", daemon, daemonHTTPFlag[daemon])
	_, p, err := net.SplitHostPort(fl.DefValue)
	require.NoError(t, err)
	port, err := strconv.Atoi(p)
	require.NoError(t, err)
	return port
}
