package taskyardv1

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StoreOptions tune the stream and bucket definitions. The zero value is the
// single-node default used by `taskyard dev` and tests.
type StoreOptions struct {
	// Prefix of every subject; DefaultPrefix when empty.
	Prefix string
	// Replicas of every stream and bucket (1 for one server, 3 for a
	// JetStream cluster).
	Replicas int
	// LeaseTTL is the scheduler leader lease: a lease not renewed within it
	// expires. Default 10s. Every scheduler replica must use the same value.
	LeaseTTL time.Duration
	// RunsTTL is how long run records and run events are kept. Default 30 days.
	RunsTTL time.Duration
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values for
	// de-duplication. Default 15 minutes.
	DuplicateWindow time.Duration
}

func (o StoreOptions) withDefaults() StoreOptions {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.RunsTTL <= 0 {
		o.RunsTTL = 30 * 24 * time.Hour
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = 15 * time.Minute
	}
	return o
}

// StreamNames are the names of the three streams. For the default prefix
// they are RUNS, ALERTS and STATS; another prefix p gives P_RUNS and so on,
// so several installations can share one NATS account.
type StreamNames struct{ Runs, Alerts, Stats string }

// Streams returns the stream names for prefix.
func Streams(prefix string) StreamNames {
	if prefix == "" || prefix == DefaultPrefix {
		return StreamNames{Runs: "RUNS", Alerts: "ALERTS", Stats: "STATS"}
	}
	p := strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(prefix)) + "_"
	return StreamNames{Runs: p + "RUNS", Alerts: p + "ALERTS", Stats: p + "STATS"}
}

// BucketNames are the names of the KV buckets: <prefix>-schedules,
// <prefix>-state, <prefix>-leases, <prefix>-runs, <prefix>-snapshots,
// <prefix>-instances.
type BucketNames struct{ Schedules, State, Leases, Runs, Snapshots, Instances string }

// InstanceTTL is the TTL of the instances bucket: a daemon instance that
// owns its name there (one exporter process per --instance) and dies frees
// the name within it.
const InstanceTTL = 10 * time.Second

// Buckets returns the bucket names for prefix.
func Buckets(prefix string) BucketNames {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	p := strings.ReplaceAll(prefix, ".", "-")
	return BucketNames{
		Schedules: p + "-schedules",
		State:     p + "-state",
		Leases:    p + "-leases",
		Runs:      p + "-runs",
		Snapshots: p + "-snapshots",
		Instances: p + "-instances",
	}
}

// StreamConfigs returns the definition of every taskyard stream.
//
//	RUNS    <p>.run.>, <p>.task.>       run and task events, kept RunsTTL
//	ALERTS  <p>.alert.>                 alerts, kept RunsTTL
//	STATS   <p>.logs.stats.>, <p>.stats.>  volume and daemon counters, kept 24h
func StreamConfigs(o StoreOptions) []jetstream.StreamConfig {
	o = o.withDefaults()
	s := Subjects{Prefix: o.Prefix}
	n := Streams(o.Prefix)
	return []jetstream.StreamConfig{
		{
			Name:        n.Runs,
			Description: "taskyard run and task events",
			Subjects:    []string{s.Runs(), s.Tasks()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      o.RunsTTL,
			Duplicates:  o.DuplicateWindow,
			Replicas:    o.Replicas,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        n.Alerts,
			Description: "taskyard alerts",
			Subjects:    []string{s.Alerts()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      o.RunsTTL,
			Duplicates:  o.DuplicateWindow,
			Replicas:    o.Replicas,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        n.Stats,
			Description: "taskyard log volume and daemon counters",
			Subjects:    []string{s.LogStatsAll(), s.DaemonStatsAll()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      24 * time.Hour,
			Duplicates:  2 * time.Minute,
			Replicas:    o.Replicas,
			Discard:     jetstream.DiscardOld,
		},
	}
}

// KVConfigs returns the definition of every taskyard KV bucket.
func KVConfigs(o StoreOptions) []jetstream.KeyValueConfig {
	o = o.withDefaults()
	b := Buckets(o.Prefix)
	return []jetstream.KeyValueConfig{
		{Bucket: b.Schedules, Description: "applied schedule definitions (ScheduleSpec)", History: 10, Storage: jetstream.FileStorage, Replicas: o.Replicas},
		{Bucket: b.State, Description: "per-schedule last and next fire (ScheduleState)", History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas},
		{Bucket: b.Leases, Description: "leader leases; a key lives LeaseTTL after its last write", History: 1, TTL: o.LeaseTTL, Storage: jetstream.FileStorage, Replicas: o.Replicas},
		{Bucket: b.Runs, Description: "run records (RunRecord)", History: 1, TTL: o.RunsTTL, Storage: jetstream.FileStorage, Replicas: o.Replicas},
		{Bucket: b.Snapshots, Description: "daemon state snapshots (exporter counters, ...)", History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas},
		// Separate from the leases bucket, whose TTL is the scheduler's
		// --lease-ttl and may change under a running daemon.
		{Bucket: b.Instances, Description: "ownership of daemon instance names; a key lives InstanceTTL after its last write", History: 1, TTL: InstanceTTL, Storage: jetstream.FileStorage, Replicas: o.Replicas},
	}
}
