package schedule

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProblemString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "a.yml", Line: 3, Col: 7, Field: "containers[1].memory", Msg: "bad"}, "a.yml:3:7: containers[1].memory: bad"},
		{Problem{File: "a.yml", Line: 3, Msg: "did not find expected key"}, "a.yml:3: did not find expected key"},
		{Problem{File: "a.yml", Msg: "file is empty"}, "a.yml: file is empty"},
		{Problem{Field: "cpu", Msg: "bad"}, "cpu: bad"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.p.String())
	}
	ps := Problems{tests[0].p, tests[1].p}
	require.Equal(t, "a.yml:3:7: containers[1].memory: bad\na.yml:3: did not find expected key", ps.Error())
	require.NoError(t, Problems(nil).Err())
	require.Error(t, ps.Err())
}

const okContainers = "containers: [{name: app, image: busybox, memory: 128}]\n"

func TestParseScheduleProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // every problem, in order
	}{
		{name: "empty file", yaml: "", want: []string{"s.yml: file is empty"}},
		{name: "only a comment", yaml: "# nothing\n", want: []string{"s.yml: file is empty"}},
		{name: "syntax error", yaml: "name: a\ncontainers: [\n", want: []string{"s.yml:2: did not find expected node content"}},
		{name: "two documents", yaml: "name: a\n---\nname: b\n", want: []string{"s.yml:2:1: a file holds exactly one YAML document; found a second one"}},
		{name: "root is a list", yaml: "- a\n", want: []string{"s.yml:1:1: must be a mapping, got a list"}},
		{name: "everything missing", yaml: "{}\n", want: []string{
			"s.yml:1:1: name: required",
			"s.yml:1:1: cluster: required (the name of a cluster profile)",
			"s.yml:1:1: containers: required (at least one)",
			"s.yml:1:1: schedule: required (with an expression) unless type is manual",
		}},
		{name: "null counts as absent", yaml: "name: a\ncluster: b\n" + okContainers + "schedule:\n  expression: rate(1 hour)\nalerts:\ncpu: ~\n"},
		{name: "duplicate and non-string keys", yaml: "name: a\nname: b\n? [x]\n: 1\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour)}\n", want: []string{
			"s.yml:2:1: name: duplicate field",
			"s.yml:3:3: keys must be strings, got a list",
		}},
		{name: "aliases are followed", yaml: "name: a\ncluster: &c b\ncontainers: [{name: *c, image: busybox, memory: 128}]\nschedule: {expression: rate(1 hour)}\n"},
		{name: "name too long", yaml: "name: " + strings.Repeat("a", 65) + "\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour)}\n", want: []string{
			`s.yml:1:7: name: "` + strings.Repeat("a", 65) + `" is 65 characters long, at most 64 are allowed`,
		}},
		{name: "no containers", yaml: "name: a\ncluster: b\ncontainers: []\nschedule: {expression: rate(1 hour)}\n", want: []string{
			"s.yml:3:13: containers: at least one container is required",
		}},
		{name: "containers is a mapping", yaml: "name: a\ncluster: b\ncontainers: {app: {}}\nschedule: {expression: rate(1 hour)}\n", want: []string{
			"s.yml:3:13: containers: must be a list, got a mapping",
		}},
		{name: "container memory needed unless task memory", yaml: "name: a\ncluster: b\ncontainers:\n  - {name: app, image: x}\n  - {name: side, image: y, memoryReservation: 64}\nschedule: {expression: rate(1 hour)}\n", want: []string{
			"s.yml:4:5: containers[0].memory: required (set memory or memoryReservation, or the task-level memory)",
		}},
		{name: "task memory covers containers", yaml: "name: a\ncluster: b\nmemory: 512\ncontainers: [{name: app, image: x}]\nschedule: {expression: rate(1 hour)}\n"},
		{name: "container fields", yaml: "name: a\ncluster: b\ncontainers:\n  - name: app\n    image: [x]\n    cpu: -1\n    command: /bin/sh -c x\n    entryPoint: [sh, 1]\n    environment: [A=b]\n    secrets: {A: arn:x, B: \"\"}\n    environment2: {}\n    essential: \"no\"\n    memory: 1.5\nschedule: {expression: rate(1 hour)}\n", want: []string{
			"s.yml:5:12: containers[0].image: must be a string, got a list",
			"s.yml:6:10: containers[0].cpu: -1 must be at least 0",
			"s.yml:7:14: containers[0].command: must be a list of strings, got a string",
			"s.yml:8:22: containers[0].entryPoint[1]: must be a string, got an integer (quote it: \"1\")",
			"s.yml:9:18: containers[0].environment: must be a mapping of strings, got a list",
			"s.yml:10:28: containers[0].secrets.B: must name an SSM parameter or Secrets Manager secret",
			"s.yml:11:5: containers[0].environment2: unknown field",
			"s.yml:12:16: containers[0].essential: must be true or false, got a string",
			"s.yml:13:13: containers[0].memory: must be an integer, got a number",
		}},
		{name: "secret shadows environment", yaml: "name: a\ncluster: b\ncontainers: [{name: app, image: x, memory: 1, environment: {A: x}, secrets: {A: arn:y}}]\nschedule: {expression: rate(1 hour)}\n", want: []string{
			"s.yml:3:78: containers[0].secrets.A: also set in environment",
		}},
		{name: "scheduled without expression", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {timezone: UTC}\n", want: []string{
			"s.yml:4:11: schedule.expression: required unless type is manual",
		}},
		{name: "manual with expression", yaml: "name: a\ncluster: b\ntype: manual\n" + okContainers + "schedule: {expression: rate(1 hour), taskCount: 3}\n", want: []string{
			"s.yml:5:24: schedule.expression: not allowed for type manual (manual schedules only fire through `taskyard run`)",
		}},
		{name: "timezone Local refused", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour), timezone: Local}\n", want: []string{
			`s.yml:4:48: schedule.timezone: "Local" is not an IANA time zone name`,
		}},
		{name: "at in a DST gap", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {expression: at(2026-03-29T01:30:00), timezone: Europe/London}\n", want: []string{
			"s.yml:4:24: schedule.expression: at expression: 2026-03-29T01:30:00 does not exist in Europe/London (skipped by a daylight saving change)",
		}},
		{name: "catchUp mapping needs mode", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour), catchUp: {max: 0}}\n", want: []string{
			"s.yml:4:47: schedule.catchUp.mode: required",
			"s.yml:4:53: schedule.catchUp.max: 0 out of range 1-1000",
		}},
		{name: "catchUp list", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour), catchUp: [all]}\n", want: []string{
			"s.yml:4:47: schedule.catchUp: must be a mapping, got a list",
		}},
		{name: "catchUp bad mode", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour), catchUp: some}\n", want: []string{
			`s.yml:4:47: schedule.catchUp: "some" is not one of none, latest, all`,
		}},
		{name: "taskCount too high and deadline zero", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour), taskCount: 1001, startingDeadline: 0s}\n", want: []string{
			"s.yml:4:49: schedule.taskCount: 1001 out of range 1-1000",
			`s.yml:4:73: schedule.startingDeadline: "0s" must be positive`,
		}},
		{name: "expectations and alerts types", yaml: "name: a\ncluster: b\n" + okContainers + "schedule: {expression: rate(1 hour)}\nalerts: {channel: 5, runbook: \"ftp://x/y\"}\nexpectations: {logs: 1}\n", want: []string{
			"s.yml:5:19: alerts.channel: must be a string, got an integer (quote it: \"5\")",
			`s.yml:5:31: alerts.runbook: "ftp://x/y" is not an http(s) URL`,
			"s.yml:6:22: expectations.logs: must be true or false, got an integer",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := ParseSchedule("s.yml", []byte(tt.yaml))
			if len(tt.want) == 0 {
				require.NoError(t, err)
				require.NotNil(t, s)
				return
			}
			require.Nil(t, s)
			var probs Problems
			require.ErrorAs(t, err, &probs)
			var got []string
			for _, p := range probs {
				got = append(got, p.String())
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseCatchUp(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]CatchUp{
		"none":                {Mode: CatchUpNone},
		"latest":              {Mode: CatchUpLatest, Max: 1},
		"all":                 {Mode: CatchUpAll, Max: DefaultCatchUpMax},
		"{mode: all, max: 3}": {Mode: CatchUpAll, Max: 3},
		"{mode: none}":        {Mode: CatchUpNone},
	} {
		s, err := ParseSchedule("s.yml", []byte("name: a\ncluster: b\n"+okContainers+"schedule: {expression: rate(1 hour), catchUp: "+in+"}\n"))
		require.NoError(t, err, in)
		require.Equal(t, want, s.Timing.CatchUp, in)
	}
}

func TestParseProfileProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{name: "minimal fargate", yaml: "name: p\ncluster: c\nlaunchType: FARGATE\nnetwork: {subnets: [subnet-1]}\n"},
		{name: "external with bridge", yaml: "name: p\ncluster: c\nlaunchType: EXTERNAL\nnetworkMode: bridge\n"},
		{name: "missing everything", yaml: "{}\n", want: []string{
			"p.yml:1:1: name: required",
			"p.yml:1:1: cluster: required (ECS cluster name or ARN)",
			"p.yml:1:1: launchType: required: set launchType or capacityProviderStrategy",
		}},
		{name: "bad launch type", yaml: "name: p\ncluster: c\nlaunchType: fargate\n", want: []string{
			`p.yml:3:13: launchType: "fargate" is not one of FARGATE, EC2, EXTERNAL`,
		}},
		{name: "fargate needs subnets", yaml: "name: p\ncluster: c\nlaunchType: FARGATE\nnetwork: {securityGroups: [sg-1]}\n", want: []string{
			"p.yml:4:10: network.subnets: required for networkMode awsvpc",
		}},
		{name: "network without awsvpc", yaml: "name: p\ncluster: c\nlaunchType: EC2\nnetworkMode: host\nnetwork: {subnets: [subnet-1]}\n", want: []string{
			"p.yml:5:10: network: only applies to networkMode awsvpc",
		}},
		{name: "zero weights", yaml: "name: p\ncluster: c\ncapacityProviderStrategy: [{capacityProvider: a, weight: 0}]\nnetworkMode: bridge\n", want: []string{
			"p.yml:3:27: capacityProviderStrategy: at least one capacity provider needs a weight above 0",
		}},
		{name: "log routing", yaml: "name: p\ncluster: c\nlaunchType: EC2\nnetworkMode: bridge\nlogRouting: {host: \"-bad\", image: \"\", extra: 1}\n", want: []string{
			`p.yml:5:20: logRouting.host: "-bad" is not a host name or IP address`,
			"p.yml:5:35: logRouting.image: must not be empty",
			"p.yml:5:39: logRouting.extra: unknown field",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := ParseProfile("p.yml", []byte(tt.yaml))
			if len(tt.want) == 0 {
				require.NoError(t, err)
				require.NotNil(t, p)
				return
			}
			var probs Problems
			require.ErrorAs(t, err, &probs)
			var got []string
			for _, pr := range probs {
				got = append(got, pr.String())
			}
			require.Equal(t, tt.want, got)
		})
	}
}
