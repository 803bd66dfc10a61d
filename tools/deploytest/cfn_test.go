package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// pseudoParameters are the names Ref resolves without a declaration.
var pseudoParameters = []string{
	"AWS::AccountId", "AWS::NotificationARNs", "AWS::NoValue", "AWS::Partition",
	"AWS::Region", "AWS::StackId", "AWS::StackName", "AWS::URLSuffix",
}

// getAttAttributes lists the Fn::GetAtt attributes of the resource types
// the templates use (from each type's "Return values" section of the
// CloudFormation reference). A type missing here fails the test: add it.
var getAttAttributes = map[string][]string{
	"AWS::SQS::Queue":                            {"Arn", "QueueName", "QueueUrl"},
	"AWS::Events::Rule":                          {"Arn"},
	"AWS::S3::Bucket":                            {"Arn", "DomainName", "RegionalDomainName"},
	"AWS::IAM::Role":                             {"Arn", "RoleId"},
	"AWS::Logs::LogGroup":                        {"Arn"},
	"AWS::KinesisFirehose::DeliveryStream":       {"Arn"},
	"AWS::ServiceDiscovery::Service":             {"Arn", "Id", "Name"},
	"AWS::ServiceDiscovery::PrivateDnsNamespace": {"Arn", "Id", "HostedZoneId"},
}

// cfnTemplate is a parsed CloudFormation template: the yaml node tree plus its
// declared names.
type cfnTemplate struct {
	file       string
	root       *yaml.Node
	params     map[string]*yaml.Node
	resources  map[string]*yaml.Node
	resTypes   map[string]string
	conditions map[string]bool
}

func mapping(n *yaml.Node) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n == nil || n.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		out[n.Content[i].Value] = n.Content[i+1]
	}
	return out
}

func parseTemplate(file string, data []byte) (*cfnTemplate, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a YAML mapping", file)
	}
	t := &cfnTemplate{file: file, root: doc.Content[0], resTypes: map[string]string{}, conditions: map[string]bool{}}
	top := mapping(t.root)
	for k := range top {
		if !slices.Contains([]string{"AWSTemplateFormatVersion", "Description", "Metadata", "Parameters", "Rules", "Mappings", "Conditions", "Transform", "Resources", "Outputs"}, k) {
			return nil, fmt.Errorf("%s: unknown top-level section %q", file, k)
		}
	}
	t.params = mapping(top["Parameters"])
	t.resources = mapping(top["Resources"])
	for c := range mapping(top["Conditions"]) {
		t.conditions[c] = true
	}
	if len(t.resources) == 0 {
		return nil, fmt.Errorf("%s: no Resources", file)
	}
	for name, p := range t.params {
		if mapping(p)["Type"] == nil {
			return nil, fmt.Errorf("%s:%d: parameter %s has no Type", file, p.Line, name)
		}
		if _, dup := t.resources[name]; dup {
			return nil, fmt.Errorf("%s:%d: %s is both a parameter and a resource", file, p.Line, name)
		}
	}
	for name, r := range t.resources {
		typ := mapping(r)["Type"]
		if typ == nil || typ.Value == "" {
			return nil, fmt.Errorf("%s:%d: resource %s has no Type", file, r.Line, name)
		}
		t.resTypes[name] = typ.Value
	}
	return t, nil
}

// subVarRE matches ${Name} and ${Name.Attr} in Fn::Sub strings; ${!...} is
// a literal and not matched.
var subVarRE = regexp.MustCompile(`\$\{([^!}][^}]*)\}`)

