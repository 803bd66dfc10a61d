module github.com/taskyard/taskyard/services/exporter

go 1.26.0

replace (
	github.com/taskyard/taskyard/proto => ../../proto
	github.com/taskyard/taskyard/services/kit => ../kit
)

require (
	github.com/nats-io/nats.go v1.55.0
	github.com/taskyard/taskyard/proto v0.0.0-00010101000000-000000000000
	go.opentelemetry.io/otel v1.42.0
	go.opentelemetry.io/otel/metric v1.42.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/mackerelio/golib v1.2.2 // indirect
	github.com/mackerelio/mackerel-plugin-json v1.2.8 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	go.opentelemetry.io/otel/trace v1.42.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

tool github.com/mackerelio/mackerel-plugin-json
