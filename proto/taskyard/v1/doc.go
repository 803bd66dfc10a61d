// Package taskyardv1 is taskyard's contract: the protobuf messages every
// daemon publishes on NATS or stores in JetStream KV (generated from the
// .proto files beside this one by `make proto`), and the Go helpers that keep
// the daemons agreeing on everything around them:
//
//   - subject builders and parsers (subjects.go),
//   - the name rule for schedules and clusters (names.go),
//   - the deterministic run id (runid.go),
//   - the JetStream stream and KV bucket definitions (streams.go),
//   - publish/decode helpers that carry the W3C traceparent and the message
//     type in NATS headers (msg.go).
//
// Daemons never import each other; they share only this module and
// services/kit.
package taskyardv1