// checkRefs walks the template and returns every reference that does not
// resolve, as file:line: problem.
func (t *cfnTemplate) checkRefs() []string {
	var problems []string
	bad := func(n *yaml.Node, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: %s", t.file, n.Line, fmt.Sprintf(format, args...)))
	}
	ref := func(n *yaml.Node, name string) {
		if _, ok := t.params[name]; ok {
			return
		}
		if _, ok := t.resources[name]; ok {
			return
		}
		if slices.Contains(pseudoParameters, name) {
			return
		}
		bad(n, "Ref %s: no such parameter or resource", name)
	}
	getAtt := func(n *yaml.Node, res, attr string) {
		typ, ok := t.resTypes[res]
		if !ok {
			bad(n, "GetAtt %s.%s: no such resource", res, attr)
			return
		}
		attrs, known := getAttAttributes[typ]
		if !known {
			bad(n, "GetAtt %s.%s: resource type %s is not in getAttAttributes", res, attr, typ)
			return
		}
		if !slices.Contains(attrs, attr) {
			bad(n, "GetAtt %s.%s: %s has no attribute %s (it has %s)", res, attr, typ, attr, strings.Join(attrs, ", "))
		}
	}
	sub := func(n *yaml.Node, s string, local map[string]*yaml.Node) {
		for _, m := range subVarRE.FindAllStringSubmatch(s, -1) {
			v := m[1]
			if _, ok := local[v]; ok {
				continue
			}
			if res, attr, ok := strings.Cut(v, "."); ok && !strings.HasPrefix(v, "AWS::") {
				getAtt(n, res, attr)
				continue
			}
			ref(n, v)
		}
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		switch n.Tag {
		case "!Ref":
			ref(n, n.Value)
			return
		case "!GetAtt":
			if n.Kind == yaml.ScalarNode {
				res, attr, ok := strings.Cut(n.Value, ".")
				if !ok {
					bad(n, "GetAtt %q: want Resource.Attribute", n.Value)
					return
				}
				getAtt(n, res, attr)
			} else if n.Kind == yaml.SequenceNode && len(n.Content) == 2 {
				getAtt(n, n.Content[0].Value, n.Content[1].Value)
			} else {
				bad(n, "GetAtt: want Resource.Attribute or [Resource, Attribute]")
			}
			return
		case "!Sub":
			if n.Kind == yaml.ScalarNode {
				sub(n, n.Value, nil)
				return
			}
			if n.Kind == yaml.SequenceNode && len(n.Content) == 2 {
				local := mapping(n.Content[1])
				for _, v := range local {
					walk(v)
				}
				sub(n, n.Content[0].Value, local)
				return
			}
			bad(n, "Sub: want a string or [string, {variables}]")
			return
		case "!Condition":
			if !t.conditions[n.Value] {
				bad(n, "Condition %s: no such condition", n.Value)
			}
		}
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				switch k.Value {
				case "Ref":
					ref(v, v.Value)
					continue
				case "Fn::GetAtt":
					if v.Kind == yaml.SequenceNode && len(v.Content) == 2 {
						getAtt(v, v.Content[0].Value, v.Content[1].Value)
					} else {
						bad(v, "Fn::GetAtt: want [Resource, Attribute]")
					}
					continue
				case "Fn::Sub":
					if v.Kind == yaml.ScalarNode {
						sub(v, v.Value, nil)
						continue
					}
				case "DependsOn":
					deps := []*yaml.Node{v}
					if v.Kind == yaml.SequenceNode {
						deps = v.Content
					}
					for _, d := range deps {
						if _, ok := t.resources[d.Value]; !ok {
							bad(d, "DependsOn %s: no such resource", d.Value)
						}
					}
					continue
				}
				walk(v)
			}
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(t.root)
	sort.Strings(problems)
	return problems
}

func loadTemplate(t *testing.T, rel string) *cfnTemplate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	require.NoError(t, err)
	tpl, err := parseTemplate(rel, data)
	require.NoError(t, err)
	return tpl
}

func TestCloudFormationTemplatesResolve(t *testing.T) {
	t.Parallel()
	files := globRel(t, "deploy/cloudformation/*.yaml")
	require.NotEmpty(t, files)
	for _, rel := range files {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			tpl := loadTemplate(t, rel)
			require.Empty(t, tpl.checkRefs())
			// Every parameter is used somewhere (an unused one is a typo).
			data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
			require.NoError(t, err)
			for p := range tpl.params {
				used := regexp.MustCompile(`(!Ref\s+` + p + `\b|\$\{` + p + `\}|Ref:\s+` + p + `\b)`).Match(data)
				require.True(t, used, "%s: parameter %s is never used", rel, p)
			}
		})
	}
}

func TestCheckRefsFindsBrokenReferences(t *testing.T) {
	t.Parallel()
	doc := `
Parameters:
  Name: {Type: String}
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${Name}-${Missing}-${!Literal}"
  R:
    Type: AWS::Events::Rule
    DependsOn: Ghost
    Properties:
      Targets:
        - Arn: !GetAtt Q.Arn
          Id: !Ref Nope
        - Arn: !GetAtt Q.Nope
          Id: {"Fn::GetAtt": [Gone, Arn]}
Outputs:
  U: {Value: !Sub ["${X}-${Q.QueueUrl}", {X: !Ref AWS::Region}]}
`
	tpl, err := parseTemplate("t.yaml", []byte(doc))
	require.NoError(t, err)
	require.Equal(t, []string{
		"t.yaml:11: DependsOn Ghost: no such resource",
		"t.yaml:15: Ref Nope: no such parameter or resource",
		"t.yaml:16: GetAtt Q.Nope: AWS::SQS::Queue has no attribute Nope (it has Arn, QueueName, QueueUrl)",
		"t.yaml:17: GetAtt Gone.Arn: no such resource",
		"t.yaml:8: Ref Missing: no such parameter or resource",
	}, tpl.checkRefs())
}

