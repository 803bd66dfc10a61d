package schedule

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestLoadPathsGolden loads whole testdata trees and compares every problem
// with the golden file; run with -update after reviewing a change.
func TestLoadPathsGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dir                 string
		schedules, profiles int
		filesWithProblems   []string
	}{
		{dir: "good", schedules: 3, profiles: 3},
		{dir: "broken", filesWithProblems: []string{"shape.yml", "typos.yml", "values.yml"}},
		{dir: "badprofiles", filesWithProblems: []string{"ec2.yml", "external.yml", "mixed.yml", "nolaunch.yml"}},
		// Cross-file problems do not drop the schedules: each file is fine on its own.
		{dir: "cross", schedules: 4, profiles: 3, filesWithProblems: []string{"big.yml", "dup.yml", "other.yml", "sized.yml"}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			t.Parallel()
			schedules, profiles, err := LoadPaths(filepath.Join("testdata", tt.dir))
			require.Len(t, schedules, tt.schedules)
			require.Len(t, profiles, tt.profiles)
			got := ""
			if err != nil {
				var probs Problems
				require.True(t, errors.As(err, &probs))
				files := map[string]bool{}
				for _, p := range probs {
					files[filepath.Base(p.File)] = true
				}
				var names []string
				for f := range files {
					names = append(names, f)
				}
				require.ElementsMatch(t, tt.filesWithProblems, names, "every broken file is reported")
				got = err.Error() + "\n"
			} else {
				require.Empty(t, tt.filesWithProblems)
			}
			golden := filepath.Join("testdata", tt.dir+".golden")
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			require.Equal(t, string(want), got)
		})
	}
}

// TestBrokenReportsEverything pins the problems of the broken schedules the
// CLI tests rely on, one assertion per problem, so the golden file cannot
// silently lose any.
func TestBrokenReportsEverything(t *testing.T) {
	t.Parallel()
	_, _, err := LoadPaths("testdata/broken")
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{
		`testdata/broken/shape.yml:1:1: name: required`,
		`testdata/broken/shape.yml:2:6: cpu: the containers' CPU units add up to 512, more than the task's 256`,
		`testdata/broken/shape.yml:9:5: containers[1]: must be a mapping, got a string`,
		`testdata/broken/shape.yml:10:5: containers[2].name: required`,
		`testdata/broken/shape.yml:11:11: schedule: must be a mapping, got a string`,
		`testdata/broken/shape.yml:13:3: alerts: must be a mapping, got a list`,
		`testdata/broken/typos.yml:3:7: type: "cron" is not one of scheduled, manual`,
		`testdata/broken/typos.yml:7:10: containers[0].cpu: must be an integer, got a string`,
		`testdata/broken/typos.yml:9:5: containers[0].enviroment: unknown field`,
		`testdata/broken/typos.yml:10:11: containers[1].name: duplicate container name "app" (also containers[0])`,
		`testdata/broken/typos.yml:13:25: containers[1].environment.PORT: must be a string, got an integer (quote it: "8080")`,
		`testdata/broken/typos.yml:15:15: schedule.expression: cron expression "0 3 * * MON-FRI *": exactly one of day-of-month and day-of-week must be "?"`,
		`testdata/broken/typos.yml:16:3: schedule.timeZone: unknown field (did you mean "timezone"?)`,
		`testdata/broken/values.yml:11:15: schedule.expression: cron day-of-week: "8" out of range 1-7`,
		`testdata/broken/values.yml:12:13: schedule.timezone: unknown time zone "Asia/Tokio" (want an IANA name such as Asia/Tokyo or UTC)`,
		`testdata/broken/values.yml:21:18: expectations.succeedWithin: must be a duration such as "5m" or "26h", got an integer`,
		`testdata/broken/values.yml:23:3: expectations.extra: unknown field`,
	} {
		require.Contains(t, lines, want)
	}
	require.Len(t, lines, 33)
}

func TestLoadPathsInputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	const sched = "name: %s\ncluster: batch\ncontainers: [{name: app, image: busybox, memory: 128}]\nschedule: {expression: rate(1 hour)}\n"
	a := write("team/a.yml", strings.ReplaceAll(sched, "%s", "a"))
	write("team/b.YAML.txt", "not: loaded")                                       // wrong extension inside a directory
	write("team/.hidden/c.yml", "broken: [")                                      // hidden directories are skipped
	write("team/.d.yml", "broken: [")                                             // hidden files too
	explicit := write("team/explicit.conf", strings.ReplaceAll(sched, "%s", "e")) // named explicitly: any extension
	write("clusters/batch.yml", "name: batch\ncluster: batch\nlaunchType: EC2\nnetworkMode: bridge\n")

	schedules, profiles, err := LoadPaths(dir, a, explicit, filepath.Join(dir, "missing.yml"))
	require.EqualError(t, err, filepath.Join(dir, "missing.yml")+": no such file or directory")
	require.Len(t, profiles, 1)
	require.Equal(t, "batch", profiles[0].Name)
	var names []string
	for _, s := range schedules {
		names = append(names, s.Name)
	}
	require.Equal(t, []string{"a", "e"}, names, "a.yml is loaded once although named twice")

	// Without profiles, the cluster reference is not checked.
	schedules, profiles, err = LoadPaths(a)
	require.NoError(t, err)
	require.Len(t, schedules, 1)
	require.Empty(t, profiles)
}

func TestIsProfilePath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"clusters/batch.yml":             true,
		"deploy/clusters/batch.yaml":     true,
		"/abs/clusters/x.yml":            true,
		"clusters/prod/batch.yml":        false, // only the parent directory counts
		"schedules/clusters.yml":         false,
		"clusters-old/batch.yml":         false,
		"batch.yml":                      false,
		"deploy/clusters/../sched/x.yml": false,
	} {
		require.Equal(t, want, IsProfilePath(path), path)
	}
}

func TestLoadSingleFiles(t *testing.T) {
	t.Parallel()
	s, err := LoadSchedule("testdata/good/schedules/minimal.yaml")
	require.NoError(t, err)
	require.Equal(t, "cleanup", s.Name)
	p, err := LoadProfile("testdata/good/clusters/spot.yml")
	require.NoError(t, err)
	require.Equal(t, "spot", p.Name)

	_, err = LoadSchedule("testdata/nope.yml")
	require.EqualError(t, err, "testdata/nope.yml: no such file or directory")
	_, err = LoadProfile("testdata/nope.yml")
	require.EqualError(t, err, "testdata/nope.yml: no such file or directory")
	_, err = LoadSchedule("testdata/broken/values.yml")
	var probs Problems
	require.ErrorAs(t, err, &probs)
	require.Len(t, probs, 13)
}

