package ecsrunner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

// Names the runner gives things.
const (
	// FamilyPrefix + schedule name is the task definition family.
	FamilyPrefix = v1.JobFamilyPrefix
	// LogRouterName is the injected FireLens sidecar.
	LogRouterName = "log_router"
	// LogRouterMemoryReservation is the sidecar's soft memory limit (MiB),
	// counted in the Fargate task size.
	LogRouterMemoryReservation = 50
	// MaxCountPerCall is RunTask's limit on count.
	MaxCountPerCall = 10

	TagSchedule = "taskyard:schedule"
	TagRunID    = "taskyard:run-id"
)

// Family returns the task definition family of a schedule.
func Family(schedule string) string { return v1.JobFamily(schedule) }

// StartedBy is the RunTask startedBy of a schedule's tasks (ListTasks
// filters on it).
func StartedBy(schedule string) string { return "taskyard:" + schedule }

// Group is the RunTask group carrying the run id.
func Group(runID string) string { return "taskyard:" + runID }

// RunIDFromGroup is the inverse of Group ("" when g is not one).
func RunIDFromGroup(g string) string {
	if len(g) > len("taskyard:") && g[:len("taskyard:")] == "taskyard:" {
		return g[len("taskyard:"):]
	}
	return ""
}

// TaskDefinitionInput builds the RegisterTaskDefinition input of a schedule
// on a cluster profile: the schedule's containers, the profile's network
// mode and roles, the Fargate size, and — when the profile sets logRouting
// — a FireLens sidecar with every app container logging through it.
func TaskDefinitionInput(spec *v1.ScheduleSpec, p *schedule.Profile) (*ecs.RegisterTaskDefinitionInput, error) {
	if p == nil {
		return nil, fmt.Errorf("schedule %s: no cluster profile %q on this scheduler", spec.GetName(), spec.GetCluster())
	}
	s, err := schedule.ScheduleFromProto(spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %s: %w", spec.GetName(), err)
	}
	in := &ecs.RegisterTaskDefinitionInput{
		Family:      aws.String(Family(spec.GetName())),
		NetworkMode: types.NetworkMode(p.NetworkMode),
		Tags:        []types.Tag{{Key: aws.String(TagSchedule), Value: aws.String(spec.GetName())}},
	}
	switch {
	case p.IsFargate():
		in.RequiresCompatibilities = []types.Compatibility{types.CompatibilityFargate}
	case p.LaunchType == schedule.LaunchTypeExternal:
		in.RequiresCompatibilities = []types.Compatibility{types.CompatibilityExternal}
	default:
		in.RequiresCompatibilities = []types.Compatibility{types.CompatibilityEc2}
	}
	if p.ExecutionRoleARN != "" {
		in.ExecutionRoleArn = aws.String(p.ExecutionRoleARN)
	}
	if p.TaskRoleARN != "" {
		in.TaskRoleArn = aws.String(p.TaskRoleARN)
	}

	sized := s
	if p.LogRouting != nil {
		// The sidecar takes memory too: size the task with it.
		c := *s
		c.Containers = append(slices.Clone(s.Containers), schedule.Container{Name: LogRouterName, MemoryReservation: LogRouterMemoryReservation})
		sized = &c
	}
	cpu, mem, err := sized.TaskSize(p)
	if err != nil {
		return nil, fmt.Errorf("schedule %s: task size on cluster profile %s: %w", spec.GetName(), p.Name, err)
	}
	if cpu > 0 {
		in.Cpu = aws.String(strconv.Itoa(cpu))
	}
	if mem > 0 {
		in.Memory = aws.String(strconv.Itoa(mem))
	}

	if lr := p.LogRouting; lr != nil {
		in.ContainerDefinitions = append(in.ContainerDefinitions, types.ContainerDefinition{
			Name:      aws.String(LogRouterName),
			Image:     aws.String(lr.Image),
			Essential: aws.Bool(true),
			FirelensConfiguration: &types.FirelensConfiguration{
				Type:    types.FirelensConfigurationTypeFluentbit,
				Options: map[string]string{"enable-ecs-log-metadata": "true"},
			},
			MemoryReservation: aws.Int32(LogRouterMemoryReservation),
		})
	}
	for _, c := range s.Containers {
		cd := types.ContainerDefinition{
			Name:      aws.String(c.Name),
			Image:     aws.String(c.Image),
			Essential: aws.Bool(c.Essential),
			Command:   c.Command,
		}
		if len(c.EntryPoint) > 0 {
			cd.EntryPoint = c.EntryPoint
		}
		if c.CPU > 0 {
			cd.Cpu = int32(c.CPU)
		}
		if c.Memory > 0 {
			cd.Memory = aws.Int32(int32(c.Memory))
		}
		if c.MemoryReservation > 0 {
			cd.MemoryReservation = aws.Int32(int32(c.MemoryReservation))
		}
		for _, k := range sortedKeys(c.Environment) {
			cd.Environment = append(cd.Environment, types.KeyValuePair{Name: aws.String(k), Value: aws.String(c.Environment[k])})
		}
		for _, k := range sortedKeys(c.Secrets) {
			cd.Secrets = append(cd.Secrets, types.Secret{Name: aws.String(k), ValueFrom: aws.String(c.Secrets[k])})
		}
		if lr := p.LogRouting; lr != nil {
			cd.LogConfiguration = &types.LogConfiguration{
				LogDriver: types.LogDriverAwsfirelens,
				// Require_ack_response: Fluent Bit keeps a chunk until the
				// logrouter acked it (after its spool fsync); Retry_Limit
				// False: never give a chunk up while the logrouter is away.
				Options: map[string]string{"Name": "forward", "Host": lr.Host, "Port": strconv.Itoa(lr.Port),
					"Require_ack_response": "true", "Retry_Limit": "False"},
			}
			cd.DependsOn = []types.ContainerDependency{{ContainerName: aws.String(LogRouterName), Condition: types.ContainerConditionStart}}
		}
		in.ContainerDefinitions = append(in.ContainerDefinitions, cd)
	}
	return in, nil
}

