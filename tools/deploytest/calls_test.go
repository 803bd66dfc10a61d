package deploytest

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sdkInputRE finds the aws-sdk-go-v2 operations a daemon's code calls, by
// the Input types it builds (ecs.RunTaskInput{...} → RunTask).
var sdkInputRE = regexp.MustCompile(`\b(ecs|sqs|s3|firehose)\.([A-Z]\w+)Input\b`)

// iamActionFor maps an operation to the IAM action that authorizes it where
// the two names differ (batch calls, multipart uploads).
var iamActionFor = map[string]string{
	"sqs:DeleteMessageBatch":           "sqs:DeleteMessage",
	"sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
	"sqs:SendMessageBatch":             "sqs:SendMessage",
	"s3:CreateMultipartUpload":         "s3:PutObject",
	"s3:UploadPart":                    "s3:PutObject",
	"s3:CompleteMultipartUpload":       "s3:PutObject",
	"s3:ListParts":                     "s3:ListMultipartUploadParts",
}

// sdkCalls lists the IAM actions the non-test Go code under dir needs.
func sdkCalls(t *testing.T, dir string) []string {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range sdkInputRE.FindAllStringSubmatch(string(data), -1) {
			a := m[1] + ":" + m[2]
			if mapped, ok := iamActionFor[a]; ok {
				a = mapped
			}
			seen[a] = true
		}
		return nil
	})
	require.NoError(t, err)
	var out []string
	for a := range seen {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// TestPoliciesCoverTheDaemonsCalls reads the daemons' source for the AWS
// operations they call and requires each one's policy to allow it, so a new
// call without its permission fails here instead of with AccessDenied in
// production. Daemons without AWS calls (exporter) have no policy.
func TestPoliciesCoverTheDaemonsCalls(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	for _, d := range []string{"scheduler", "exitwatch", "logrouter", "exporter"} {
		calls := sdkCalls(t, filepath.Join(root, "services", d))
		rel := "deploy/iam/" + d + "-policy.json"
		if _, err := os.Stat(filepath.Join(root, rel)); os.IsNotExist(err) {
			require.Empty(t, calls, "%s calls AWS but has no %s", d, rel)
			continue
		}
		require.Subset(t, actionsOf(t, rel), calls, "%s calls AWS operations its policy does not allow", d)
	}
}

func TestSDKCallsSeesInputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.go"), []byte("x := &ecs.RunTaskInput{}; y := sqs.DeleteMessageBatchInput{}"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a_test.go"), []byte("s3.CreateBucketInput{}"), 0o600))
	require.Equal(t, []string{"ecs:RunTask", "sqs:DeleteMessage"}, sdkCalls(t, dir))
}
