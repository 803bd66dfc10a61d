package ecsrunner

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/runner"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const targetPrefix = "AmazonEC2ContainerServiceV20141113."

type ecsCall struct {
	op   string
	body map[string]any
	raw  []byte
}

// fakeECS speaks the ECS JSON 1.1 protocol for the calls the runner makes,
// keeping task definition revisions and honouring clientToken idempotency.
type fakeECS struct {
	t        *testing.T
	mu       sync.Mutex
	calls    []ecsCall
	revs     map[string][]map[string]any // family -> registered bodies
	tokens   map[string][]any            // clientToken -> tasks
	throttle int                         // RunTask calls to throttle first
	failures []map[string]any            // failures[] returned by RunTask
	running  int
	seq      int
}

func newFakeECS(t *testing.T) (*fakeECS, *ecs.Client) {
	f := &fakeECS{t: t, revs: map[string][]map[string]any{}, tokens: map[string][]any{}}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	client := ecs.New(ecs.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(srv.URL),
		Credentials:      aws.NewCredentialsCache(staticCreds{}),
		RetryMaxAttempts: 1, // the runner's own backoff is under test
	})
	return f, client
}

type staticCreds struct{}

func (staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "secret", Source: "test"}, nil
}

func (f *fakeECS) serve(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	if r.Method != http.MethodPost || !strings.HasPrefix(target, targetPrefix) ||
		r.Header.Get("Content-Type") != "application/x-amz-json-1.1" || !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		http.Error(w, "not an ECS JSON 1.1 request", http.StatusBadRequest)
		return
	}
	op := strings.TrimPrefix(target, targetPrefix)
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ecsCall{op: op, body: body, raw: raw})
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	fail := func(code, msg string) {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
	}
	reply := func(v any) { _ = json.NewEncoder(w).Encode(v) }
	switch op {
	case "DescribeTaskDefinition":
		family := body["taskDefinition"].(string)
		revs := f.revs[family]
		if len(revs) == 0 {
			fail("ClientException", "Unable to describe task definition.")
			return
		}
		reply(map[string]any{"taskDefinition": described(family, len(revs), revs[len(revs)-1])})
	case "RegisterTaskDefinition":
		family := body["family"].(string)
		f.revs[family] = append(f.revs[family], body)
		reply(map[string]any{"taskDefinition": described(family, len(f.revs[family]), body)})
	case "RunTask":
		if f.throttle > 0 {
			f.throttle--
			fail("ThrottlingException", "Rate exceeded")
			return
		}
		token, _ := body["clientToken"].(string)
		if tasks, ok := f.tokens[token]; ok {
			reply(map[string]any{"tasks": tasks, "failures": []any{}})
			return
		}
		if f.failures != nil {
			reply(map[string]any{"tasks": []any{}, "failures": f.failures})
			return
		}
		var tasks []any
		for i := 0; i < int(body["count"].(float64)); i++ {
			f.seq++
			tasks = append(tasks, map[string]any{
				"taskArn": fmt.Sprintf("arn:aws:ecs:us-east-1:123456789012:task/%s/%032x", body["cluster"], f.seq),
				"group":   body["group"], "startedBy": body["startedBy"], "lastStatus": "PROVISIONING",
			})
		}
		f.tokens[token] = tasks
		reply(map[string]any{"tasks": tasks, "failures": []any{}})
	case "DescribeClusters":
		reply(map[string]any{"clusters": []any{map[string]any{
			"clusterName": body["clusters"].([]any)[0], "runningTasksCount": f.running, "pendingTasksCount": 1,
		}}, "failures": []any{}})
	case "ListTasks":
		var arns []string
		for _, tasks := range f.tokens {
			for _, t := range tasks {
				if t.(map[string]any)["startedBy"] == body["startedBy"] {
					arns = append(arns, t.(map[string]any)["taskArn"].(string))
				}
			}
		}
		reply(map[string]any{"taskArns": arns})
	case "DescribeTasks":
		var out []any
		for _, tasks := range f.tokens {
			for _, t := range tasks {
				for _, want := range body["tasks"].([]any) {
					if t.(map[string]any)["taskArn"] == want {
						out = append(out, t)
					}
				}
			}
		}
		reply(map[string]any{"tasks": out, "failures": []any{}})
	case "StopTask":
		reply(map[string]any{"task": map[string]any{"taskArn": body["task"], "stoppedReason": body["reason"]}})
	default:
		fail("InvalidParameterException", "unsupported operation "+op)
	}
}