func TestGoodFiles(t *testing.T) {
	t.Parallel()
	tokyo := mustLoc(t, "Asia/Tokyo")
	s, err := LoadSchedule("testdata/good/schedules/nightly-report.yml")
	require.NoError(t, err)
	expr := s.Timing.Expression
	s.Timing.Expression, s.pos = nil, nil
	require.Equal(t, &Schedule{
		File:    "testdata/good/schedules/nightly-report.yml",
		Name:    "nightly-report",
		Cluster: "batch",
		Type:    TypeScheduled,
		CPU:     512,
		Memory:  2048,
		Containers: []Container{{
			Name:              "app",
			Image:             "ghcr.io/acme/report:1.2",
			CPU:               256,
			Memory:            512,
			MemoryReservation: 256,
			Command:           []string{"/bin/report", "--all"},
			Environment:       map[string]string{"REPORT_FORMAT": "pdf", "LOG_LEVEL": "info"},
			Secrets:           map[string]string{"DB_PASSWORD": "arn:aws:ssm:ap-northeast-1:123456789012:parameter/report/db"},
			Essential:         true,
		}, {
			Name:              "sidecar",
			Image:             "ghcr.io/acme/proxy:3",
			MemoryReservation: 128,
			Essential:         false,
		}},
		Timing: Timing{
			Timezone:         "Asia/Tokyo",
			Location:         tokyo,
			TaskCount:        2,
			Concurrency:      ConcurrencyReplace,
			StartingDeadline: 10 * time.Minute,
			CatchUp:          CatchUp{Mode: CatchUpAll, Max: 5},
			Timeout:          30 * time.Minute,
			Enabled:          false,
		},
		Alerts:       Alerts{Runbook: "https://wiki.example.com/runbooks/nightly-report", Severity: SeverityWarning, Channel: "#batch-alerts"},
		Expectations: Expectations{SucceedWithin: 26 * time.Hour, Logs: true},
	}, s)
	require.Equal(t, "cron(0 3 ? * MON-FRI *)", expr.String())
	require.Equal(t, "2026-11-23T03:00:00+09:00", expr.Next(ts(t, "2026-11-21T00:00:00Z")).Format(time.RFC3339))
	require.Equal(t, 256, s.CPUSum())
	require.Equal(t, 640, s.MemorySum())

	m, err := LoadSchedule("testdata/good/schedules/minimal.yaml")
	require.NoError(t, err)
	require.Equal(t, TypeScheduled, m.Type)
	require.Equal(t, "UTC", m.Timing.Timezone)
	require.Equal(t, time.UTC, m.Timing.Location)
	require.Equal(t, 1, m.Timing.TaskCount)
	require.Equal(t, ConcurrencyForbid, m.Timing.Concurrency)
	require.Equal(t, 5*time.Minute, m.Timing.StartingDeadline)
	require.Equal(t, CatchUp{Mode: CatchUpLatest, Max: 1}, m.Timing.CatchUp)
	require.Zero(t, m.Timing.Timeout)
	require.True(t, m.Timing.Enabled)
	require.True(t, m.Containers[0].Essential)
	require.Equal(t, SeverityCritical, m.Alerts.Severity)
	require.Equal(t, "rate(5 minutes)", m.Timing.Expression.String())
	require.Equal(t, ts(t, "2026-01-01T00:05:00Z"), m.Timing.Expression.Next(ts(t, "2026-01-01T00:00:00Z")), "rate anchored at the epoch")

	manual, err := LoadSchedule("testdata/good/schedules/manual.yml")
	require.NoError(t, err)
	require.Equal(t, TypeManual, manual.Type)
	require.Nil(t, manual.Timing.Expression)

	batch, err := LoadProfile("testdata/good/clusters/batch.yml")
	require.NoError(t, err)
	batch.pos = nil
	require.Equal(t, &Profile{
		File:             "testdata/good/clusters/batch.yml",
		Name:             "batch",
		Cluster:          "arn:aws:ecs:ap-northeast-1:123456789012:cluster/batch",
		LaunchType:       LaunchTypeFargate,
		PlatformVersion:  "LATEST",
		Network:          Network{Subnets: []string{"subnet-0a1b2c", "subnet-0d4e5f"}, SecurityGroups: []string{"sg-0123abcd"}},
		NetworkMode:      NetworkModeAWSVPC,
		ExecutionRoleARN: "arn:aws:iam::123456789012:role/taskyard-execution",
		TaskRoleARN:      "arn:aws:iam::123456789012:role/report-task",
		TaskLimit:        100,
		Tags:             map[string]string{"team": "sre", "cost-center": "42"},
		LogRouting:       &LogRouting{Host: "logrouter.taskyard.local", Port: 24224, Image: DefaultLogRouterImage},
	}, batch)
	require.True(t, batch.IsFargate())

	spot, err := LoadProfile("testdata/good/clusters/spot.yml")
	require.NoError(t, err)
	require.Equal(t, []CapacityProvider{{CapacityProvider: "FARGATE_SPOT", Weight: 3}, {CapacityProvider: "FARGATE", Weight: 1, Base: 1}}, spot.CapacityProviderStrategy)
	require.True(t, spot.IsFargate())
	require.Empty(t, spot.LaunchType)

	gpu, err := LoadProfile("testdata/good/clusters/ec2.yml")
	require.NoError(t, err)
	require.False(t, gpu.IsFargate())
	require.Equal(t, NetworkModeBridge, gpu.NetworkMode)
	require.Nil(t, gpu.LogRouting)
}

