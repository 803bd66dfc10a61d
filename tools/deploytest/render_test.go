package deploytest

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/template"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/config"
)

// testEnv is the value of every placeholder the deploy files may use. A file
// using a variable missing here fails to render: add it here and to the
// table in docs/deploy-ecs.md.
var testEnv = map[string]string{
	"AWS_REGION":                   "eu-west-1",
	"AWS_ACCOUNT_ID":               "123456789012",
	"TASKYARD_SLACK_CHANNEL":       "C0123ALERTS",
	"TASKYARD_SITE_VERSION":        "v0.1.0-site.3",
	"TASKYARD_VERSION":             "v0.1.0",
	"TASKYARD_IMAGE_REGISTRY":      "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
	"TASKYARD_CLUSTER":             "batch",
	"TASKYARD_SUBNET_A":            "subnet-0aaa1111",
	"TASKYARD_SUBNET_B":            "subnet-0bbb2222",
	"TASKYARD_SECURITY_GROUP":      "sg-0ccc3333",
	"TASKYARD_SSM_PREFIX":          "arn:aws:ssm:eu-west-1:123456789012:parameter/taskyard",
	"TASKYARD_LOG_GROUP":           "/taskyard/daemons",
	"TASKYARD_TASK_EVENTS_QUEUE":   "https://sqs.eu-west-1.amazonaws.com/123456789012/taskyard-task-events",
	"TASKYARD_LOG_BUCKET":          "example-taskyard-logs",
	"TASKYARD_LOGROUTER_REGISTRY":  "arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-0123456789abcdef",
	"TASKYARD_NATS_REGISTRY":       "arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-0fedcba987654321",
	"TASKYARD_NATS_NODE":           "1",
	"TASKYARD_DISCOVERY_NAMESPACE": "taskyard.internal",
	"TASKYARD_DNS_CACHE_IMAGE":     "123456789012.dkr.ecr.eu-west-1.amazonaws.com/taskyard-dns-cache:2.90",
	"TASKYARD_NATS_IMAGE":          "123456789012.dkr.ecr.eu-west-1.amazonaws.com/taskyard-nats:2.11",
	"TASKYARD_JOB_EXECUTION_ROLE":  "taskyard-job-execution",
}

// repoRoot is the repository root (tools/deploytest/../..).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// render executes a deploy file as an ecspresso-style template: must_env
// fails on a variable missing from env, env returns its default.
func render(file string, data []byte, env map[string]string) ([]byte, error) {
	var missing []string
	funcs := template.FuncMap{
		"must_env": func(name string) (string, error) {
			v, ok := env[name]
			if !ok {
				missing = append(missing, name)
				return "", fmt.Errorf("environment variable %s is not defined", name)
			}
			return v, nil
		},
		"env": func(name string, def ...string) string {
			if v, ok := env[name]; ok {
				return v
			}
			if len(def) > 0 {
				return def[0]
			}
			return ""
		},
	}
	tpl, err := template.New(filepath.Base(file)).Funcs(funcs).Option("missingkey=error").Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var buf bytes.Buffer
	if err := tpl.Execute(&buf, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return buf.Bytes(), nil
}

// renderFile reads and renders a file below the repository root.
func renderFile(t testing.TB, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	require.NoError(t, err)
	out, err := render(rel, data, testEnv)
	require.NoError(t, err)
	return out
}

// globRel lists files below the repository root matching pattern, as
// repository-relative paths, sorted.
func globRel(t testing.TB, pattern string) []string {
	t.Helper()
	root := repoRoot(t)
	matches, err := filepath.Glob(filepath.Join(root, pattern))
	require.NoError(t, err)
	var rel []string
	for _, m := range matches {
		r, err := filepath.Rel(root, m)
		require.NoError(t, err)
		rel = append(rel, filepath.ToSlash(r))
	}
	sort.Strings(rel)
	return rel
}

func TestRenderMustEnv(t *testing.T) {
	t.Parallel()
	out, err := render("x.json", []byte(`{"a":"{{ must_env "A" }}","b":"{{ env "B" "dflt" }}"}`), map[string]string{"A": "1"})
	require.NoError(t, err)
	require.Equal(t, `{"a":"1","b":"dflt"}`, string(out))
	_, err = render("x.json", []byte(`{"a":"{{ must_env "NOPE" }}"}`), nil)
	require.ErrorContains(t, err, "NOPE is not defined")
	require.ErrorContains(t, err, "x.json")
}

// placeholderRE matches must_env/env calls with a backquoted or
// double-quoted variable name.
var placeholderRE = regexp.MustCompile("\\b(?:must_env|env)\\s+[`\"]([A-Za-z0-9_]+)[`\"]")

// placeholders lists the variables a file's must_env/env calls name.
func placeholders(data []byte) []string {
	var names []string
	for _, m := range placeholderRE.FindAllSubmatch(data, -1) {
		names = append(names, string(m[1]))
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// TestPlaceholdersAreKnownAndDocumented: the test values cover exactly the
// variables the deploy files use (no stale entries), and the runbook lists
// each one.
func TestPlaceholdersAreKnownAndDocumented(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	used := map[string]bool{}
	usedIAM := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, n := range placeholders(data) {
			used[n] = true
		}
		if strings.Contains(filepath.ToSlash(p), "/deploy/iam/") {
			for _, m := range envsubstRE.FindAllSubmatch(data, -1) {
				usedIAM[string(m[1])] = true
			}
		}
		return nil
	})
	require.NoError(t, err)
	for n := range testEnv {
		require.True(t, used[n], "testEnv has %s, which no deploy file uses: remove it", n)
	}
	for n := range iamEnv {
		require.True(t, usedIAM[n], "iamEnv has %s, which no IAM policy uses: remove it", n)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs/deploy-ecs.md"))
	require.NoError(t, err)
	for _, m := range []map[string]bool{used, usedIAM} {
		for n := range m {
			require.True(t, strings.Contains(string(doc), "`"+n+"`"), "docs/deploy-ecs.md does not document %s", n)
		}
	}
}

// TestRenderVariablesAreNotDaemonFlags: the render-time variables are read
// by ecspresso and envsubst, never by the daemons; one that a daemon also
// reads (TASKYARD_<flag>) would change the daemon if it leaked into its
// environment.
func TestRenderVariablesAreNotDaemonFlags(t *testing.T) {
	t.Parallel()
	for daemon, reg := range daemonFlags {
		if reg == nil {
			continue
		}
		fs := registeredFlags(t, daemon)
		fs.VisitAll(func(fl *flag.Flag) {
			env := config.EnvName(fl.Name)
			_, inTest := testEnv[env]
			_, inIAM := iamEnv[env]
			require.False(t, inTest || inIAM, "render variable %s is also %s's flag --%s", env, daemon, fl.Name)
		})
	}
}