// described turns a RegisterTaskDefinition body into what
// DescribeTaskDefinition returns, with the defaults ECS fills in.
func described(family string, rev int, reg map[string]any) map[string]any {
	td := map[string]any{}
	for k, v := range reg {
		if k != "tags" {
			td[k] = v
		}
	}
	td["taskDefinitionArn"] = fmt.Sprintf("arn:aws:ecs:us-east-1:123456789012:task-definition/%s:%d", family, rev)
	td["revision"] = rev
	td["status"] = "ACTIVE"
	var cds []any
	for _, c := range reg["containerDefinitions"].([]any) {
		cd := map[string]any{"cpu": 0, "portMappings": []any{}, "mountPoints": []any{}, "volumesFrom": []any{}, "systemControls": []any{}}
		for k, v := range c.(map[string]any) {
			cd[k] = v
		}
		if _, ok := cd["environment"]; !ok {
			cd["environment"] = []any{}
		}
		cds = append(cds, cd)
	}
	td["containerDefinitions"] = cds
	return td
}

func (f *fakeECS) ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		out = append(out, c.op)
	}
	return out
}

func (f *fakeECS) callsOf(op string) []ecsCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ecsCall
	for _, c := range f.calls {
		if c.op == op {
			out = append(out, c)
		}
	}
	return out
}

func fargateProfile() *schedule.Profile {
	return &schedule.Profile{
		Name: "prod", Cluster: "prod-batch",
		CapacityProviderStrategy: []schedule.CapacityProvider{{CapacityProvider: "FARGATE_SPOT", Weight: 3}, {CapacityProvider: "FARGATE", Weight: 1, Base: 1}},
		PlatformVersion:          "1.4.0",
		NetworkMode:              schedule.NetworkModeAWSVPC,
		Network:                  schedule.Network{Subnets: []string{"subnet-0a1", "subnet-0b2"}, SecurityGroups: []string{"sg-0c3"}},
		ExecutionRoleARN:         "arn:aws:iam::123456789012:role/taskyard-exec",
		TaskRoleARN:              "arn:aws:iam::123456789012:role/report-task",
		TaskLimit:                100,
		Tags:                     map[string]string{"team": "data"},
		LogRouting:               &schedule.LogRouting{Host: "logrouter.taskyard.local", Port: 24224, Image: schedule.DefaultLogRouterImage},
	}
}

func reportSpec() *v1.ScheduleSpec {
	return &v1.ScheduleSpec{
		Name: "nightly-report", Cluster: "prod", Type: "scheduled",
		Containers: []*v1.Container{
			{Name: "app", Image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/report:1.4.2", Cpu: 512, Memory: 1536, Essential: true,
				Command: []string{"report", "--date", "yesterday"}, Environment: map[string]string{"LOG_LEVEL": "info", "REGION": "us-east-1"},
				Secrets: map[string]string{"DB_PASSWORD": "arn:aws:ssm:us-east-1:123456789012:parameter/report/db"}},
			{Name: "sidecar", Image: "busybox:1.36", MemoryReservation: 64, Essential: false, Command: []string{"sleep", "3600"}},
		},
		Timing: &v1.Timing{Expression: "cron(0 3 * * ? *)", Timezone: "Asia/Tokyo", TaskCount: 1, Concurrency: "forbid", Enabled: true,
			StartingDeadline: durationpb.New(10 * time.Minute), CatchUp: &v1.CatchUp{Mode: "latest", Max: 1}},
	}
}

func request(spec *v1.ScheduleSpec, p *schedule.Profile) runner.Request {
	at := time.Date(2026, 6, 1, 18, 0, 0, 0, time.UTC)
	return runner.Request{RunID: v1.RunID(spec.GetName(), at, v1.Trigger_TRIGGER_SCHEDULE), Spec: spec, Profile: p, ScheduledAt: at,
		Trigger: v1.Trigger_TRIGGER_SCHEDULE, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
}

func newRunner(client *ecs.Client) *Runner {
	return New(Config{Client: client, Log: logging.Discard(), InitialBackoff: time.Millisecond, MaxRetry: 10 * time.Second})
}

func golden(t *testing.T, name string, raw []byte) {
	t.Helper()
	// Re-encode: map keys sorted (the SDK writes maps in Go's random order).
	var v any
	require.NoError(t, json.Unmarshal(raw, &v))
	b, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	buf := bytes.NewBuffer(append(b, '\n'))
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), buf.String(), "request body differs from %s (go test -update rewrites it)", path)
}

