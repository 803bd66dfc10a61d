package schedule

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Launch types and network modes a Profile may use.
const (
	LaunchTypeFargate  = "FARGATE"
	LaunchTypeEC2      = "EC2"
	LaunchTypeExternal = "EXTERNAL"

	NetworkModeAWSVPC = "awsvpc"
	NetworkModeBridge = "bridge"
	NetworkModeHost   = "host"

	// DefaultLogRouterPort and DefaultLogRouterImage fill in logRouting.
	DefaultLogRouterPort  = 24224
	DefaultLogRouterImage = "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"
)

// Profile is a validated cluster profile: an SRE-owned description of an ECS
// cluster and how tasks run on it.
type Profile struct {
	// File is the file the profile was read from ("" when it was not).
	File string
	Name string
	// Cluster is the ECS cluster name or ARN.
	Cluster string
	// Exactly one of LaunchType and CapacityProviderStrategy is set.
	LaunchType               string
	CapacityProviderStrategy []CapacityProvider
	PlatformVersion          string
	Network                  Network
	NetworkMode              string // default awsvpc
	ExecutionRoleARN         string
	TaskRoleARN              string
	TaskLimit                int // 0 = no limit
	Tags                     map[string]string
	LogRouting               *LogRouting // nil = no FireLens sidecar

	pos map[string]position
}

// CapacityProvider is one entry of a capacity provider strategy.
type CapacityProvider struct {
	CapacityProvider string
	Weight           int // default 1
	Base             int
}

// Network is the awsvpc network configuration.
type Network struct {
	Subnets        []string
	SecurityGroups []string
	AssignPublicIP bool
}

// LogRouting makes the runner inject a FireLens sidecar forwarding the
// task's logs to the logrouter.
type LogRouting struct {
	Host  string
	Port  int
	Image string
}

// IsFargate reports whether tasks on this profile run on Fargate: launch
// type FARGATE, or a FARGATE / FARGATE_SPOT capacity provider strategy.
func (p *Profile) IsFargate() bool {
	if p.LaunchType == LaunchTypeFargate {
		return true
	}
	for _, cp := range p.CapacityProviderStrategy {
		if isFargateProvider(cp.CapacityProvider) {
			return true
		}
	}
	return false
}

func isFargateProvider(name string) bool { return name == "FARGATE" || name == "FARGATE_SPOT" }

// LoadProfile reads and parses a cluster profile file. Errors are Problems.
func LoadProfile(path string) (*Profile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Problems{readProblem(path, err)}
	}
	return ParseProfile(path, data)
}

// ParseProfile parses a cluster profile file's content; file names it in
// problems. The error, if any, is a Problems listing everything wrong.
func ParseProfile(file string, data []byte) (*Profile, error) {
	p, probs := parseProfile(file, data)
	if len(probs) > 0 {
		return nil, probs
	}
	return p, nil
}

func parseProfile(file string, data []byte) (*Profile, Problems) {
	root, probs := parseDocument(file, data)
	if root == nil {
		return nil, probs
	}
	return decodeProfile(file, root)
}

func decodeProfile(file string, root *yaml.Node) (*Profile, Problems) {
	d := newDecoder(file)
	p := d.profile(root)
	d.probs.sort()
	return p, d.probs
}

var (
	clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,255}$`)
	clusterARNRE  = regexp.MustCompile(`^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster/[a-zA-Z0-9_-]{1,255}$`)
	roleARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)
	subnetRE      = regexp.MustCompile(`^subnet-[0-9a-zA-Z]+$`)
	sgRE          = regexp.MustCompile(`^sg-[0-9a-zA-Z]+$`)
	hostRE        = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$`)
)

