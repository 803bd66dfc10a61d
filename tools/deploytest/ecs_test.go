package deploytest

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/stretchr/testify/require"
)

// ecsCapture is an httptest server speaking enough of the ECS awsJson1_1
// protocol for RegisterTaskDefinition and CreateService: it records each
// request's X-Amz-Target and body and answers {}.
type ecsCapture struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []capturedCall
}

type capturedCall struct {
	Target, ContentType, Auth string
	Body                      []byte
}

func newECSCapture(t *testing.T) (*ecsCapture, *ecs.Client) {
	t.Helper()
	c := &ecsCapture{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.got = append(c.got, capturedCall{r.Header.Get("X-Amz-Target"), r.Header.Get("Content-Type"), r.Header.Get("Authorization"), body})
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(c.srv.Close)
	client := ecs.New(ecs.Options{
		Region:           testEnv["AWS_REGION"],
		BaseEndpoint:     aws.String(c.srv.URL),
		RetryMaxAttempts: 1,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret", Source: "test"}, nil
		}),
	})
	return c, client
}

func (c *ecsCapture) last(t *testing.T) capturedCall {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.NotEmpty(t, c.got)
	return c.got[len(c.got)-1]
}

// ecsFiles lists every task and service definition JSON under deploy/.
func ecsFiles(t *testing.T) (taskDefs, serviceDefs []string) {
	t.Helper()
	root := repoRoot(t)
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		switch {
		case strings.HasSuffix(rel, "task-definition.json"):
			taskDefs = append(taskDefs, rel)
		case strings.HasSuffix(rel, "service-definition.json"):
			serviceDefs = append(serviceDefs, rel)
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, taskDefs)
	require.NotEmpty(t, serviceDefs)
	return taskDefs, serviceDefs
}

// loadTaskDef renders, strictly decodes and round-trips one task
// definition through the real ECS client.
func loadTaskDef(t *testing.T, rel string) *ecs.RegisterTaskDefinitionInput {
	t.Helper()
	data := renderFile(t, rel)
	var in ecs.RegisterTaskDefinitionInput
	require.NoError(t, decodeStrict(rel, data, &in))
	return &in
}

func loadServiceDef(t *testing.T, rel string) *ecs.CreateServiceInput {
	t.Helper()
	data := renderFile(t, rel)
	var in ecs.CreateServiceInput
	require.NoError(t, decodeStrict(rel, data, &in))
	return &in
}

func TestDefinitionsRoundTripThroughSDK(t *testing.T) {
	t.Parallel()
	taskDefs, serviceDefs := ecsFiles(t)
	capture, client := newECSCapture(t)
	ctx := context.Background()
	for _, rel := range taskDefs {
		t.Run(rel, func(t *testing.T) {
			data := renderFile(t, rel)
			in := loadTaskDef(t, rel)
			_, err := client.RegisterTaskDefinition(ctx, in)
			require.NoError(t, err, "the SDK rejected %s", rel)
			call := capture.last(t)
			require.Equal(t, "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition", call.Target)
			require.Equal(t, "application/x-amz-json-1.1", call.ContentType)
			require.Contains(t, call.Auth, "AWS4-HMAC-SHA256")
			require.JSONEq(t, string(data), string(call.Body), "%s: the SDK serialized the decoded input differently (a key matched only case-insensitively, or a value was dropped)", rel)
		})
	}
	for _, rel := range serviceDefs {
		t.Run(rel, func(t *testing.T) {
			data := renderFile(t, rel)
			in := loadServiceDef(t, rel)
			_, err := client.CreateService(ctx, in)
			require.NoError(t, err, "the SDK rejected %s", rel)
			call := capture.last(t)
			require.Equal(t, "AmazonEC2ContainerServiceV20141113.CreateService", call.Target)
			require.JSONEq(t, string(data), string(call.Body), "%s: the SDK serialized the decoded input differently", rel)
		})
	}
}

func TestDecodeStrictRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, json, want string }{
		{"unknown field", `{"family":"x","containerDefinitions":[{"name":"a","readOnlyRootFS":true}]}`, "td.json:1: containerDefinitions[0].readOnlyRootFS: unknown field"},
		{"bad enum", "{\n\"family\":\"x\",\n\"networkMode\":\"bridged\"}", `td.json:3: networkMode: "bridged" is not a valid NetworkMode`},
		{"wrong type", `{"family":"x","containerDefinitions":[{"name":"a","memory":"512"}]}`, "containerDefinitions[0].memory: want a number"},
		{"duplicate", `{"family":"x","family":"y"}`, "family: duplicate key"},
		{"overflow", `{"family":"x","containerDefinitions":[{"name":"a","cpu":99999999999}]}`, "does not fit int32"},
		{"trailing", `{"family":"x"} {}`, "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var in ecs.RegisterTaskDefinitionInput
			err := decodeStrict("td.json", []byte(tc.json), &in)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestRoundTripCatchesCaseMismatch shows the SDK round trip is what pins
// the exact wire names: "ReadonlyRootFilesystem" decodes (case-insensitive)
// but is sent back as "readonlyRootFilesystem", so the documents differ.
func TestRoundTripCatchesCaseMismatch(t *testing.T) {
	t.Parallel()
	capture, client := newECSCapture(t)
	doc := `{"family":"x","containerDefinitions":[{"name":"a","image":"i","ReadonlyRootFilesystem":true}]}`
	var in ecs.RegisterTaskDefinitionInput
	require.NoError(t, decodeStrict("x.json", []byte(doc), &in))
	_, err := client.RegisterTaskDefinition(context.Background(), &in)
	require.NoError(t, err)
	var sent, orig map[string]any
	require.NoError(t, json.Unmarshal(capture.last(t).Body, &sent))
	require.NoError(t, json.Unmarshal([]byte(doc), &orig))
	require.NotEqual(t, orig, sent)
	require.Equal(t, true, sent["containerDefinitions"].([]any)[0].(map[string]any)["readonlyRootFilesystem"])
}

// secretLooking names environment variables whose values must come from
// secrets, never plain environment.
var secretLooking = []string{"KEY", "TOKEN", "SECRET", "PASSWORD", "CREDS", "WEBHOOK", "NATS_URL"}

func TestContainersAreLockedDown(t *testing.T) {
	t.Parallel()
	taskDefs, _ := ecsFiles(t)
	for _, rel := range taskDefs {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			td := loadTaskDef(t, rel)
			require.NotEmpty(t, td.ContainerDefinitions)
			require.NotNil(t, td.ExecutionRoleArn, "execution role (pulls images, reads secrets, writes logs)")
			for _, c := range td.ContainerDefinitions {
				name := aws.ToString(c.Name)
				require.NotEmpty(t, aws.ToString(c.User), "%s: user must be set (non-root)", name)
				uid, _, _ := strings.Cut(aws.ToString(c.User), ":")
				require.NotEqual(t, "0", uid, "%s runs as root", name)
				require.NotEqual(t, "root", uid, "%s runs as root", name)
				require.True(t, aws.ToBool(c.ReadonlyRootFilesystem), "%s: readonlyRootFilesystem", name)
				require.NotNil(t, c.Privileged, "%s: privileged must be stated", name)
				require.False(t, *c.Privileged, "%s: privileged", name)
				require.NotNil(t, c.LogConfiguration, "%s: logConfiguration", name)
				for _, e := range c.Environment {
					n := strings.ToUpper(aws.ToString(e.Name))
					for _, s := range secretLooking {
						require.NotContains(t, n, s, "%s: %s looks like a secret; use secrets with valueFrom", name, n)
					}
				}
				for _, s := range c.Secrets {
					from := aws.ToString(s.ValueFrom)
					require.Truef(t, strings.HasPrefix(from, "arn:aws:ssm:") || strings.HasPrefix(from, "arn:aws:secretsmanager:"),
						"%s: secret %s valueFrom %q is not an SSM parameter or Secrets Manager ARN", name, aws.ToString(s.Name), from)
				}
				if c.LinuxParameters != nil && c.LinuxParameters.Capabilities != nil {
					require.Contains(t, c.LinuxParameters.Capabilities.Drop, "ALL", "%s drops capabilities selectively; drop ALL", name)
				}
			}
		})
	}
}

// container returns the container definition named name.
func container(t *testing.T, td *ecs.RegisterTaskDefinitionInput, name string) types.ContainerDefinition {
	t.Helper()
	for _, c := range td.ContainerDefinitions {
		if aws.ToString(c.Name) == name {
			return c
		}
	}
	require.Failf(t, "no container", "%s has no container %q", aws.ToString(td.Family), name)
	return types.ContainerDefinition{}
}
