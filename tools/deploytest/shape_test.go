package deploytest

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func envValue(c types.ContainerDefinition, name string) (string, bool) {
	for _, e := range c.Environment {
		if aws.ToString(e.Name) == name {
			return aws.ToString(e.Value), true
		}
	}
	return "", false
}

// hasHealthCheck reports whether an essential container of td has a
// container health check.
func hasHealthCheck(td *ecs.RegisterTaskDefinitionInput) bool {
	for _, c := range td.ContainerDefinitions {
		if c.HealthCheck != nil && aws.ToBool(c.Essential) && len(c.HealthCheck.Command) > 1 {
			return true
		}
	}
	return false
}

func TestReplicaServices(t *testing.T) {
	t.Parallel()
	for _, d := range []string{"scheduler", "exitwatch"} {
		td := loadTaskDef(t, "deploy/ecs/"+d+"/task-definition.json")
		sd := loadServiceDef(t, "deploy/ecs/"+d+"/service-definition.json")
		require.Equal(t, types.NetworkModeAwsvpc, td.NetworkMode, d)
		require.True(t, hasHealthCheck(td), "%s: a health check on an essential container", d)
		require.Equal(t, types.SchedulingStrategyReplica, sd.SchedulingStrategy, d)
		require.Equal(t, int32(2), aws.ToInt32(sd.DesiredCount), d)
		require.Equal(t, int32(50), aws.ToInt32(sd.DeploymentConfiguration.MinimumHealthyPercent), d)
		require.Equal(t, int32(200), aws.ToInt32(sd.DeploymentConfiguration.MaximumPercent), d)
		require.NotNil(t, sd.NetworkConfiguration.AwsvpcConfiguration, d)
		require.Equal(t, types.AssignPublicIpDisabled, sd.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp, d)
	}
}

func TestLogrouterDaemon(t *testing.T) {
	t.Parallel()
	td := loadTaskDef(t, "deploy/ecs/logrouter/task-definition.json")
	sd := loadServiceDef(t, "deploy/ecs/logrouter/service-definition.json")
	require.Equal(t, types.SchedulingStrategyDaemon, sd.SchedulingStrategy)
	require.Equal(t, types.LaunchTypeEc2, sd.LaunchType)
	require.Equal(t, types.NetworkModeBridge, td.NetworkMode)
	require.Equal(t, []types.Compatibility{types.CompatibilityEc2}, td.RequiresCompatibilities)
	require.True(t, hasHealthCheck(td))
	c := container(t, td, "logrouter")

	var forward *types.PortMapping
	for i, pm := range c.PortMappings {
		if aws.ToInt32(pm.ContainerPort) == 24224 {
			forward = &c.PortMappings[i]
		}
	}
	require.NotNil(t, forward, "forward input port")
	require.Equal(t, int32(24224), aws.ToInt32(forward.HostPort), "FireLens and Docker senders on the host reach 24224")
	require.Equal(t, types.TransportProtocolTcp, forward.Protocol)

	// Stop timeout: ECS sends SIGTERM, waits stopTimeout, then SIGKILL;
	// the drain must fit with room for the last acks. 120 s is the EC2
	// maximum.
	drain := 25 * time.Second // the drain-timeout default, checked below
	fs := registeredFlags(t, "logrouter")
	def, err := time.ParseDuration(fs.Lookup("drain-timeout").DefValue)
	require.NoError(t, err)
	require.Equal(t, drain, def, "logrouter's drain-timeout default changed: revisit stopTimeout")
	if v, ok := envValue(c, "TASKYARD_DRAIN_TIMEOUT"); ok {
		drain, err = time.ParseDuration(v)
		require.NoError(t, err)
	}
	stop := time.Duration(aws.ToInt32(c.StopTimeout)) * time.Second
	require.GreaterOrEqual(t, stop, drain+5*time.Second, "stopTimeout %s leaves no room after the %s drain", stop, drain)
	require.LessOrEqual(t, stop, 120*time.Second)

	// The spool is on a host volume mounted where logrouter.yml puts it.
	var spoolDir string
	{
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/ecs/site-config/logrouter.yml"))
		require.NoError(t, err)
		var cfg struct {
			Spool struct{ Dir string } `yaml:"spool"`
		}
		require.NoError(t, yaml.Unmarshal(data, &cfg))
		spoolDir = cfg.Spool.Dir
	}
	require.NotEmpty(t, spoolDir)
	var mounted bool
	for _, mp := range c.MountPoints {
		if aws.ToString(mp.ContainerPath) != spoolDir {
			continue
		}
		mounted = true
		require.False(t, aws.ToBool(mp.ReadOnly))
		var vol *types.Volume
		for i := range td.Volumes {
			if aws.ToString(td.Volumes[i].Name) == aws.ToString(mp.SourceVolume) {
				vol = &td.Volumes[i]
			}
		}
		require.NotNil(t, vol, "volume %s", aws.ToString(mp.SourceVolume))
		require.NotNil(t, vol.Host, "the spool survives task replacement only on a host volume")
		require.NotEmpty(t, aws.ToString(vol.Host.SourcePath))
	}
	require.True(t, mounted, "spool dir %s is not mounted", spoolDir)
}

