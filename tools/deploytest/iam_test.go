package deploytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// iamEnv fills the ${VAR} placeholders of deploy/iam (rendered by envsubst
// in docs/deploy-ecs.md).
var iamEnv = map[string]string{
	"AWS_REGION":                      testEnv["AWS_REGION"],
	"AWS_ACCOUNT_ID":                  testEnv["AWS_ACCOUNT_ID"],
	"TASKYARD_CLUSTER":                testEnv["TASKYARD_CLUSTER"],
	"TASKYARD_JOB_FAMILY_PREFIX":      v1.JobFamilyPrefix,
	"TASKYARD_JOB_EXECUTION_ROLE":     testEnv["TASKYARD_JOB_EXECUTION_ROLE"],
	"TASKYARD_JOB_TASK_ROLE_PATH":     "/taskyard-jobs/",
	"TASKYARD_TASK_EVENTS_QUEUE_NAME": "taskyard-task-events",
	"TASKYARD_LOG_BUCKET":             testEnv["TASKYARD_LOG_BUCKET"],
	"TASKYARD_FIREHOSE_PREFIX":        "taskyard-",
	"TASKYARD_LOG_GROUP":              testEnv["TASKYARD_LOG_GROUP"],
	"TASKYARD_KMS_KEY_ARN":            "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555",
}

var envsubstRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// envsubst replaces ${VAR} from env; a variable missing from env is an error.
func envsubst(file string, data []byte, env map[string]string) ([]byte, error) {
	var missing []string
	out := envsubstRE.ReplaceAllFunc(data, func(m []byte) []byte {
		name := string(envsubstRE.FindSubmatch(m)[1])
		v, ok := env[name]
		if !ok {
			missing = append(missing, name)
		}
		return []byte(v)
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: undefined variables %s", file, strings.Join(missing, ", "))
	}
	return out, nil
}

// policy is the IAM policy grammar the files use: Action and Resource may be
// a string or a list.
type policy struct {
	Version   string
	Statement []statement
}

type statement struct {
	Sid       string
	Effect    string
	Principal json.RawMessage
	Action    stringList
	Resource  stringList
	Condition map[string]map[string]stringList
}

type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings: %w", err)
	}
	*s = many
	return nil
}

func loadPolicy(t *testing.T, rel string) policy {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	require.NoError(t, err)
	data, err := envsubst(rel, raw, iamEnv)
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var p policy
	require.NoError(t, dec.Decode(&p), rel)
	require.Equal(t, "2012-10-17", p.Version, rel)
	require.NotEmpty(t, p.Statement, rel)
	sids := map[string]bool{}
	for _, st := range p.Statement {
		require.NotEmpty(t, st.Sid, "%s: every statement has a Sid (the tests and reviews refer to it)", rel)
		require.False(t, sids[st.Sid], "%s: duplicate Sid %s", rel, st.Sid)
		sids[st.Sid] = true
		require.Contains(t, []string{"Allow", "Deny"}, st.Effect, "%s %s", rel, st.Sid)
		require.NotEmpty(t, st.Action, "%s %s", rel, st.Sid)
		for _, r := range st.Resource {
			require.True(t, r == "*" || strings.HasPrefix(r, "arn:aws:"), "%s %s: resource %q is not an ARN", rel, st.Sid, r)
		}
	}
	return p
}

// allowedStarResource lists the only statements allowed "Resource": "*",
// with the reason AWS requires it.
var allowedStarResource = map[string]string{
	"deploy/iam/scheduler-policy.json TaskDefinitionsHaveNoResourceLevelPermissions": "ecs:RegisterTaskDefinition and ecs:DescribeTaskDefinition support no resource-level permissions (Resource types column empty in the Service Authorization Reference)",
	"deploy/iam/scheduler-policy.json ListTasksOnManagedClusters":                    "ecs:ListTasks is authorized on container instances, not clusters; AWS's documented way to limit it to a cluster is Resource * with the ecs:cluster condition",
	"deploy/iam/exitwatch-policy.json ListTasksOnManagedClusters":                    "as for the scheduler: ListTasks limited by the ecs:cluster condition",
	"deploy/iam/task-execution-policy.json EcrAuthorizationTokenHasNoResource":       "ecr:GetAuthorizationToken is account-wide and supports no resource-level permissions",
}

// knownActions are the IAM actions the policies may use, checked against
// the Service Authorization Reference; a typo in an action name fails here
// instead of silently granting nothing.
var knownActions = []string{
	"ecs:RunTask", "ecs:StopTask", "ecs:ListTasks", "ecs:DescribeTasks", "ecs:DescribeClusters",
	"ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition", "ecs:TagResource",
	"iam:PassRole", "sts:AssumeRole",
	"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
	"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
	"firehose:PutRecordBatch", "firehose:PutRecord",
	"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage", "ecr:GetAuthorizationToken",
	"logs:CreateLogStream", "logs:PutLogEvents",
	"ssm:GetParameters", "secretsmanager:GetSecretValue", "kms:Decrypt",
}

