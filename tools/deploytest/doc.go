// Package deploytest holds the tests of the ECS deployment files under
// deploy/ (task and service definitions, IAM policies, CloudFormation
// templates). It has no non-test code; this file exists so the package has a
// name and this comment.
//
// # How the ECS definitions are checked
//
// The aws-sdk-go-v2 input types (ecs.RegisterTaskDefinitionInput,
// ecs.CreateServiceInput) carry no json tags, so encoding/json cannot decode
// the --cli-input-json shape into them strictly. The tests do it in two
// steps, the second of which makes the first one's guesses irrelevant:
//
//  1. decodeStrict walks the JSON token stream against the Go type by
//     reflection. An object key selects the exported field whose name equals
//     the key case-insensitively; a key with no such field, a duplicate key,
//     a value of the wrong JSON type, a number that does not fit, or a string
//     outside an enum type's Values() is an error naming the file, line and
//     field path (containerDefinitions[0].readonlyRootFilesystem).
//  2. The decoded input is sent through the real ECS client
//     (RegisterTaskDefinition / CreateService) to an httptest server that
//     captures the request. The client's own awsJson1_1 serializer writes the
//     wire names from the service model, and the test requires the captured
//     body to be JSON-equal to the rendered file. A key that matched a field
//     only case-insensitively, or a value the serializer would drop or
//     rewrite, makes the two differ — so the file is exactly what the API
//     accepts, as the SDK's model spells it. The client also runs the SDK's
//     required-parameter validators on the way out.
//
// Placeholders are rendered first, the way ecspresso does it: the files are
// Go text/template with must_env (fails when the variable is unset) and env
// (with a default), fed from a fixed map of test values; an unknown variable
// fails the test.
//
// # What else is checked
//
//   - Security properties of every container: non-root numeric user,
//     readonlyRootFilesystem, privileged false, a logConfiguration, no
//     secret-looking variable in plain environment (they belong in secrets,
//     valueFrom an SSM parameter or Secrets Manager ARN).
//   - Images and ports against the daemons: image names
//     <registry>/taskyard-<daemon>:<version>; container ports against the
//     listen defaults registered by the daemons' app.Config (see
//     flags_test.go for which daemons could be imported and which fall back
//     to a table).
//   - Every TASKYARD_* variable in a task definition is a flag registered by
//     that daemon's app.Config.Register (skipped, with the reason, for a
//     daemon whose app package did not exist when the test was written).
//   - IAM policies: valid JSON policy grammar, no "*" or "service:*" action,
//     and no "Resource": "*" except the statements listed in
//     allowedStarResource with the AWS reason.
//   - CloudFormation templates: parsed with go.yaml.in/yaml/v3 including the
//     short intrinsic tags (!Ref, !GetAtt, !Sub, !Join, ...); every Ref,
//     GetAtt and ${Name} inside Sub resolves to a parameter, a resource or a
//     pseudo parameter, and the EventBridge pattern matches ECS task state
//     change events.
//   - The NATS server configuration for the ECS JetStream option is parsed
//     by nats-server's own config parser.
package deploytest
