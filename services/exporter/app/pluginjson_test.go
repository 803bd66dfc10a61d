package app_test

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exporter/internal/aggregate"
	"github.com/taskyard/taskyard/services/exporter/internal/exportertest"
)

// documented reads the mackerel-plugin-json command line's -prefix and
// -diff from examples/mackerel-plugin-json.md, so the example is what is
// tested.
func documented(t *testing.T) (prefix string, diff *regexp.Regexp) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "mackerel-plugin-json.md"))
	require.NoError(t, err)
	line := regexp.MustCompile(`(?m)^mackerel-plugin-json -url=\S+ -prefix=(\S+) -diff='([^']+)'$`).FindSubmatch(doc)
	require.NotNil(t, line, "no mackerel-plugin-json command line in examples/mackerel-plugin-json.md")
	prefix, diff = string(line[1]), regexp.MustCompile(string(line[2]))
	// The TOML forms (this file's and examples/mackerel-agent.conf's) carry
	// the same expression.
	conf, err := os.ReadFile(filepath.Join("..", "..", "..", "examples", "mackerel-agent.conf"))
	require.NoError(t, err)
	toml := regexp.MustCompile(`'-diff=([^']+)'`)
	for _, src := range [][]byte{doc, conf} {
		m := toml.FindSubmatch(src)
		require.NotNil(t, m)
		require.Equal(t, diff.String(), string(m[1]))
	}
	return prefix, diff
}