func TestLogrouterFargateSenders(t *testing.T) {
	t.Parallel()
	td := loadTaskDef(t, "deploy/ecs/logrouter/fargate/task-definition.json")
	sd := loadServiceDef(t, "deploy/ecs/logrouter/fargate/service-definition.json")
	require.Equal(t, types.NetworkModeAwsvpc, td.NetworkMode)
	require.Len(t, sd.ServiceRegistries, 1, "senders find the replicas through Cloud Map")
	require.True(t, hasHealthCheck(td))
	c := container(t, td, "logrouter")
	require.LessOrEqual(t, aws.ToInt32(c.StopTimeout), int32(120))
	require.GreaterOrEqual(t, aws.ToInt32(c.StopTimeout), int32(30))

	// The FireLens snippet forwards to that Cloud Map name on 24224.
	sender := loadTaskDef(t, "deploy/ecs/logrouter/firelens-sender-task-definition.json")
	var router, app *types.ContainerDefinition
	for i, c := range sender.ContainerDefinitions {
		if c.FirelensConfiguration != nil {
			router = &sender.ContainerDefinitions[i]
		} else {
			app = &sender.ContainerDefinitions[i]
		}
	}
	require.NotNil(t, router)
	require.NotNil(t, app)
	require.Equal(t, types.FirelensConfigurationTypeFluentbit, router.FirelensConfiguration.Type)
	require.Equal(t, types.LogDriverAwsfirelens, app.LogConfiguration.LogDriver)
	opts := app.LogConfiguration.Options
	require.Equal(t, "forward", opts["Name"])
	require.Equal(t, "logrouter."+testEnv["TASKYARD_DISCOVERY_NAMESPACE"], opts["Host"])
	require.Equal(t, "24224", opts["Port"])
}

func TestExporterWithMackerelSidecar(t *testing.T) {
	t.Parallel()
	td := loadTaskDef(t, "deploy/ecs/exporter/task-definition.json")
	sd := loadServiceDef(t, "deploy/ecs/exporter/service-definition.json")
	agent := container(t, td, "mackerel-container-agent")
	require.False(t, aws.ToBool(agent.Essential), "a Mackerel outage must not stop the exporter")
	if sd.SchedulingStrategy != types.SchedulingStrategyDaemon {
		// One replica with a fixed --instance: never two at once (they
		// would share the durable consumers and the snapshot).
		require.Equal(t, int32(1), aws.ToInt32(sd.DesiredCount))
		require.Equal(t, int32(100), aws.ToInt32(sd.DeploymentConfiguration.MaximumPercent))
		v, ok := envValue(container(t, td, "exporter"), "TASKYARD_INSTANCE")
		require.True(t, ok)
		require.NotEmpty(t, v)
	}
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/ecs/exporter/mackerel.yaml"))
	require.NoError(t, err)
	// command is a string or a list, as mackerel-container-agent accepts.
	type plugin struct{ Command yaml.Node }
	var cfg struct {
		Plugin struct {
			Metrics map[string]plugin `yaml:"metrics"`
			Checks  map[string]plugin `yaml:"checks"`
		} `yaml:"plugin"`
	}
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	first := func(n yaml.Node) string {
		if n.Kind == yaml.SequenceNode && len(n.Content) > 0 {
			return n.Content[0].Value
		}
		if f := strings.Fields(n.Value); len(f) > 0 {
			return f[0]
		}
		return ""
	}
	var cmds []string
	for _, m := range cfg.Plugin.Metrics {
		cmds = append(cmds, first(m.Command))
	}
	for _, m := range cfg.Plugin.Checks {
		cmds = append(cmds, first(m.Command))
	}
	require.Contains(t, cmds, "mackerel-plugin-taskyard")
	require.Contains(t, cmds, "check-taskyard")
	docker, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/ecs/exporter/Dockerfile.mackerel"))
	require.NoError(t, err)
	for _, c := range cmds {
		require.Contains(t, string(docker), "/usr/local/bin/"+c, "the agent image must contain %s", c)
	}
}

