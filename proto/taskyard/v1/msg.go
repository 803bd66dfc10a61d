package taskyardv1

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// HeaderType is the NATS header naming the protobuf message type of the
// payload (its full name, e.g. taskyard.v1.RunDispatched), so generic readers
// such as `taskyard events tail` decode any message without knowing the
// subject layout.
const HeaderType = "Taskyard-Type"

// propagator is the W3C Trace Context propagator: every message carries
// `traceparent` (and `tracestate` when set).
var propagator = propagation.TraceContext{}

// HeaderCarrier adapts nats.Header to OpenTelemetry's TextMapCarrier.
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set sets key to value.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// NewMsg marshals m into a NATS message for subject, with the type header and
// the trace context of ctx injected as `traceparent`.
func NewMsg(ctx context.Context, subject string, m proto.Message) (*nats.Msg, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(HeaderType, string(m.ProtoReflect().Descriptor().FullName()))
	propagator.Inject(ctx, HeaderCarrier(msg.Header))
	return msg, nil
}

// Publish publishes m to JetStream on subject. A non-empty msgID becomes the
// Nats-Msg-Id, so a second publish of the same id within the stream's
// duplicate window is dropped by the server (ack.Duplicate is then true).
func Publish(ctx context.Context, js jetstream.JetStream, subject string, m proto.Message, msgID string) (*jetstream.PubAck, error) {
	msg, err := NewMsg(ctx, subject, m)
	if err != nil {
		return nil, err
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack, nil
}

// ContextFromHeader returns ctx carrying the remote span context found in
// the message's traceparent header, if any.
func ContextFromHeader(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// Decode unmarshals a taskyard message. The type comes from the
// Taskyard-Type header, or, for publishers that do not set it, from the
// subject (prefix as given).
func Decode(prefix, subject string, h nats.Header, data []byte) (proto.Message, error) {
	var name protoreflect.FullName
	if h != nil {
		name = protoreflect.FullName(h.Get(HeaderType))
	}
	if name == "" {
		p, err := Subjects{Prefix: prefix}.Parse(subject)
		if err != nil {
			return nil, err
		}
		name = TypeForSubject(p)
		if name == "" {
			return nil, fmt.Errorf("subject %q carries no known message type", subject)
		}
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
	if err != nil {
		return nil, fmt.Errorf("message type %q: %w", name, err)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode %s on %s: %w", name, subject, err)
	}
	return m, nil
}

// TypeForSubject is the message type published on a parsed subject, or ""
// for control subjects (whose payload depends on the verb and direction).
func TypeForSubject(p Parsed) protoreflect.FullName {
	var m proto.Message
	switch p.Family {
	case "run":
		switch p.Kind {
		case "dispatched":
			m = (*RunDispatched)(nil)
		case "skipped":
			m = (*RunSkipped)(nil)
		case "dispatch_failed":
			m = (*RunDispatchFailed)(nil)
		case "finished":
			m = (*RunFinished)(nil)
		case "missed":
			m = (*RunMissed)(nil)
		}
	case "task":
		m = (*TaskStateChanged)(nil)
	case "alert":
		m = (*Alert)(nil)
	case "logs.stats":
		m = (*LogStats)(nil)
	case "stats":
		m = (*DaemonStats)(nil)
	}
	if m == nil {
		return ""
	}
	return m.ProtoReflect().Descriptor().FullName()
}
