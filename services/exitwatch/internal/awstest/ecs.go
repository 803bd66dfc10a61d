package awstest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ECSTask is a task the ECS server knows, in the DescribeTasks shape.
type ECSTask struct {
	Arn, Cluster, LastStatus, DesiredStatus string
	StartedBy, Group, TaskDefinitionArn     string
	StopCode, StoppedReason                 string
	CreatedAt, StartedAt, StoppedAt         time.Time
	Version                                 int64
	Containers                              []ECSContainer
	Tags                                    map[string]string
	Env                                     map[string]string
}

// ECSContainer is one container of an ECSTask.
type ECSContainer struct {
	Name, LastStatus, Reason string
	ExitCode                 *int32
}

// ECS is an ECS control plane behind the JSON 1.1 protocol: ListTasks,
// DescribeTasks and StopTask.
type ECS struct {
	*httptest.Server
	mu       sync.Mutex
	tasks    map[string]*ECSTask
	Requests map[string]int
	Problems []string
	// Stopped records StopTask calls: task arn -> reason.
	Stopped map[string]string
}

// NewECS starts the server.
func NewECS() *ECS {
	e := &ECS{tasks: map[string]*ECSTask{}, Requests: map[string]int{}, Stopped: map[string]string{}}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	return e
}

// Put adds or replaces a task.
func (e *ECS) Put(t ECSTask) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tasks[t.Arn] = &t
}

func epoch(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return float64(t.UnixMilli()) / 1000
}

func ecsError(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

func (e *ECS) serve(w http.ResponseWriter, r *http.Request) {
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "AmazonEC2ContainerServiceV20141113.")
	e.mu.Lock()
	e.Requests[op]++
	if r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		e.Problems = append(e.Problems, op+": content type "+r.Header.Get("Content-Type"))
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		e.Problems = append(e.Problems, op+": not signed")
	}
	e.mu.Unlock()
	if !ok {
		ecsError(w, "InvalidAction", "unknown target")
		return
	}
	body, _ := io.ReadAll(r.Body)
	var in struct {
		Cluster       string   `json:"cluster"`
		DesiredStatus string   `json:"desiredStatus"`
		MaxResults    int      `json:"maxResults"`
		NextToken     string   `json:"nextToken"`
		Tasks         []string `json:"tasks"`
		Include       []string `json:"include"`
		Task          string   `json:"task"`
		Reason        string   `json:"reason"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		ecsError(w, "InvalidParameterException", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	e.mu.Lock()
	defer e.mu.Unlock()
	switch op {
	case "ListTasks":
		if in.MaxResults > 100 {
			ecsError(w, "InvalidParameterException", "maxResults must be <= 100")
			return
		}
		var arns []string
		for _, t := range e.tasks {
			if t.Cluster == in.Cluster && (in.DesiredStatus == "" || t.DesiredStatus == in.DesiredStatus) {
				arns = append(arns, t.Arn)
			}
		}
		sort.Strings(arns)
		start, _ := strconv.Atoi(in.NextToken)
		n := in.MaxResults
		if n == 0 {
			n = 100
		}
		end := min(start+n, len(arns))
		out := map[string]any{"taskArns": arns[start:end]}
		if end < len(arns) {
			out["nextToken"] = strconv.Itoa(end)
		}
		_ = json.NewEncoder(w).Encode(out)
	case "DescribeTasks":
		if len(in.Tasks) > 100 {
			ecsError(w, "InvalidParameterException", "at most 100 tasks")
			return
		}
		var tasks []map[string]any
		var failures []map[string]string
		for _, arn := range in.Tasks {
			t, ok := e.tasks[arn]
			if !ok || t.Cluster != in.Cluster {
				failures = append(failures, map[string]string{"arn": arn, "reason": "MISSING"})
				continue
			}
			var cs []map[string]any
			for _, c := range t.Containers {
				m := map[string]any{"name": c.Name, "lastStatus": c.LastStatus, "taskArn": t.Arn}
				if c.ExitCode != nil {
					m["exitCode"] = *c.ExitCode
				}
				if c.Reason != "" {
					m["reason"] = c.Reason
				}
				cs = append(cs, m)
			}
			m := map[string]any{"taskArn": t.Arn, "clusterArn": "arn:aws:ecs:eu-west-1:123456789012:cluster/" + t.Cluster, "lastStatus": t.LastStatus,
				"desiredStatus": t.DesiredStatus, "startedBy": t.StartedBy, "group": t.Group, "taskDefinitionArn": t.TaskDefinitionArn,
				"version": t.Version, "containers": cs, "launchType": "FARGATE", "createdAt": epoch(t.CreatedAt), "startedAt": epoch(t.StartedAt), "stoppedAt": epoch(t.StoppedAt)}
			if t.StopCode != "" {
				m["stopCode"], m["stoppedReason"] = t.StopCode, t.StoppedReason
			}
			for k, v := range m {
				if v == nil || v == "" {
					delete(m, k)
				}
			}
			if len(t.Env) > 0 {
				var env []map[string]string
				for k, v := range t.Env {
					env = append(env, map[string]string{"name": k, "value": v})
				}
				m["overrides"] = map[string]any{"containerOverrides": []map[string]any{{"name": t.Containers[0].Name, "environment": env}}}
			}
			if len(in.Include) > 0 && in.Include[0] == "TAGS" {
				var tags []map[string]string
				for k, v := range t.Tags {
					tags = append(tags, map[string]string{"key": k, "value": v})
				}
				m["tags"] = tags
			}
			tasks = append(tasks, m)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"tasks": tasks, "failures": failures})
	case "StopTask":
		t, ok := e.tasks[in.Task]
		if !ok {
			ecsError(w, "InvalidParameterException", "The referenced task was not found.")
			return
		}
		e.Stopped[in.Task] = in.Reason
		t.DesiredStatus = "STOPPED"
		_ = json.NewEncoder(w).Encode(map[string]any{"task": map[string]any{"taskArn": t.Arn, "desiredStatus": "STOPPED", "lastStatus": t.LastStatus}})
	default:
		ecsError(w, "InvalidAction", op+" is not supported by this test server")
	}
}
