package deploytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// matchPattern implements EventBridge's exact-value matching, the only
// kind the rule uses: every key of the pattern must be in the event; a list
// matches when the event's value equals one of its entries, a mapping
// recurses.
func matchPattern(pattern map[string]any, event map[string]any) bool {
	for k, want := range pattern {
		got, ok := event[k]
		if !ok {
			return false
		}
		switch w := want.(type) {
		case []any:
			if !slices.ContainsFunc(w, func(v any) bool { return v == got }) {
				return false
			}
		case map[string]any:
			sub, ok := got.(map[string]any)
			if !ok || !matchPattern(w, sub) {
				return false
			}
		default:
			return false // EventBridge patterns have lists at the leaves
		}
	}
	return true
}

// rulePattern is the EventPattern of task-events.yaml with ClusterArns
// given as clusters.
func rulePattern(t *testing.T, clusters []string) map[string]any {
	t.Helper()
	tpl := loadTemplate(t, "deploy/cloudformation/task-events.yaml")
	node := yamlPath(tpl.resources["TaskStateChangeRule"], "Properties", "EventPattern")
	require.NotNil(t, node)
	var resolve func(n *yaml.Node) any
	resolve = func(n *yaml.Node) any {
		if n.Tag == "!Ref" {
			require.Equal(t, "ClusterArns", n.Value)
			out := make([]any, len(clusters))
			for i, c := range clusters {
				out[i] = c
			}
			return out
		}
		switch n.Kind {
		case yaml.MappingNode:
			m := map[string]any{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				m[n.Content[i].Value] = resolve(n.Content[i+1])
			}
			return m
		case yaml.SequenceNode:
			var s []any
			for _, c := range n.Content {
				s = append(s, resolve(c))
			}
			return s
		}
		return n.Value
	}
	return resolve(node).(map[string]any)
}

// TestRuleMatchesExitwatchEvents runs the rule's pattern over the real ECS
// events exitwatch is tested with (services/exitwatch/testdata/ecs-events):
// every one of them matches when its cluster is managed, none when it is not.
func TestRuleMatchesExitwatchEvents(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "services/exitwatch/testdata/ecs-events/*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "exitwatch's sample events moved; point this test at them")
	var n int
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var events []map[string]any
		if json.Unmarshal(data, &events) != nil {
			var one map[string]any
			require.NoError(t, json.Unmarshal(data, &one), f)
			events = []map[string]any{one}
		}
		for _, ev := range events {
			if ev["detail-type"] != "ECS Task State Change" {
				continue
			}
			n++
			cluster, _ := ev["detail"].(map[string]any)["clusterArn"].(string)
			require.NotEmpty(t, cluster, f)
			managed := rulePattern(t, []string{"arn:aws:ecs:eu-west-1:123456789012:cluster/unrelated", cluster})
			other := rulePattern(t, []string{cluster + "-other"})
			require.True(t, matchPattern(managed, ev), "%s: event %v not forwarded", f, ev["id"])
			require.False(t, matchPattern(other, ev), "%s: event of an unmanaged cluster forwarded", f)
			ev["detail-type"] = "ECS Container Instance State Change"
			require.False(t, matchPattern(managed, ev), "%s: other detail-types must not match", f)
		}
	}
	require.Positive(t, n)
}