func TestGoldenRequests(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	r := newRunner(client)
	res, err := r.Run(context.Background(), request(reportSpec(), fargateProfile()))
	require.NoError(t, err)
	require.Empty(t, res.Failures)
	require.Len(t, res.TaskIDs, 1)
	require.Equal(t, "arn:aws:ecs:us-east-1:123456789012:task-definition/taskyard-job-nightly-report:1", res.TaskDefinition)
	require.Equal(t, []string{"DescribeTaskDefinition", "RegisterTaskDefinition", "RunTask"}, f.ops())
	golden(t, "register_task_definition_fargate_firelens.json", f.callsOf("RegisterTaskDefinition")[0].raw)
	golden(t, "run_task_fargate.json", f.callsOf("RunTask")[0].raw)

	// Fargate sizing: 512 CPU units and 1536+64+50 MiB fit 0.5 vCPU / 2 GB.
	reg := f.callsOf("RegisterTaskDefinition")[0].body
	require.Equal(t, "512", reg["cpu"])
	require.Equal(t, "2048", reg["memory"])
}

func TestGoldenEC2WithoutLogRouting(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	p := &schedule.Profile{Name: "ec2", Cluster: "arn:aws:ecs:us-east-1:123456789012:cluster/ec2-batch", LaunchType: schedule.LaunchTypeEC2, NetworkMode: schedule.NetworkModeBridge}
	spec := reportSpec()
	spec.Cluster = "ec2"
	spec.Containers[0].Secrets = nil
	_, err := newRunner(client).Run(context.Background(), request(spec, p))
	require.NoError(t, err)
	golden(t, "register_task_definition_ec2.json", f.callsOf("RegisterTaskDefinition")[0].raw)
	golden(t, "run_task_ec2.json", f.callsOf("RunTask")[0].raw)
}

func TestRevisionReuse(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	p := fargateProfile()
	ctx := context.Background()
	_, err := newRunner(client).Run(ctx, request(reportSpec(), p))
	require.NoError(t, err)

	// A new runner (a restart, or the other replica) finds the same content
	// as the latest ACTIVE revision — with ECS's defaults filled in — and
	// reuses it.
	r := newRunner(client)
	res, err := r.Run(ctx, request(reportSpec(), p))
	require.NoError(t, err)
	require.Equal(t, "arn:aws:ecs:us-east-1:123456789012:task-definition/taskyard-job-nightly-report:1", res.TaskDefinition)
	require.Len(t, f.callsOf("RegisterTaskDefinition"), 1)
	// Cached: no describe either.
	n := len(f.callsOf("DescribeTaskDefinition"))
	_, err = r.Run(ctx, request(reportSpec(), p))
	require.NoError(t, err)
	require.Len(t, f.callsOf("DescribeTaskDefinition"), n)

	// A changed image registers revision 2.
	spec := reportSpec()
	spec.Containers[0].Image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/report:1.5.0"
	res, err = r.Run(ctx, request(spec, p))
	require.NoError(t, err)
	require.Equal(t, "arn:aws:ecs:us-east-1:123456789012:task-definition/taskyard-job-nightly-report:2", res.TaskDefinition)
	require.Len(t, f.callsOf("RegisterTaskDefinition"), 2)
}

func TestFailuresAreReported(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	f.failures = []map[string]any{{"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/prod-batch/abc", "reason": "RESOURCE:MEMORY"}}
	res, err := newRunner(client).Run(context.Background(), request(reportSpec(), fargateProfile()))
	require.NoError(t, err)
	require.Empty(t, res.TaskIDs)
	require.Len(t, res.Failures, 1)
	require.Equal(t, "RESOURCE:MEMORY", res.Failures[0].Reason)
	require.Equal(t, "arn:aws:ecs:us-east-1:123456789012:container-instance/prod-batch/abc", res.Failures[0].Arn)
}