func TestTaskSizeAndValidateWith(t *testing.T) {
	t.Parallel()
	fargate := &Profile{Name: "batch", LaunchType: LaunchTypeFargate}
	spot := &Profile{Name: "batch", CapacityProviderStrategy: []CapacityProvider{{CapacityProvider: "FARGATE_SPOT", Weight: 1}}}
	ec2 := &Profile{Name: "batch", LaunchType: LaunchTypeEC2}
	asg := &Profile{Name: "batch", CapacityProviderStrategy: []CapacityProvider{{CapacityProvider: "my-asg", Weight: 1}}}
	withRole := &Profile{Name: "batch", LaunchType: LaunchTypeFargate, ExecutionRoleARN: "arn:aws:iam::123456789012:role/x"}
	tests := []struct {
		name     string
		yaml     string
		profile  *Profile
		cpu, mem int
		problems string
	}{
		{name: "derived from containers", profile: fargate, cpu: 512, mem: 3072,
			yaml: "containers: [{name: a, image: x, cpu: 128, memory: 2000}, {name: b, image: x, cpu: 128, memoryReservation: 1000}]"},
		{name: "FARGATE_SPOT sizes too", profile: spot, cpu: 8192, mem: 40960,
			yaml: "containers: [{name: a, image: x, cpu: 4096, memory: 40000}]"},
		{name: "explicit valid", profile: fargate, cpu: 1024, mem: 2048,
			yaml: "cpu: 1024\nmemory: 2048\ncontainers: [{name: a, image: x, memory: 512}]"},
		{name: "explicit cpu only", profile: fargate, cpu: 2048, mem: 4096,
			yaml: "cpu: 2048\ncontainers: [{name: a, image: x, memory: 512}]"},
		{name: "explicit invalid", profile: fargate,
			yaml:     "cpu: 256\nmemory: 4096\ncontainers: [{name: a, image: x, memory: 512}]",
			problems: `t.yml:2:9: memory: cluster profile "batch" runs on Fargate: no valid Fargate task size: memory 4096 MiB is not valid with CPU 256 (512, 1024, 2048 MiB)`},
		{name: "too big", profile: fargate,
			yaml:     "containers: [{name: a, image: x, memory: 130000}]",
			problems: `t.yml:1:13: containers: cluster profile "batch" runs on Fargate: no valid Fargate task size: memory 130000 MiB exceeds the largest Fargate size 16384 CPU / 122880 MiB`},
		{name: "EC2 takes any size", profile: ec2, cpu: 0, mem: 0,
			yaml: "containers: [{name: a, image: x, memory: 130000}]"},
		{name: "ASG capacity provider takes any size", profile: asg, cpu: 3, mem: 7,
			yaml: "cpu: 3\nmemory: 7\ncontainers: [{name: a, image: x, memory: 7}]"},
		{name: "secrets need an execution role", profile: fargate, cpu: 256, mem: 512,
			yaml:     "containers: [{name: a, image: x, memory: 5, secrets: {A: arn:x}}]",
			problems: `t.yml:1:54: containers[0].secrets: cluster profile "batch" has no executionRoleArn, which ECS needs to fetch secrets`},
		{name: "secrets with an execution role", profile: withRole, cpu: 256, mem: 512,
			yaml: "containers: [{name: a, image: x, memory: 5, secrets: {A: arn:x}}]"},
		{name: "wrong profile", profile: &Profile{Name: "other", LaunchType: LaunchTypeEC2},
			yaml:     "containers: [{name: a, image: x, memory: 5}]",
			problems: `t.yml:2:10: cluster: is "batch" but was checked against cluster profile "other"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := tt.yaml + "\nname: s\ncluster: batch\ntype: manual\n"
			if strings.HasPrefix(tt.name, "wrong") {
				src = "name: s\ncluster: batch\ntype: manual\n" + tt.yaml + "\n"
			}
			s, err := ParseSchedule("t.yml", []byte(src))
			require.NoError(t, err)
			err = s.ValidateWith(tt.profile)
			if tt.problems != "" {
				require.EqualError(t, err, tt.problems)
				return
			}
			require.NoError(t, err)
			cpu, mem, err := s.TaskSize(tt.profile)
			require.NoError(t, err)
			require.Equal(t, [2]int{tt.cpu, tt.mem}, [2]int{cpu, mem})
		})
	}
}
