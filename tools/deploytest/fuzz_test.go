package deploytest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"go.yaml.in/yaml/v3"
)

// FuzzDecodeStrict: decodeStrict never panics, and what it accepts it
// accepts again with the same result (it is a function of the input).
func FuzzDecodeStrict(f *testing.F) {
	for _, rel := range []string{"deploy/ecs/scheduler/task-definition.json", "deploy/ecs/logrouter/task-definition.json"} {
		data, err := os.ReadFile(filepath.Join(repoRoot(f), rel))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"family":"x","containerDefinitions":[{"name":"a","cpu":1,"essential":true,"environment":[{"name":"A","value":"b"}]}]}`))
	f.Add([]byte(`{"networkMode":"bridge","volumes":[{"name":"v","host":{"sourcePath":"/x"}}],"tags":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var a, b ecs.RegisterTaskDefinitionInput
		errA := decodeStrict("f.json", data, &a)
		errB := decodeStrict("f.json", data, &b)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("nondeterministic: %v vs %v", errA, errB)
		}
	})
}

// FuzzCheckRefs: parsing and resolving a template never panics.
func FuzzCheckRefs(f *testing.F) {
	for _, rel := range []string{"deploy/cloudformation/task-events.yaml", "deploy/cloudformation/log-delivery-stream.yaml"} {
		data, err := os.ReadFile(filepath.Join(repoRoot(f), rel))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("Resources:\n  A: {Type: AWS::SQS::Queue, Properties: {X: !GetAtt [B]}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var probe yaml.Node
		if yaml.Unmarshal(data, &probe) != nil {
			return
		}
		tpl, err := parseTemplate("f.yaml", data)
		if err != nil {
			return
		}
		_ = tpl.checkRefs()
	})
}
