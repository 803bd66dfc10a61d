package pipeline

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/record"
)

func TestProcess(t *testing.T) {
	t.Parallel()
	p := New(Config{MaxRecordBytes: 32, Redact: []Redaction{{regexp.MustCompile(`\d{4}-\d{4}-\d{4}-\d{4}`), "****"}}, DefaultCluster: "local"})
	now := time.Unix(1700000000, 5)
	for _, tc := range []struct {
		name string
		rec  map[string]any
		want event.Event
	}{
		{"firelens json line", map[string]any{
			"log": `{"loglevel":"ERR","m":1}`, "source": "stderr", "container_name": "/web",
			"ecs_cluster": "arn:aws:ecs:eu-west-1:1:cluster/prod", "ecs_task_arn": "arn:aws:ecs:eu-west-1:1:task/prod/abc",
			"ecs_task_definition": "arn:aws:ecs:eu-west-1:1:task-definition/taskyard-job-etl:3",
		}, event.Event{Cluster: "prod", Service: "etl", Container: "web", Task: "abc", Source: "stderr", Level: "error", Log: `{"loglevel":"ERR","m":1}`, Attrs: []byte(`{"loglevel":"ERR","m":1}`), Flags: event.FlagJSON}},
		{"runner fields win, numeric level, run id", map[string]any{
			"log": `{"level":50}` + "\n", "cluster": "dev", "service": "nightly", "container": "main", "task": "t1", "taskyard_run_id": "r1",
			"ecs_cluster": "ignored",
		}, event.Event{Cluster: "dev", Service: "nightly", Container: "main", Task: "t1", RunID: "r1", Level: "error", Log: `{"level":50}`, Attrs: []byte(`{"level":50}`), Flags: event.FlagJSON}},
		{"foreign family kept as service", map[string]any{"log": "x", "ecs_task_definition": "billing-api:12"},
			event.Event{Cluster: "local", Service: "billing-api", Level: "unknown", Log: "x"}},
		{"redaction before json and limit", map[string]any{"log": "card 1234-5678-9012-3456 ok", "severity": "warning"},
			event.Event{Cluster: "local", Service: "unknown", Level: "warn", Log: "card **** ok"}},
		{"truncated at the limit", map[string]any{"log": strings.Repeat("é", 20)},
			event.Event{Cluster: "local", Service: "unknown", Level: "unknown", Log: strings.Repeat("é", 16), Flags: event.FlagTruncated}},
		{"invalid utf-8 replaced", map[string]any{"log": "a\xffb"},
			event.Event{Cluster: "local", Service: "unknown", Level: "unknown", Log: "a\uFFFDb"}},
		{"no log field: whole record", map[string]any{"message": "hello", "level": "debug"},
			event.Event{Cluster: "local", Service: "unknown", Level: "debug", Log: "hello"}},
		{"multi-line json compacted", map[string]any{"log": "{\n \"a\": 1\n}"},
			event.Event{Cluster: "local", Service: "unknown", Level: "unknown", Log: "{\n \"a\": 1\n}", Attrs: []byte(`{"a":1}`), Flags: event.FlagJSON}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e event.Event
			require.True(t, p.Process("tag", now, record.FromMap(tc.rec), &e))
			tc.want.Time, tc.want.Tag = now, "tag"
			require.Equal(t, tc.want, e)
		})
	}
	require.Equal(t, int64(1), p.C.Truncated.Load())
	require.Equal(t, int64(1), p.C.InvalidUTF8.Load())
	require.Equal(t, int64(1), p.C.Redacted.Load())
}

func TestOnlyJSONDrop(t *testing.T) {
	t.Parallel()
	p := New(Config{DropNonJSON: true})
	var e event.Event
	require.False(t, p.Process("t", time.Now(), record.Of(map[string]any{"log": "plain"}), &e))
	require.True(t, p.Process("t", time.Now(), record.Of(map[string]any{"log": `{"a":1}`}), &e))
	require.Equal(t, int64(1), p.C.DroppedNonJSON.Load())
}