func TestThrottlingIsRetried(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	f.throttle = 3
	res, err := newRunner(client).Run(context.Background(), request(reportSpec(), fargateProfile()))
	require.NoError(t, err)
	require.Len(t, res.TaskIDs, 1)
	runs := f.callsOf("RunTask")
	require.Len(t, runs, 4)
	for _, c := range runs {
		require.Equal(t, runs[0].body["clientToken"], c.body["clientToken"], "retries keep the clientToken")
	}

	// An invalid schedule is refused before any call.
	f2, client2 := newFakeECS(t)
	p := fargateProfile()
	spec := reportSpec()
	spec.Containers[0].Image = ""
	_, err = newRunner(client2).Run(context.Background(), request(spec, p))
	require.ErrorContains(t, err, "containers[0].image")
	require.Empty(t, f2.ops())
}

func TestCountSplitIntoCallsOfTen(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	spec := reportSpec()
	spec.Timing.TaskCount = 25
	req := request(spec, fargateProfile())
	res, err := newRunner(client).Run(context.Background(), req)
	require.NoError(t, err)
	require.Len(t, res.TaskIDs, 25)
	runs := f.callsOf("RunTask")
	require.Len(t, runs, 3)
	var counts []float64
	tokens := map[string]bool{}
	for _, c := range runs {
		counts = append(counts, c.body["count"].(float64))
		tok := c.body["clientToken"].(string)
		require.LessOrEqual(t, len(tok), 64)
		tokens[tok] = true
		require.Equal(t, "taskyard:"+req.RunID, c.body["group"])
	}
	require.Equal(t, []float64{10, 10, 5}, counts)
	require.Len(t, tokens, 3)
	require.True(t, tokens[req.RunID], "the first call's clientToken is the run id")
}

func TestActiveStopAndClusterLoad(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	r := newRunner(client)
	p := fargateProfile()
	ctx := context.Background()
	req := request(reportSpec(), p)
	res, err := r.Run(ctx, req)
	require.NoError(t, err)

	active, err := r.Active(ctx, req.Spec, p)
	require.NoError(t, err)
	require.Equal(t, []runner.Task{{ID: res.TaskIDs[0], RunID: req.RunID}}, active)
	lt := f.callsOf("ListTasks")[0].body
	require.Equal(t, "taskyard:nightly-report", lt["startedBy"])

	require.NoError(t, r.Stop(ctx, req.Spec, p, res.TaskIDs, "taskyard: replaced by run x"))
	st := f.callsOf("StopTask")[0].body
	require.Equal(t, res.TaskIDs[0], st["task"])
	require.Equal(t, "prod-batch", st["cluster"])
	require.Equal(t, "taskyard: replaced by run x", st["reason"])

	f.mu.Lock()
	f.running = 41
	f.mu.Unlock()
	n, err := r.ClusterLoad(ctx, p)
	require.NoError(t, err)
	require.Equal(t, 42, n, "running + pending")
}

func TestRenderMatchesWhatIsSent(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	req := request(reportSpec(), fargateProfile())
	_, err := newRunner(client).Run(context.Background(), req)
	require.NoError(t, err)
	out, err := Render(context.Background(), reportSpec(), fargateProfile(), req.ScheduledAt)
	require.NoError(t, err)
	require.JSONEq(t, string(f.callsOf("RegisterTaskDefinition")[0].raw), string(out.RegisterTaskDefinition))
	require.Len(t, out.RunTask, 1)
	var sent, rendered map[string]any
	require.NoError(t, json.Unmarshal(f.callsOf("RunTask")[0].raw, &sent))
	require.NoError(t, json.Unmarshal(out.RunTask[0], &rendered))
	// Render names the family; the runner the registered revision. And
	// render has no trace context.
	require.Equal(t, "taskyard-job-nightly-report", rendered["taskDefinition"])
	delete(sent, "taskDefinition")
	delete(rendered, "taskDefinition")
	delete(sent, "overrides")
	delete(rendered, "overrides")
	require.Equal(t, sent, rendered)
}

func TestRunTaskTokenBucket(t *testing.T) {
	t.Parallel()
	f, client := newFakeECS(t)
	// One token per hour, bucket of 2: two runs go through at once, the
	// third would have to wait an hour, which its context does not allow.
	r := New(Config{Client: client, Log: logging.Discard(), Rate: 1.0 / 3600, Burst: 2})
	p := fargateProfile()
	for i := 0; i < 2; i++ {
		req := request(reportSpec(), p)
		req.RunID = fmt.Sprintf("%s-%d", req.RunID[:40], i)
		_, err := r.Run(context.Background(), req)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := r.Run(ctx, request(reportSpec(), p))
	require.ErrorContains(t, err, "runtask rate limiter")
	require.Len(t, f.callsOf("RunTask"), 2)
}