func TestPoliciesAreLeastPrivilege(t *testing.T) {
	t.Parallel()
	files := globRel(t, "deploy/iam/*.json")
	require.NotEmpty(t, files)
	usedStar := map[string]bool{}
	for _, rel := range files {
		p := loadPolicy(t, rel)
		for _, st := range p.Statement {
			key := rel + " " + st.Sid
			for _, a := range st.Action {
				require.NotContains(t, a, "*", "%s: wildcard action %q", key, a)
				require.Contains(t, knownActions, a, "%s: unknown action %q", key, a)
			}
			if strings.HasSuffix(rel, "trust-policy.json") {
				require.Empty(t, st.Resource, "%s: a trust policy has no Resource", key)
				require.NotEmpty(t, st.Condition, "%s: trust limited to this account (confused deputy)", key)
				continue
			}
			require.NotEmpty(t, st.Resource, key)
			if slices.Contains(st.Resource, "*") {
				reason, ok := allowedStarResource[key]
				require.True(t, ok, "%s: Resource \"*\" is not one of the AWS-required cases", key)
				require.NotEmpty(t, reason)
				require.Len(t, st.Resource, 1, key)
				usedStar[key] = true
				if slices.Contains(st.Action, "ecs:ListTasks") {
					require.Contains(t, st.Condition["ArnEquals"], "ecs:cluster", "%s: ListTasks must be limited to the cluster", key)
				}
			}
			if slices.Contains(st.Action, "iam:PassRole") {
				require.Equal(t, stringList{"ecs-tasks.amazonaws.com"}, st.Condition["StringEquals"]["iam:PassedToService"], key)
			}
			if slices.Contains(st.Action, "ecs:TagResource") {
				require.ElementsMatch(t, []string{"RunTask", "RegisterTaskDefinition"}, st.Condition["StringEquals"]["ecs:CreateAction"], "%s: tag only while creating", key)
			}
		}
	}
	for key := range allowedStarResource {
		require.True(t, usedStar[key], "allowedStarResource lists %s, which no longer uses Resource *: remove it", key)
	}
}

// actionsOf returns every Allow action of a policy file.
func actionsOf(t *testing.T, rel string) []string {
	var out []string
	for _, st := range loadPolicy(t, rel).Statement {
		if st.Effect == "Allow" {
			out = append(out, st.Action...)
		}
	}
	return out
}

func TestPoliciesGrantWhatTheDaemonsCall(t *testing.T) {
	t.Parallel()
	for rel, want := range map[string][]string{
		"deploy/iam/scheduler-policy.json": {"ecs:RunTask", "ecs:StopTask", "ecs:ListTasks", "ecs:DescribeTasks", "ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition", "ecs:TagResource", "iam:PassRole"},
		"deploy/iam/exitwatch-policy.json": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "ecs:DescribeTasks", "ecs:ListTasks", "ecs:StopTask"},
		"deploy/iam/logrouter-policy.json": {"s3:PutObject", "s3:AbortMultipartUpload", "firehose:PutRecordBatch"},
		"deploy/iam/task-execution-policy.json": {"ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
			"logs:CreateLogStream", "logs:PutLogEvents", "ssm:GetParameters", "secretsmanager:GetSecretValue"},
	} {
		require.Subset(t, actionsOf(t, rel), want, rel)
	}
}

func TestPassRoleIsNotWildcard(t *testing.T) {
	t.Parallel()
	for _, st := range loadPolicy(t, "deploy/iam/scheduler-policy.json").Statement {
		if !slices.Contains(st.Action, "iam:PassRole") {
			continue
		}
		for _, r := range st.Resource {
			require.Regexp(t, `^arn:aws:iam::123456789012:role/.+`, r)
			require.NotEqual(t, "arn:aws:iam::123456789012:role/*", r)
		}
	}
}

func TestEnvsubstNamesMissingVariables(t *testing.T) {
	t.Parallel()
	_, err := envsubst("p.json", []byte(`{"a":"${A}","b":"${B}"}`), map[string]string{"A": "1"})
	require.ErrorContains(t, err, "p.json: undefined variables B")
}

// TestSchedulerCannotRunTheDaemons: the scheduler runs job task definitions
// v1.JobFamily(<schedule>) = taskyard-job-<schedule>. No daemon family in
// deploy/ecs has that prefix, so the RunTask Allow reaches none of them; the
// explicit Deny on the daemons' families stays as defence in depth (for an
// installation that sets TASKYARD_JOB_FAMILY_PREFIX to something broader)
// and must cover every one of them.
func TestSchedulerCannotRunTheDaemons(t *testing.T) {
	t.Parallel()
	require.Equal(t, v1.JobFamilyPrefix, iamEnv["TASKYARD_JOB_FAMILY_PREFIX"], "the IAM prefix is the one the scheduler uses")
	var denied []string
	for _, st := range loadPolicy(t, "deploy/iam/scheduler-policy.json").Statement {
		if st.Effect == "Deny" && slices.Contains(st.Action, "ecs:RunTask") {
			denied = append(denied, st.Resource...)
		}
	}
	taskDefs, _ := ecsFiles(t)
	for _, rel := range taskDefs {
		family := aws.ToString(loadTaskDef(t, rel).Family)
		if strings.HasPrefix(family, "example-") {
			continue // a job's task definition shown as an example, not a daemon
		}
		if _, isJob := v1.ScheduleFromJobFamily(family); isJob {
			t.Errorf("%s: daemon family %s has the job prefix %s: the scheduler's Allow reaches it", rel, family, v1.JobFamilyPrefix)
			continue
		}
		arn := "arn:aws:ecs:" + iamEnv["AWS_REGION"] + ":" + iamEnv["AWS_ACCOUNT_ID"] + ":task-definition/" + family + ":7"
		hit := slices.ContainsFunc(denied, func(pattern string) bool {
			ok, _ := path.Match(pattern, arn)
			return ok
		})
		require.True(t, hit, "%s: the Deny does not cover daemon task definition %s", rel, arn)
	}
}
