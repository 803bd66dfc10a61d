package app_test

import (
	"encoding/json"
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

	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

// ecsServer answers the ECS JSON 1.1 calls of one dispatch and records
// them.
type ecsServer struct {
	mu      sync.Mutex
	ops     []string
	bodies  []map[string]any
	running int
}

func (s *ecsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "AmazonEC2ContainerServiceV20141113.")
	if !ok || !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		http.Error(w, "not a signed ECS request", http.StatusBadRequest)
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops = append(s.ops, op)
	s.bodies = append(s.bodies, body)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	switch op {
	case "DescribeTaskDefinition":
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"__type":"ClientException","message":"Unable to describe task definition."}`)
	case "RegisterTaskDefinition":
		_, _ = fmt.Fprintf(w, `{"taskDefinition":{"taskDefinitionArn":"arn:aws:ecs:us-east-1:123456789012:task-definition/%s:1","status":"ACTIVE"}}`, body["family"])
	case "DescribeClusters":
		_, _ = fmt.Fprintf(w, `{"clusters":[{"clusterName":"prod-batch","runningTasksCount":%d,"pendingTasksCount":0}],"failures":[]}`, s.running)
	case "RunTask":
		_, _ = fmt.Fprintf(w, `{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:123456789012:task/prod-batch/%032x","group":%q}],"failures":[]}`, len(s.ops), body["group"])
	case "ListTasks":
		_, _ = io.WriteString(w, `{"taskArns":[]}`)
	default:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"__type":"InvalidParameterException","message":"unexpected"}`)
	}
}

func (s *ecsServer) count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, o := range s.ops {
		if o == op {
			n++
		}
	}
	return n
}

// TestECSRunnerThroughDaemon runs app.Run with --runner ecs against an ECS
// JSON 1.1 endpoint: a fire registers the task definition, passes the
// cluster task-limit guard (DescribeClusters) and calls RunTask; a full
// cluster makes the next fire a RunSkipped(cluster_quota).
func TestECSRunnerThroughDaemon(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	fake := &ecsServer{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	dir := filepath.Join(t.TempDir(), "clusters")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prod.yml"), []byte(`name: prod
cluster: prod-batch
launchType: FARGATE
network:
  subnets: [subnet-0a1]
  securityGroups: [sg-0c3]
executionRoleArn: arn:aws:iam::123456789012:role/exec
taskLimit: 5
`), 0o644))

	nc, url := startNATS(t)
	cfg := baseConfig(url)
	cfg.Runner = app.RunnerECS
	cfg.ClustersDir = dir
	cfg.ECS.Region = "us-east-1"
	cfg.ECS.Endpoint = srv.URL
	cfg.ECS.RunTaskRate, cfg.ECS.RunTaskBurst = 20, 20
	start(t, cfg, app.Deps{})
	ev := collect(t, nc)

	spec := execSpec("ecs-job", "rate(2 seconds)", "true")
	spec.Cluster = "prod"
	spec.Containers[0].Image = "busybox:1.36"
	spec.Containers[0].Memory = 512
	var ar v1.ApplyReply
	request(t, nc, "create", &v1.ApplyRequest{Schedules: []*v1.ScheduleSpec{spec}}, &ar)
	require.Empty(t, ar.Error)

	require.Eventually(t, func() bool { return len(all[*v1.RunDispatched](ev)) > 0 }, 15*time.Second, 20*time.Millisecond)
	d := all[*v1.RunDispatched](ev)[0]
	require.Equal(t, "ecs", d.Runner)
	require.Equal(t, "arn:aws:ecs:us-east-1:123456789012:task-definition/taskyard-job-ecs-job:1", d.TaskDefinition)
	require.Len(t, d.TaskIds, 1)
	require.Equal(t, 1, fake.count("RegisterTaskDefinition"))
	require.GreaterOrEqual(t, fake.count("DescribeClusters"), 1)
	fake.mu.Lock()
	for i, op := range fake.ops {
		if op == "RunTask" {
			require.Equal(t, d.RunId, fake.bodies[i]["clientToken"])
			require.Equal(t, "FARGATE", fake.bodies[i]["launchType"])
		}
	}
	// The cluster fills up: the next fires are skipped.
	fake.running = 5
	fake.mu.Unlock()
	require.Eventually(t, func() bool {
		for _, s := range all[*v1.RunSkipped](ev) {
			if s.Reason == v1.SkipReason_SKIP_REASON_CLUSTER_QUOTA {
				return true
			}
		}
		return false
	}, 15*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, fake.count("RegisterTaskDefinition"), "the revision is reused")
}