// RunTaskInputs builds the RunTask calls of a run: taskCount split into
// calls of at most ten tasks. The first call's clientToken is the run id;
// later calls get a token derived from it, so a retried run is one run.
func RunTaskInputs(req runner.Request, p *schedule.Profile, taskDefinition string) []*ecs.RunTaskInput {
	spec := req.Spec
	n := int(spec.GetTiming().GetTaskCount())
	if n <= 0 {
		n = 1
	}
	env := req.Env()
	var overrides []types.ContainerOverride
	for _, c := range spec.GetContainers() {
		o := types.ContainerOverride{Name: aws.String(c.GetName())}
		for _, k := range sortedKeys(env) {
			o.Environment = append(o.Environment, types.KeyValuePair{Name: aws.String(k), Value: aws.String(env[k])})
		}
		overrides = append(overrides, o)
	}
	tags := []types.Tag{
		{Key: aws.String(TagSchedule), Value: aws.String(spec.GetName())},
		{Key: aws.String(TagRunID), Value: aws.String(req.RunID)},
	}
	for _, k := range sortedKeys(p.Tags) {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(p.Tags[k])})
	}
	var out []*ecs.RunTaskInput
	for i := 0; n > 0; i++ {
		count := min(n, MaxCountPerCall)
		n -= count
		in := &ecs.RunTaskInput{
			Cluster:        aws.String(p.Cluster),
			TaskDefinition: aws.String(taskDefinition),
			Count:          aws.Int32(int32(count)),
			StartedBy:      aws.String(StartedBy(spec.GetName())),
			Group:          aws.String(Group(req.RunID)),
			ClientToken:    aws.String(clientToken(req.RunID, i)),
			Tags:           tags,
			PropagateTags:  types.PropagateTagsTaskDefinition,
			Overrides:      &types.TaskOverride{ContainerOverrides: overrides},
		}
		if p.LaunchType != "" {
			in.LaunchType = types.LaunchType(p.LaunchType)
		}
		for _, cp := range p.CapacityProviderStrategy {
			in.CapacityProviderStrategy = append(in.CapacityProviderStrategy, types.CapacityProviderStrategyItem{
				CapacityProvider: aws.String(cp.CapacityProvider), Weight: int32(cp.Weight), Base: int32(cp.Base),
			})
		}
		if p.PlatformVersion != "" {
			in.PlatformVersion = aws.String(p.PlatformVersion)
		}
		if p.NetworkMode == schedule.NetworkModeAWSVPC {
			assign := types.AssignPublicIpDisabled
			if p.Network.AssignPublicIP {
				assign = types.AssignPublicIpEnabled
			}
			in.NetworkConfiguration = &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{
				Subnets: p.Network.Subnets, SecurityGroups: p.Network.SecurityGroups, AssignPublicIp: assign,
			}}
		}
		out = append(out, in)
	}
	return out
}