// yamlPath follows mapping keys from n.
func yamlPath(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		n = mapping(n)[k]
		if n == nil {
			return nil
		}
	}
	return n
}

func seqValues(n *yaml.Node) []string {
	var out []string
	if n == nil {
		return nil
	}
	for _, c := range n.Content {
		out = append(out, c.Value)
	}
	return out
}

func TestTaskEventsWiring(t *testing.T) {
	t.Parallel()
	tpl := loadTemplate(t, "deploy/cloudformation/task-events.yaml")
	var rule *yaml.Node
	for name, typ := range tpl.resTypes {
		if typ == "AWS::Events::Rule" {
			require.Nil(t, rule, "one rule")
			rule = tpl.resources[name]
		}
	}
	require.NotNil(t, rule)
	pattern := yamlPath(rule, "Properties", "EventPattern")
	require.Equal(t, []string{"aws.ecs"}, seqValues(yamlPath(pattern, "source")))
	require.Equal(t, []string{"ECS Task State Change"}, seqValues(yamlPath(pattern, "detail-type")))
	clusters := yamlPath(pattern, "detail", "clusterArn")
	require.NotNil(t, clusters, "the rule must be filtered to the managed clusters")
	require.Equal(t, "!Ref", clusters.Tag)
	require.Equal(t, "CommaDelimitedList", yamlPath(tpl.params[clusters.Value], "Type").Value)

	// The target is the queue, with a dead-letter queue; the queue redrives
	// to it too; the queue policy lets only this rule send.
	targets := yamlPath(rule, "Properties", "Targets")
	require.Len(t, targets.Content, 1)
	target := targets.Content[0]
	require.Equal(t, "Queue.Arn", yamlPath(target, "Arn").Value)
	require.Equal(t, "DeadLetterQueue.Arn", yamlPath(target, "DeadLetterConfig", "Arn").Value)
	require.Equal(t, "DeadLetterQueue.Arn", yamlPath(tpl.resources["Queue"], "Properties", "RedrivePolicy", "deadLetterTargetArn").Value)
	policy := tpl.resources["QueuePolicy"]
	require.Equal(t, "AWS::SQS::QueuePolicy", tpl.resTypes["QueuePolicy"])
	require.ElementsMatch(t, []string{"Queue", "DeadLetterQueue"}, seqValues(yamlPath(policy, "Properties", "Queues")))
	var allow *yaml.Node
	for _, st := range yamlPath(policy, "Properties", "PolicyDocument", "Statement").Content {
		if yamlPath(st, "Effect").Value == "Allow" {
			allow = st
		}
	}
	require.NotNil(t, allow)
	require.Equal(t, "events.amazonaws.com", yamlPath(allow, "Principal", "Service").Value)
	require.Equal(t, "sqs:SendMessage", yamlPath(allow, "Action").Value)
	require.Equal(t, "TaskStateChangeRule.Arn", yamlPath(allow, "Condition", "ArnEquals", "aws:SourceArn").Value)
}

func TestFirehosePrefixes(t *testing.T) {
	t.Parallel()
	tpl := loadTemplate(t, "deploy/cloudformation/log-delivery-stream.yaml")
	dest := yamlPath(tpl.resources["DeliveryStream"], "Properties", "ExtendedS3DestinationConfiguration")
	require.NotNil(t, dest)
	require.Equal(t, "${ClusterName}/${ServiceName}/!{timestamp:yyyy}/!{timestamp:MM}/!{timestamp:dd}/", yamlPath(dest, "Prefix").Value)
	// Firehose requires an error prefix whenever Prefix uses expressions.
	require.Contains(t, yamlPath(dest, "ErrorOutputPrefix").Value, "!{firehose:error-output-type}")
	require.Equal(t, "GZIP", yamlPath(dest, "CompressionFormat").Value)
	// The stream name is the logrouter firehose output's streamTemplate
	// "taskyard-{cluster}_{service}" (deploy/ecs/site-config/logrouter.yml).
	require.Equal(t, "${StreamNamePrefix}${ClusterName}_${ServiceName}", yamlPath(tpl.resources["DeliveryStream"], "Properties", "DeliveryStreamName").Value)
	require.Equal(t, "taskyard-", yamlPath(tpl.params["StreamNamePrefix"], "Default").Value)
	lr, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy/ecs/site-config/logrouter.yml"))
	require.NoError(t, err)
	require.Contains(t, string(lr), `streamTemplate: "taskyard-{cluster}_{service}"`)
}
