package schedule

import (
	"slices"
	"strconv"
	"time"

	taskyardv1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ToProto converts s to its wire form, as stored in KV taskyard-schedules.
// Zero durations (no timeout, no succeedWithin) are left unset.
func (s *Schedule) ToProto() *taskyardv1.ScheduleSpec {
	spec := &taskyardv1.ScheduleSpec{
		Name:       s.Name,
		Cluster:    s.Cluster,
		Type:       string(s.Type),
		Cpu:        int32(s.CPU),
		Memory:     int32(s.Memory),
		SourceFile: s.File,
		Timing: &taskyardv1.Timing{
			Timezone:         s.Timing.Timezone,
			TaskCount:        int32(s.Timing.TaskCount),
			Concurrency:      string(s.Timing.Concurrency),
			StartingDeadline: optDuration(s.Timing.StartingDeadline),
			CatchUp:          &taskyardv1.CatchUp{Mode: string(s.Timing.CatchUp.Mode), Max: int32(s.Timing.CatchUp.Max)},
			Timeout:          optDuration(s.Timing.Timeout),
			Enabled:          s.Timing.Enabled,
		},
		Alerts: &taskyardv1.AlertSettings{
			Runbook:  s.Alerts.Runbook,
			Severity: string(s.Alerts.Severity),
			Channel:  s.Alerts.Channel,
		},
		Expectations: &taskyardv1.Expectations{
			SucceedWithin: optDuration(s.Expectations.SucceedWithin),
			Logs:          s.Expectations.Logs,
		},
	}
	if s.Timing.Expression != nil {
		spec.Timing.Expression = s.Timing.Expression.String()
	}
	if !s.Timing.Anchor.IsZero() {
		spec.Anchor = timestamppb.New(s.Timing.Anchor)
	}
	for _, c := range s.Containers {
		spec.Containers = append(spec.Containers, &taskyardv1.Container{
			Name:              c.Name,
			Image:             c.Image,
			Cpu:               int32(c.CPU),
			Memory:            int32(c.Memory),
			MemoryReservation: int32(c.MemoryReservation),
			Command:           c.Command,
			EntryPoint:        c.EntryPoint,
			Environment:       c.Environment,
			Secrets:           c.Secrets,
			Essential:         c.Essential,
		})
	}
	return spec
}

func optDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// ScheduleFromProto converts a spec back to a Schedule, applying the same
// defaults and validation as a schedule file (proto zero values count as
// absent, except booleans). The anchor of rate() expressions is the spec's
// anchor. Problems name the spec's source file and field but carry no line.
func ScheduleFromProto(spec *taskyardv1.ScheduleSpec) (*Schedule, error) {
	m := mapping()
	m.str("name", spec.GetName())
	m.str("cluster", spec.GetCluster())
	m.str("type", spec.GetType())
	m.int("cpu", spec.GetCpu())
	m.int("memory", spec.GetMemory())
	var containers []*yaml.Node
	for _, c := range spec.GetContainers() {
		cm := mapping()
		cm.str("name", c.GetName())
		cm.str("image", c.GetImage())
		cm.int("cpu", c.GetCpu())
		cm.int("memory", c.GetMemory())
		cm.int("memoryReservation", c.GetMemoryReservation())
		cm.strs("command", c.GetCommand())
		cm.strs("entryPoint", c.GetEntryPoint())
		cm.strMap("environment", c.GetEnvironment())
		cm.strMap("secrets", c.GetSecrets())
		cm.bool("essential", c.GetEssential())
		containers = append(containers, cm.node)
	}
	m.set("containers", &yaml.Node{Kind: yaml.SequenceNode, Content: containers})
	if t := spec.GetTiming(); t != nil {
		tm := mapping()
		tm.str("expression", t.GetExpression())
		tm.str("timezone", t.GetTimezone())
		tm.int("taskCount", t.GetTaskCount())
		tm.str("concurrency", t.GetConcurrency())
		tm.duration("startingDeadline", t.GetStartingDeadline())
		if cu := t.GetCatchUp(); cu.GetMode() != "" {
			cm := mapping()
			cm.str("mode", cu.GetMode())
			if cu.GetMode() == string(CatchUpAll) {
				cm.int("max", cu.GetMax())
			}
			tm.set("catchUp", cm.node)
		}
		tm.duration("timeout", t.GetTimeout())
		tm.bool("enabled", t.GetEnabled())
		m.set("schedule", tm.node)
	}
	if a := spec.GetAlerts(); a != nil {
		am := mapping()
		am.str("runbook", a.GetRunbook())
		am.str("severity", a.GetSeverity())
		am.str("channel", a.GetChannel())
		m.set("alerts", am.node)
	}
	if e := spec.GetExpectations(); e != nil {
		em := mapping()
		em.duration("succeedWithin", e.GetSucceedWithin())
		em.bool("logs", e.GetLogs())
		m.set("expectations", em.node)
	}
	var anchor time.Time
	if spec.GetAnchor() != nil {
		anchor = spec.GetAnchor().AsTime()
	}
	s, probs := decodeSchedule(spec.GetSourceFile(), m.node, anchor)
	if len(probs) > 0 {
		return nil, withoutPositions(probs)
	}
	s.pos = nil
	return s, nil
}

// ToProto converts p to its wire form.
func (p *Profile) ToProto() *taskyardv1.ClusterProfile {
	cp := &taskyardv1.ClusterProfile{
		Name:             p.Name,
		Cluster:          p.Cluster,
		LaunchType:       p.LaunchType,
		PlatformVersion:  p.PlatformVersion,
		Subnets:          p.Network.Subnets,
		SecurityGroups:   p.Network.SecurityGroups,
		AssignPublicIp:   p.Network.AssignPublicIP,
		NetworkMode:      p.NetworkMode,
		ExecutionRoleArn: p.ExecutionRoleARN,
		TaskRoleArn:      p.TaskRoleARN,
		TaskLimit:        int32(p.TaskLimit),
		Tags:             p.Tags,
	}
	for _, s := range p.CapacityProviderStrategy {
		cp.CapacityProviderStrategy = append(cp.CapacityProviderStrategy, &taskyardv1.CapacityProviderItem{
			CapacityProvider: s.CapacityProvider, Weight: int32(s.Weight), Base: int32(s.Base),
		})
	}
	if lr := p.LogRouting; lr != nil {
		cp.LogRouting = &taskyardv1.LogRouting{Host: lr.Host, Port: int32(lr.Port), Image: lr.Image}
	}
	return cp
}

// ProfileFromProto converts a cluster profile message back to a Profile,
// with the same defaults and validation as a profile file.
func ProfileFromProto(cp *taskyardv1.ClusterProfile) (*Profile, error) {
	m := mapping()
	m.str("name", cp.GetName())
	m.str("cluster", cp.GetCluster())
	m.str("launchType", cp.GetLaunchType())
	if items := cp.GetCapacityProviderStrategy(); len(items) > 0 {
		var seq []*yaml.Node
		for _, it := range items {
			im := mapping()
			im.str("capacityProvider", it.GetCapacityProvider())
			im.intAlways("weight", it.GetWeight())
			im.int("base", it.GetBase())
			seq = append(seq, im.node)
		}
		m.set("capacityProviderStrategy", &yaml.Node{Kind: yaml.SequenceNode, Content: seq})
	}
	m.str("platformVersion", cp.GetPlatformVersion())
	if len(cp.GetSubnets())+len(cp.GetSecurityGroups()) > 0 || cp.GetAssignPublicIp() {
		nm := mapping()
		nm.strs("subnets", cp.GetSubnets())
		nm.strs("securityGroups", cp.GetSecurityGroups())
		if cp.GetAssignPublicIp() {
			nm.bool("assignPublicIp", true)
		}
		m.set("network", nm.node)
	}
	m.str("networkMode", cp.GetNetworkMode())
	m.str("executionRoleArn", cp.GetExecutionRoleArn())
	m.str("taskRoleArn", cp.GetTaskRoleArn())
	m.int("taskLimit", cp.GetTaskLimit())
	m.strMap("tags", cp.GetTags())
	if lr := cp.GetLogRouting(); lr != nil {
		lm := mapping()
		lm.str("host", lr.GetHost())
		lm.int("port", lr.GetPort())
		lm.str("image", lr.GetImage())
		m.set("logRouting", lm.node)
	}
	p, probs := decodeProfile("", m.node)
	if len(probs) > 0 {
		return nil, withoutPositions(probs)
	}
	p.pos = nil
	return p, nil
}

// withoutPositions drops the line and column of problems found in a
// document built from a message: they point nowhere the user can see.
func withoutPositions(ps Problems) Problems {
	for i := range ps {
		ps[i].Line, ps[i].Col = 0, 0
	}
	return ps
}

// nodeBuilder builds the YAML mapping a message would have been decoded
// from, so that messages get exactly the checks and defaults files get.
// Zero strings and integers are left out (absent = default).
type nodeBuilder struct{ node *yaml.Node }

func mapping() nodeBuilder { return nodeBuilder{&yaml.Node{Kind: yaml.MappingNode}} }

func (b nodeBuilder) set(key string, v *yaml.Node) {
	b.node.Content = append(b.node.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

func scalar(tag, v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v} }

func (b nodeBuilder) str(key, v string) {
	if v != "" {
		b.set(key, scalar("!!str", v))
	}
}

func (b nodeBuilder) int(key string, v int32) {
	if v != 0 {
		b.intAlways(key, v)
	}
}

func (b nodeBuilder) intAlways(key string, v int32) {
	b.set(key, scalar("!!int", strconv.Itoa(int(v))))
}

func (b nodeBuilder) bool(key string, v bool) {
	b.set(key, scalar("!!bool", map[bool]string{true: "true", false: "false"}[v]))
}

func (b nodeBuilder) duration(key string, d *durationpb.Duration) {
	if d != nil {
		b.set(key, scalar("!!str", d.AsDuration().String()))
	}
}

func (b nodeBuilder) strs(key string, vs []string) {
	if len(vs) == 0 {
		return
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	for _, v := range vs {
		seq.Content = append(seq.Content, scalar("!!str", v))
	}
	b.set(key, seq)
}

func (b nodeBuilder) strMap(key string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	mm := mapping()
	for _, k := range keys {
		mm.set(k, scalar("!!str", m[k]))
	}
	b.set(key, mm.node)
}