func (d *decoder) profile(n *yaml.Node) *Profile {
	p := &Profile{File: d.file, NetworkMode: NetworkModeAWSVPC, pos: d.pos}
	f := d.mapping(n, "", "name", "cluster", "launchType", "capacityProviderStrategy", "platformVersion", "network", "networkMode", "executionRoleArn", "taskRoleArn", "taskLimit", "tags", "logRouting")
	if f == nil {
		return p
	}
	if v := d.required(f, "name", ""); v != nil {
		p.Name, _ = d.name(v, "name")
	}
	if v := d.required(f, "cluster", "(ECS cluster name or ARN)"); v != nil {
		if c, ok := d.nonEmpty(v, "cluster"); ok {
			if !clusterNameRE.MatchString(c) && !clusterARNRE.MatchString(c) {
				d.addf(v, "cluster", "%q is neither an ECS cluster name nor a cluster ARN (arn:aws:ecs:<region>:<account>:cluster/<name>)", c)
			} else {
				p.Cluster = c
			}
		}
	}

	lt, cps := f.get("launchType"), f.get("capacityProviderStrategy")
	switch {
	case lt != nil && cps != nil:
		d.addf(cps, "capacityProviderStrategy", "mutually exclusive with launchType")
	case lt == nil && cps == nil:
		d.addf(f.node, "launchType", "required: set launchType or capacityProviderStrategy")
	}
	if lt != nil {
		p.LaunchType, _ = d.enum(lt, "launchType", LaunchTypeFargate, LaunchTypeEC2, LaunchTypeExternal)
	}
	if cps != nil {
		d.capacityProviders(cps, p)
	}
	fargate := p.IsFargate()
	// Only judge launch-type dependent fields when the launch type is known.
	known := p.LaunchType != "" || len(p.CapacityProviderStrategy) > 0

	if v := f.get("platformVersion"); v != nil {
		if pv, ok := d.nonEmpty(v, "platformVersion"); ok {
			if known && !fargate {
				d.addf(v, "platformVersion", "only applies to Fargate")
			} else {
				p.PlatformVersion = pv
			}
		}
	}
	modeOK := true
	if v := f.get("networkMode"); v != nil {
		var m string
		m, modeOK = d.enum(v, "networkMode", NetworkModeAWSVPC, NetworkModeBridge, NetworkModeHost)
		switch {
		case !modeOK:
		case fargate && m != NetworkModeAWSVPC:
			d.addf(v, "networkMode", "Fargate requires awsvpc")
			modeOK = false
		default:
			p.NetworkMode = m
		}
	}
	if p.LaunchType == LaunchTypeExternal && p.NetworkMode == NetworkModeAWSVPC && modeOK {
		at := f.get("networkMode")
		if at == nil {
			at = f.get("launchType")
		}
		d.addf(at, "networkMode", "launchType EXTERNAL does not support awsvpc; set networkMode: bridge or host")
	}
	d.network(f, p, modeOK, known, fargate)

	if v := f.get("executionRoleArn"); v != nil {
		p.ExecutionRoleARN, _ = d.roleARN(v, "executionRoleArn")
	}
	if v := f.get("taskRoleArn"); v != nil {
		p.TaskRoleARN, _ = d.roleARN(v, "taskRoleArn")
	}
	if v := f.get("taskLimit"); v != nil {
		p.TaskLimit, _ = d.integer(v, "taskLimit", 1, math.MaxInt32)
	}
	if v := f.get("tags"); v != nil {
		p.Tags, _ = d.strMap(v, "tags", checkTagKey, "")
		if len(p.Tags) > 40 {
			d.addf(v, "tags", "%d tags; at most 40 are allowed (ECS allows 50 and taskyard adds its own)", len(p.Tags))
		}
		tv := resolve(v)
		for i := 0; tv.Kind == yaml.MappingNode && i+1 < len(tv.Content); i += 2 {
			if val := resolve(tv.Content[i+1]); len(val.Value) > 256 {
				d.addf(val, "tags."+tv.Content[i].Value, "value is %d characters long, at most 256 are allowed", len(val.Value))
			}
		}
	}
	if v := f.get("logRouting"); v != nil {
		d.logRouting(v, p)
	}
	return p
}

func checkTagKey(k string) string {
	switch {
	case k == "" || len(k) > 128:
		return fmt.Sprintf("tag key %q must be 1-128 characters long", k)
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return fmt.Sprintf("tag key %q uses the reserved prefix aws:", k)
	}
	return ""
}

func (d *decoder) roleARN(n *yaml.Node, path string) (string, bool) {
	s, ok := d.nonEmpty(n, path)
	if ok && !roleARNRE.MatchString(s) {
		d.addf(n, path, "%q is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", s)
		return "", false
	}
	return s, ok
}