// clientToken is the run id for the first RunTask call of a run and a
// deterministic variant for the following ones (ECS allows 64 characters).
func clientToken(runID string, i int) string {
	if i == 0 {
		return runID
	}
	base := runID
	if len(base) > 59 {
		base = base[:59]
	}
	return fmt.Sprintf("%s-c%03d", base, i)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// normalized is the part of a task definition taskyard controls; two task
// definitions with equal normalized forms are interchangeable.
type normalized struct {
	Family        string
	NetworkMode   string
	Compat        []string
	CPU, Memory   string
	ExecRole      string
	TaskRole      string
	Containers    []normContainer
	RegisterExtra string `json:",omitempty"`
}

type normContainer struct {
	Name, Image       string
	CPU               int32
	Memory, MemoryRes int32
	Essential         bool
	Command, EntryPt  []string
	Env, Secrets      [][2]string
	LogDriver         string
	LogOptions        map[string]string
	Firelens          string
	FirelensOptions   map[string]string
	DependsOn         [][2]string
}

func normContainers(cds []types.ContainerDefinition) []normContainer {
	var out []normContainer
	for _, cd := range cds {
		n := normContainer{
			Name: aws.ToString(cd.Name), Image: aws.ToString(cd.Image), CPU: cd.Cpu,
			Memory: aws.ToInt32(cd.Memory), MemoryRes: aws.ToInt32(cd.MemoryReservation),
			Essential: cd.Essential == nil || *cd.Essential, Command: cd.Command, EntryPt: cd.EntryPoint,
		}
		for _, e := range cd.Environment {
			n.Env = append(n.Env, [2]string{aws.ToString(e.Name), aws.ToString(e.Value)})
		}
		for _, s := range cd.Secrets {
			n.Secrets = append(n.Secrets, [2]string{aws.ToString(s.Name), aws.ToString(s.ValueFrom)})
		}
		sort.Slice(n.Env, func(i, j int) bool { return n.Env[i][0] < n.Env[j][0] })
		sort.Slice(n.Secrets, func(i, j int) bool { return n.Secrets[i][0] < n.Secrets[j][0] })
		if lc := cd.LogConfiguration; lc != nil {
			n.LogDriver, n.LogOptions = string(lc.LogDriver), lc.Options
		}
		if fc := cd.FirelensConfiguration; fc != nil {
			n.Firelens, n.FirelensOptions = string(fc.Type), fc.Options
		}
		for _, d := range cd.DependsOn {
			n.DependsOn = append(n.DependsOn, [2]string{aws.ToString(d.ContainerName), string(d.Condition)})
		}
		if len(n.Command) == 0 {
			n.Command = nil
		}
		if len(n.EntryPt) == 0 {
			n.EntryPt = nil
		}
		if len(n.LogOptions) == 0 {
			n.LogOptions = nil
		}
		if len(n.FirelensOptions) == 0 {
			n.FirelensOptions = nil
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func compat(cs []types.Compatibility) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, string(c))
	}
	sort.Strings(out)
	return out
}

func normalizeInput(in *ecs.RegisterTaskDefinitionInput) string {
	return mustJSON(normalized{
		Family: aws.ToString(in.Family), NetworkMode: string(in.NetworkMode), Compat: compat(in.RequiresCompatibilities),
		CPU: aws.ToString(in.Cpu), Memory: aws.ToString(in.Memory),
		ExecRole: aws.ToString(in.ExecutionRoleArn), TaskRole: aws.ToString(in.TaskRoleArn),
		Containers: normContainers(in.ContainerDefinitions),
	})
}

func normalizeDescribed(td *types.TaskDefinition) string {
	return mustJSON(normalized{
		Family: aws.ToString(td.Family), NetworkMode: string(td.NetworkMode), Compat: compat(td.RequiresCompatibilities),
		CPU: aws.ToString(td.Cpu), Memory: aws.ToString(td.Memory),
		ExecRole: aws.ToString(td.ExecutionRoleArn), TaskRole: aws.ToString(td.TaskRoleArn),
		Containers: normContainers(td.ContainerDefinitions),
	})
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings and ints
	}
	return string(b)
}

// Rendered is what `taskyard schedule render` prints: the JSON request
// bodies, exactly as the AWS SDK serializes them.
type Rendered struct {
	RegisterTaskDefinition json.RawMessage   `json:"registerTaskDefinition"`
	RunTask                []json.RawMessage `json:"runTask"`
}

// Render builds the requests the runner would send for a fire of spec at
// scheduledAt on profile p, serialized by the real ECS client (nothing is
// sent). RunTask names the task definition by family: ECS resolves it to
// the latest ACTIVE revision, the one the runner registers or reuses.
func Render(ctx context.Context, spec *v1.ScheduleSpec, p *schedule.Profile, scheduledAt time.Time) (*Rendered, error) {
	td, err := TaskDefinitionInput(spec, p)
	if err != nil {
		return nil, err
	}
	req := runner.Request{
		RunID: v1.RunID(spec.GetName(), scheduledAt, v1.Trigger_TRIGGER_SCHEDULE), Spec: spec, Profile: p,
		ScheduledAt: scheduledAt, Trigger: v1.Trigger_TRIGGER_SCHEDULE,
	}
	cap := &captureHTTP{}
	client := ecs.New(ecs.Options{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}, HTTPClient: cap, RetryMaxAttempts: 1})
	if _, err := client.RegisterTaskDefinition(ctx, td); err != nil {
		return nil, fmt.Errorf("serialize RegisterTaskDefinition: %w", err)
	}
	for _, in := range RunTaskInputs(req, p, Family(spec.GetName())) {
		if _, err := client.RunTask(ctx, in); err != nil {
			return nil, fmt.Errorf("serialize RunTask: %w", err)
		}
	}
	out := &Rendered{RegisterTaskDefinition: cap.bodies[0]}
	out.RunTask = cap.bodies[1:]
	return out, nil
}

// captureHTTP records request bodies and answers every call with an empty
// JSON object, so the SDK serializes a request without any network.
type captureHTTP struct{ bodies []json.RawMessage }

func (c *captureHTTP) Do(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	c.bodies = append(c.bodies, json.RawMessage(b))
	return &http.Response{
		StatusCode: http.StatusOK, Header: http.Header{"Content-Type": []string{"application/x-amz-json-1.1"}},
		Body: io.NopCloser(strings.NewReader("{}")), Request: r,
	}, nil
}