// TestServicesRunTheirTaskDefinitions: a service definition names the
// family of the task definition next to it, and awsvpc tasks get a network
// configuration.
func TestServicesRunTheirTaskDefinitions(t *testing.T) {
	t.Parallel()
	_, serviceDefs := ecsFiles(t)
	for _, rel := range serviceDefs {
		td := loadTaskDef(t, path.Join(path.Dir(rel), "task-definition.json"))
		sd := loadServiceDef(t, rel)
		require.Equal(t, aws.ToString(td.Family), aws.ToString(sd.TaskDefinition), rel)
		require.Equal(t, testEnv["TASKYARD_CLUSTER"], aws.ToString(sd.Cluster), rel)
		if td.NetworkMode == types.NetworkModeAwsvpc {
			require.NotNil(t, sd.NetworkConfiguration, "%s: awsvpc needs subnets and security groups", rel)
		} else {
			require.Nil(t, sd.NetworkConfiguration, "%s: only awsvpc takes a network configuration", rel)
		}
		if sd.LaunchType == types.LaunchTypeFargate {
			require.Contains(t, td.RequiresCompatibilities, types.CompatibilityFargate, rel)
		}
	}
}

// TestExecutionRoleCoversSecretsAndImages: every secret a task reads and
// every image pulled from the taskyard registry is allowed by the task
// execution policy, and every container's log group is the one it may
// write.
func TestExecutionRoleCoversSecretsAndImages(t *testing.T) {
	t.Parallel()
	exec := loadPolicy(t, "deploy/iam/task-execution-policy.json")
	allowed := func(action, resource string) bool {
		for _, st := range exec.Statement {
			if st.Effect != "Allow" {
				continue
			}
			for _, a := range st.Action {
				if a != action {
					continue
				}
				for _, r := range st.Resource {
					if ok, _ := path.Match(strings.ReplaceAll(r, "/", "\x00"), strings.ReplaceAll(resource, "/", "\x00")); ok {
						return true
					}
				}
			}
		}
		return false
	}
	taskDefs, _ := ecsFiles(t)
	registry := testEnv["TASKYARD_IMAGE_REGISTRY"] + "/"
	for _, rel := range taskDefs {
		td := loadTaskDef(t, rel)
		for _, c := range td.ContainerDefinitions {
			for _, s := range c.Secrets {
				from := aws.ToString(s.ValueFrom)
				action := "ssm:GetParameters"
				if strings.HasPrefix(from, "arn:aws:secretsmanager:") {
					action = "secretsmanager:GetSecretValue"
				}
				require.True(t, allowed(action, from), "%s: %s cannot read %s", rel, "taskyard-execution", from)
			}
			if img, ok := strings.CutPrefix(aws.ToString(c.Image), registry); ok {
				repo, _, _ := strings.Cut(img, ":")
				arn := "arn:aws:ecr:" + testEnv["AWS_REGION"] + ":" + testEnv["AWS_ACCOUNT_ID"] + ":repository/" + repo
				require.True(t, allowed("ecr:BatchGetImage", arn), "%s: cannot pull %s", rel, repo)
			}
			if lc := c.LogConfiguration; lc != nil && lc.LogDriver == types.LogDriverAwslogs {
				require.Equal(t, testEnv["TASKYARD_LOG_GROUP"], lc.Options["awslogs-group"], rel)
			}
		}
	}
}