func TestLevels(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"TRACE": "debug", "Information": "info", "notice": "info", "WARNING": "warn", "err": "error", "CRITICAL": "fatal", "panic": "fatal", "30": "info", "60": "fatal", "chatty": ""} {
		require.Equal(t, want, NormalizeLevel(in), in)
	}
	for in, want := range map[string]string{"debug": "debug", "info": "info", "warn": "warning", "error": "error", "fatal": "critical", "unknown": "info"} {
		require.Equal(t, want, DatadogStatus(in), in)
	}
}

func TestEventRoundTripAndFormats(t *testing.T) {
	t.Parallel()
	e := event.Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Tag: "t", Cluster: "c", Service: "s", Container: "k", Task: "x", Source: "stdout", Level: "info", RunID: "r", Log: "say \"hi\"\n\x01", Attrs: []byte(`{"a":1}`), Flags: event.FlagJSON | event.FlagTruncated}
	var d event.Event
	require.NoError(t, d.Unmarshal(e.AppendBinary(nil)))
	require.Equal(t, e, d)
	require.Error(t, d.Unmarshal(e.AppendBinary(nil)[:10]))
	var sh event.Event
	require.NoError(t, sh.UnmarshalShared(e.AppendBinary(nil)))
	require.Equal(t, e, sh)
	require.Equal(t, `{"time":"2026-01-02T03:04:05.000000006Z","cluster":"c","service":"s","container":"k","task":"x","source":"stdout","level":"info","run_id":"r","tag":"t","log":"say \"hi\"\n\u0001","truncated":true,"attributes":{"a":1}}`+"\n", string(e.AppendLine(nil, event.FormatJSON)))
	require.Equal(t, "say \"hi\"\n\x01\n", string(e.AppendLine(nil, event.FormatRaw)))
}

// TestFieldsIndex: the one-pass index finds the same field as
// record.Get (the last of repeated keys) for every key the pipeline reads.
func TestFieldsIndex(t *testing.T) {
	t.Parallel()
	for k, name := range levelKeys {
		require.Equal(t, name, fieldNames[fLoglevel+k])
	}
	var rec record.Record
	for i, name := range fieldNames {
		rec = append(rec, record.Field{Key: name, Str: "first " + name, IsStr: true}, record.Field{Key: "other", Val: int64(i)})
		if i%2 == 0 {
			rec = append(rec, record.Field{Key: name, Val: map[string]any{"n": int64(i)}})
		}
	}
	var fs fields
	fs.index(rec)
	for k, name := range fieldNames {
		want, ok := rec.Get(name)
		require.True(t, ok)
		got := fs.at(rec, k)
		require.NotNil(t, got, name)
		require.Equal(t, want, *got, name)
		require.Equal(t, rec.String(name), fs.str(rec, k), name)
	}
	var empty fields
	empty.index(record.Record{{Key: "unrelated", Str: "x", IsStr: true}})
	for k := range fieldNames {
		require.Nil(t, empty.at(rec, k))
		require.Empty(t, empty.str(rec, k))
	}
}

// TestProcessWithMemo: a memo shared by consecutive records gives every
// record the tags Process gives it alone, as the ECS fields change.
func TestProcessWithMemo(t *testing.T) {
	t.Parallel()
	p := New(Config{})
	var m Memo
	now := time.Unix(1700000000, 0)
	arns := []string{"arn:aws:ecs:eu-west-1:1:task/prod/aaa", "arn:aws:ecs:eu-west-1:1:task/prod/bbb", "", "plain"}
	tds := []string{"taskyard-job-etl:3", "arn:aws:ecs:eu-west-1:1:task-definition/billing:7", "", "x:1"}
	clusters := []string{"arn:aws:ecs:eu-west-1:1:cluster/prod", "staging", ""}
	for i := 0; i < 60; i++ {
		rec := record.Record{{Key: "log", Str: "line", IsStr: true}}
		for k, v := range map[string]string{"ecs_task_arn": arns[i/2%len(arns)], "ecs_task_definition": tds[i/3%len(tds)], "ecs_cluster": clusters[i/5%len(clusters)]} {
			if v != "" {
				rec = append(rec, record.Field{Key: k, Str: v, IsStr: true})
			}
		}
		var want, got event.Event
		require.True(t, p.Process("t", now, rec, &want))
		require.True(t, p.ProcessWith(&m, "t", now, rec, &got))
		require.Equal(t, want, got, "record %d", i)
	}
}