func (d *decoder) capacityProviders(n *yaml.Node, p *Profile) {
	const path = "capacityProviderStrategy"
	items := d.sequence(n, path)
	if items == nil {
		if resolve(n).Kind == yaml.SequenceNode {
			d.addf(n, path, "must list at least one capacity provider")
		}
		return
	}
	seen := map[string]string{}
	var withBase []string
	fargate, other := false, false
	allOK := true
	for i, item := range items {
		ip := fmt.Sprintf("%s[%d]", path, i)
		f := d.mapping(item, ip, "capacityProvider", "weight", "base")
		if f == nil {
			allOK = false
			continue
		}
		cp := CapacityProvider{Weight: 1}
		ok := true
		if v := d.required(f, "capacityProvider", ""); v != nil {
			name, good := d.nonEmpty(v, ip+".capacityProvider")
			if good {
				if prev, dup := seen[name]; dup {
					d.addf(v, ip+".capacityProvider", "duplicate capacity provider %q (also %s)", name, prev)
				}
				seen[name] = ip
				if isFargateProvider(name) {
					fargate = true
				} else {
					other = true
				}
			}
			cp.CapacityProvider, ok = name, ok && good
		} else {
			ok = false
		}
		if v := f.get("weight"); v != nil {
			var good bool
			cp.Weight, good = d.integer(v, ip+".weight", 0, 1000)
			ok = ok && good
		}
		if v := f.get("base"); v != nil {
			var good bool
			cp.Base, good = d.integer(v, ip+".base", 0, 100000)
			ok = ok && good
			if cp.Base > 0 {
				withBase = append(withBase, ip)
			}
		}
		allOK = allOK && ok
		p.CapacityProviderStrategy = append(p.CapacityProviderStrategy, cp)
	}
	if len(items) == 0 {
		d.addf(n, path, "must list at least one capacity provider")
	}
	if len(withBase) > 1 {
		d.addf(n, path, "only one capacity provider may have a base (%s have one)", strings.Join(withBase, ", "))
	}
	if fargate && other {
		d.addf(n, path, "FARGATE/FARGATE_SPOT cannot be mixed with Auto Scaling group capacity providers")
	}
	if allOK && len(items) > 0 {
		positive := false
		for _, cp := range p.CapacityProviderStrategy {
			positive = positive || cp.Weight > 0
		}
		if !positive {
			d.addf(n, path, "at least one capacity provider needs a weight above 0")
		}
	}
}

func (d *decoder) network(root *fields, p *Profile, modeOK, known, fargate bool) {
	v := root.get("network")
	if p.NetworkMode != NetworkModeAWSVPC || !modeOK {
		if v != nil && modeOK {
			d.addf(v, "network", "only applies to networkMode awsvpc")
		}
		return
	}
	if p.LaunchType == LaunchTypeExternal {
		return // already reported: EXTERNAL cannot use awsvpc
	}
	if v == nil {
		if known { // without a launch type the profile is already wrong
			d.addf(root.node, "network.subnets", "required for networkMode awsvpc")
		}
		return
	}
	f := d.mapping(v, "network", "subnets", "securityGroups", "assignPublicIp")
	if f == nil {
		return
	}
	if sv := d.required(f, "subnets", "for networkMode awsvpc"); sv != nil {
		subnets, ok := d.strList(sv, "network.subnets")
		switch {
		case ok && len(subnets) == 0:
			d.addf(sv, "network.subnets", "must list at least one subnet")
		case len(subnets) > 16:
			d.addf(sv, "network.subnets", "%d subnets; at most 16 are allowed", len(subnets))
		}
		for i, s := range subnets {
			if ok && !subnetRE.MatchString(s) {
				d.addf(resolve(sv).Content[i], fmt.Sprintf("network.subnets[%d]", i), "%q is not a subnet ID (subnet-...)", s)
			}
		}
		p.Network.Subnets = subnets
	}
	if sv := f.get("securityGroups"); sv != nil {
		groups, ok := d.strList(sv, "network.securityGroups")
		if len(groups) > 5 {
			d.addf(sv, "network.securityGroups", "%d security groups; at most 5 are allowed", len(groups))
		}
		for i, s := range groups {
			if ok && !sgRE.MatchString(s) {
				d.addf(resolve(sv).Content[i], fmt.Sprintf("network.securityGroups[%d]", i), "%q is not a security group ID (sg-...)", s)
			}
		}
		p.Network.SecurityGroups = groups
	}
	if av := f.get("assignPublicIp"); av != nil {
		if b, ok := d.boolean(av, "network.assignPublicIp"); ok {
			if b && known && !fargate {
				d.addf(av, "network.assignPublicIp", "only Fargate tasks can get a public IP")
			} else {
				p.Network.AssignPublicIP = b
			}
		}
	}
}

func (d *decoder) logRouting(n *yaml.Node, p *Profile) {
	f := d.mapping(n, "logRouting", "host", "port", "image")
	if f == nil {
		return
	}
	lr := &LogRouting{Port: DefaultLogRouterPort, Image: DefaultLogRouterImage}
	if v := d.required(f, "host", "(the logrouter's address)"); v != nil {
		if h, ok := d.nonEmpty(v, "logRouting.host"); ok {
			if !hostRE.MatchString(h) {
				d.addf(v, "logRouting.host", "%q is not a host name or IP address", h)
			}
			lr.Host = h
		}
	}
	if v := f.get("port"); v != nil {
		lr.Port, _ = d.integer(v, "logRouting.port", 1, 65535)
	}
	if v := f.get("image"); v != nil {
		lr.Image, _ = d.nonEmpty(v, "logRouting.image")
	}
	p.LogRouting = lr
}
