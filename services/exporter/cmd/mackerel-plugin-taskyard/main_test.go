package main

import (
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/exportertest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The test binary doubles as the plugin: run with TASKYARD_PLUGIN_MAIN=1 it
// is main() with the given arguments, so the tests exercise the real
// command line, stdout and exit code without building another binary.
func TestMain(m *testing.M) {
	if os.Getenv("TASKYARD_PLUGIN_MAIN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func plugin(t *testing.T, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "TASKYARD_PLUGIN_MAIN=1"), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "stderr: %s", stderr.String())
	return out
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), string(got), "%s differs; run go test -update after checking the change", path)
}

// normalize sorts the value lines (go-mackerel-plugin prints in map order)
// and replaces the timestamp column.
func normalize(out []byte) []byte {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		if f := strings.Split(l, "\t"); len(f) == 3 {
			lines[i] = f[0] + "\t" + f[1] + "\tTS"
		}
	}
	sort.Strings(lines)
	return []byte(strings.Join(lines, "\n") + "\n")
}

const profile = `name: batch
cluster: arn:aws:ecs:ap-northeast-1:123456789012:cluster/batch
launchType: FARGATE
network:
  subnets: [subnet-0a1b2c]
  securityGroups: [sg-0123abcd]
taskLimit: 20
`

func TestPlugin(t *testing.T) {
	t0 := exportertest.T0
	bus := exportertest.StartBus(t)
	clusters := filepath.Join(t.TempDir(), "clusters")
	require.NoError(t, os.MkdirAll(clusters, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(clusters, "batch.yml"), []byte(profile), 0o644))
	cfg := exportertest.Config(bus, "plugin")
	cfg.Clusters = []string{clusters}
	clock := exportertest.NewClock(t0.Add(2 * time.Hour))
	e := exportertest.Start(t, cfg, clock)
	p := bus.Pub(t)

	p.Run("nightly", "batch", t0, time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, 42*time.Second)
	p.Run("nightly", "batch", t0.Add(time.Hour), time.Second, v1.Outcome_OUTCOME_FAILED_TO_START, 0, 0)
	p.Dispatch("report", "batch", t0.Add(110*time.Minute), 2*time.Second)
	p.Alert(v1.Severity_SEVERITY_WARNING, "silent_run", "report", false)
	p.LogStats("batch", "nightly", "lr-1", t0.Add(time.Minute), map[string]int64{"info": 40, "error": 2}, 4000)
	p.Stats("logrouter", "lr-1", t0.Add(119*time.Minute), t0, map[string]map[string]int64{
		"s3.0": {"proc_records": 40, "errors": 1, "retries": 2, "retries_failed": 1, "retried_records": 3, "dropped_records": 0}})
	require.Eventually(t, func() bool {
		m := exportertest.Flat(t, e.URL)
		_, statsDone := m["daemons.logrouter.lr-1.up"]
		return statsDone && m["schedule.nightly.failed_to_start"] == 1 && m["schedule.report.running"] == 1 && m["alerts.warning"] == 1
	}, 10*time.Second, 20*time.Millisecond)

	url := e.URL + "/api/v1/metrics"
	work := t.TempDir()
	tempfile := filepath.Join(work, "state")
	args := []string{"-url=" + url, "-tempfile=" + tempfile, "-header", "X-Test: yes"}

	// Meta mode: the graph definitions.
	meta := plugin(t, []string{"MACKEREL_AGENT_PLUGIN_META=1"}, args...)
	golden(t, "meta.golden", meta)

	// First run: gauges only (rates need a previous value).
	first := plugin(t, nil, args...)
	golden(t, "values-first.golden", normalize(first))
	firstRaw, err := os.ReadFile(tempfile)
	require.NoError(t, err)

	// A minute of activity.
	p.Finish("report", "batch", v1.RunID("report", t0.Add(110*time.Minute), v1.Trigger_TRIGGER_SCHEDULE), t0.Add(110*time.Minute), t0.Add(110*time.Minute+2*time.Second), v1.Outcome_OUTCOME_SUCCEEDED, 0, 5*time.Minute)
	p.Run("nightly", "batch", t0.Add(115*time.Minute), time.Second, v1.Outcome_OUTCOME_FAILED, 2, 90*time.Second)
	p.Alert(v1.Severity_SEVERITY_CRITICAL, "run_failed", "nightly", false)
	p.LogStats("batch", "nightly", "lr-1", t0.Add(2*time.Hour), map[string]int64{"info": 30, "error": 6}, 3000)
	p.Stats("logrouter", "lr-1", t0.Add(120*time.Minute), t0, map[string]map[string]int64{
		"s3.0": {"proc_records": 100, "errors": 1, "retries": 5, "retries_failed": 1, "retried_records": 6, "dropped_records": 3}})
	require.Eventually(t, func() bool {
		m := exportertest.Flat(t, e.URL)
		return m["schedule.nightly.failed"] == 1 && m["output.s3.0.proc_records"] == 100 && m["alerts.critical"] == 1 && m["schedule.nightly.log_records"] == 78
	}, 10*time.Second, 20*time.Millisecond)

	// Second run, a minute after the first: the state's _lastTime is set to
	// exactly 60 s before the second run's clock second (retried in the rare
	// case the second ticks over in between), so the rates are per-minute
	// deltas exactly.
	var second []byte
	for attempt := 0; ; attempt++ {
		var state map[string]float64
		require.NoError(t, json.Unmarshal(firstRaw, &state))
		now := time.Now().Unix()
		state["_lastTime"] = float64(now - 60)
		raw, err := json.Marshal(state)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(tempfile, raw, 0o600))
		second = plugin(t, nil, args...)
		lines := exportertest.ParseOutput(t, second)
		if lines["taskyard.alerts.critical"].Time == now || attempt == 4 {
			require.Equal(t, now, lines["taskyard.alerts.critical"].Time)
			break
		}
	}
	golden(t, "values-second.golden", normalize(second))

	// Wildcard keys: every printed name is matched by a graph of the meta
	// output the way Mackerel matches them, no name is printed twice, and
	// every graph metric is printed.
	checkWildcards(t, meta, exportertest.ParseOutput(t, second))
}