// TestMackerelPluginJSON runs the real mackerel-plugin-json v1.2.8 twice
// with the documented -diff over counters that change in between: every
// value of the document is printed both times, counters as per-minute
// rates, gauges as they are.
func TestMackerelPluginJSON(t *testing.T) {
	t.Parallel()
	prefix, diff := documented(t)
	bin := exportertest.BuildTool(t, "github.com/mackerelio/mackerel-plugin-json")

	bus := exportertest.StartBus(t)
	clock := exportertest.NewClock(t0.Add(2 * time.Hour))
	e := exportertest.Start(t, exportertest.Config(bus, "json"), clock)
	p := bus.Pub(t)
	publishScenario(p)
	var before map[string]float64
	require.Eventually(t, func() bool {
		before = exportertest.Flat(t, e.URL)
		_, statsDone := before["daemons.scheduler.s-1.up"]
		return statsDone && before["schedule.weekly.dispatch_failed"] == 1 && before["alerts.warning"] == 1
	}, 10*time.Second, 20*time.Millisecond)

	// The documented expression selects exactly the counters.
	for k := range before {
		require.Equal(t, aggregate.IsCounter(k), diff.MatchString(prefix+"."+k), "-diff on %s", k)
	}

	workdir := t.TempDir()
	url := e.URL + "/api/v1/metrics"
	run := func() map[string]exportertest.Line {
		t.Helper()
		cmd := exec.Command(bin, "-url="+url, "-prefix="+prefix, "-diff="+diff.String())
		cmd.Env = append(os.Environ(), "MACKEREL_PLUGIN_WORKDIR="+workdir)
		out, err := cmd.Output()
		require.NoError(t, err)
		return exportertest.ParseOutput(t, out)
	}
	keys := func(doc map[string]float64) []string {
		var ks []string
		for k := range doc {
			ks = append(ks, prefix+"."+k)
		}
		return ks
	}
	linesKeys := func(m map[string]exportertest.Line) []string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		return ks
	}

	// First run: nothing dropped; counters are 0 (no previous value yet).
	first := run()
	require.ElementsMatch(t, keys(before), linesKeys(first))
	for k, v := range before {
		l := first[prefix+"."+k]
		if aggregate.IsCounter(k) {
			require.Zero(t, l.Value, k)
		} else {
			require.InDelta(t, v, l.Value, 1e-6, k)
		}
	}

	// The state file is one per prefix+URL, named as in the plugin's source.
	state := filepath.Join(workdir, fmt.Sprintf("mackerel-plugin-json.%x", sha1.Sum([]byte(prefix+url))))
	raw, err := os.ReadFile(state)
	require.NoError(t, err)
	var saved struct {
		LastTimestamp int64              `json:"last_timestamp"`
		Metrics       map[string]float64 `json:"metrics"`
	}
	require.NoError(t, json.Unmarshal(raw, &saved))
	require.Equal(t, first[prefix+".alerts.critical"].Time, saved.LastTimestamp)

	// A minute of activity: two successes of nightly, one of hourly, alerts,
	// log volume, and logrouter lr-1 processed 90 more records.
	p.Finish("hourly", "batch", v1.RunID("hourly", t0.Add(90*time.Minute), v1.Trigger_TRIGGER_SCHEDULE), t0.Add(90*time.Minute), t0.Add(90*time.Minute), v1.Outcome_OUTCOME_SUCCEEDED, 0, 20*time.Minute)
	p.Run("nightly", "batch", t0.Add(100*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	p.Run("nightly", "batch", t0.Add(110*time.Minute), time.Second, v1.Outcome_OUTCOME_SUCCEEDED, 0, time.Minute)
	p.Alert(v1.Severity_SEVERITY_CRITICAL, "run_failed", "weekly", false)
	p.Alert(v1.Severity_SEVERITY_INFO, "summary", "", false)
	p.LogStats("batch", "nightly", "lr-1", t0.Add(2*time.Hour), map[string]int64{"info": 60, "error": 3}, 6000)
	p.Stats("logrouter", "lr-1", t0.Add(120*time.Minute), t0.Add(115*time.Minute), map[string]map[string]int64{"s3.0": {"proc_records": 120, "errors": 0, "retries": 1}})
	var after map[string]float64
	require.Eventually(t, func() bool {
		after = exportertest.Flat(t, e.URL)
		return after["schedule.nightly.succeeded"] == 3 && after["alerts.info"] == 1 && after["output.s3.0.proc_records"] == 225 &&
			after["schedule.nightly.log_records"] == 173 && after["schedule.hourly.succeeded"] == 1
	}, 10*time.Second, 20*time.Millisecond)

	// Make the previous run a minute older than it was, as if the agent had
	// run the plugin a minute ago.
	saved.LastTimestamp -= 60
	raw, err = json.Marshal(saved)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(state, raw, 0o600))

	second := run()
	require.ElementsMatch(t, keys(after), linesKeys(second), "second run must print every value")
	for k, v := range after {
		l := second[prefix+"."+k]
		if !aggregate.IsCounter(k) {
			require.InDelta(t, v, l.Value, 1e-6, k)
			continue
		}
		elapsed := float64(l.Time - saved.LastTimestamp)
		want := (v - before[k]) * 60 / elapsed
		require.InDelta(t, want, l.Value, 1e-6, "%s: %v → %v over %vs", k, before[k], v, elapsed)
	}
	// Spot checks, with the elapsed time the plugin saw.
	elapsed := float64(second[prefix+".alerts.info"].Time - saved.LastTimestamp)
	require.InDelta(t, 2*60/elapsed, second[prefix+".schedule.nightly.succeeded"].Value, 1e-6)
	require.InDelta(t, 90*60/elapsed, second[prefix+".output.s3.0.proc_records"].Value, 1e-6)
	require.InDelta(t, 63*60/elapsed, second[prefix+".schedule.nightly.log_records"].Value, 1e-6)
	require.InDelta(t, 1*60/elapsed, second[prefix+".alerts.critical"].Value, 1e-6)
	require.InDelta(t, 0, second[prefix+".schedule.nightly.failed"].Value, 1e-6)
	// The new gauge appears, as is.
	require.InDelta(t, after["schedule.hourly.seconds_since_last_success"], second[prefix+".schedule.hourly.seconds_since_last_success"].Value, 1e-6)
}