func checkWildcards(t *testing.T, meta []byte, printed map[string]exportertest.Line) {
	t.Helper()
	body := strings.TrimPrefix(string(meta), "# mackerel-agent-plugin\n")
	var def struct {
		Graphs map[string]struct {
			Unit    string `json:"unit"`
			Metrics []struct {
				Name string `json:"name"`
			} `json:"metrics"`
		} `json:"graphs"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &def))
	type pat struct {
		name string
		re   *regexp.Regexp
		hits int
	}
	var pats []*pat
	for g, gd := range def.Graphs {
		require.True(t, strings.HasPrefix(g, "taskyard."), g)
		for _, m := range gd.Metrics {
			full := g + "." + m.Name
			expr := regexp.QuoteMeta(full)
			expr = strings.NewReplacer(`\*`, `[-a-zA-Z0-9_]+`, `#`, `[-a-zA-Z0-9_]+`).Replace(expr)
			pats = append(pats, &pat{name: full, re: regexp.MustCompile(`^` + expr + `$`)})
		}
	}
	for name := range printed {
		require.Regexp(t, `^[-a-zA-Z0-9_.]+$`, name)
		var matched []string
		for _, p := range pats {
			if p.re.MatchString(name) {
				matched = append(matched, p.name)
				p.hits++
			}
		}
		require.Len(t, matched, 1, "metric %s must match exactly one graph metric, matched %v", name, matched)
	}
	for _, p := range pats {
		require.NotZero(t, p.hits, "graph metric %s matches no printed metric", p.name)
	}
}

func TestPluginUnreachableExporterFails(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-url=http://127.0.0.1:1/api/v1/metrics", "-tempfile="+filepath.Join(t.TempDir(), "s"))
	cmd.Env = append(os.Environ(), "TASKYARD_PLUGIN_MAIN=1")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "read exporter http://127.0.0.1:1/api/v1/metrics")
}
