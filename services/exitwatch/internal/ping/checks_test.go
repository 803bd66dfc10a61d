package ping_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ping"
)

func TestParseExample(t *testing.T) {
	t.Parallel()
	f, err := ping.Load("../../../../examples/checks.yml")
	require.NoError(t, err)
	require.Len(t, f.Checks, 2)
	b := f.Checks[0]
	require.Equal(t, "nightly-backup", b.Name)
	require.Equal(t, "db-hosts", b.Cluster)
	require.Equal(t, 30*time.Minute, b.Grace)
	require.NotNil(t, b.Expr)
	berlin, _ := time.LoadLocation("Europe/Berlin")
	require.Equal(t, time.Date(2026, 11, 22, 2, 30, 0, 0, berlin), b.Expr.Next(time.Date(2026, 11, 21, 12, 0, 0, 0, berlin)).In(berlin))
	c := f.Checks[1]
	require.Equal(t, 24*time.Hour, c.Period)
	require.Equal(t, ping.DefaultCluster, c.Cluster)
	require.Equal(t, v1.Severity_SEVERITY_WARNING, c.Severity)
	require.True(t, c.Enabled)
}

func TestParseProblems(t *testing.T) {
	t.Parallel()
	_, err := ping.Parse("checks.yml", []byte(`checks:
  - name: "bad name"
    period: 1h
  - name: both
    period: 1h
    schedule: cron(0 3 * * ? *)
  - name: neither
  - name: badcron
    schedule: cron(0 3 * *)
    timezone: Mars/Olympus
  - name: once
    schedule: at(2026-12-01T00:00:00)
  - name: both
    period: 1h
    severity: loud
    runbook: wiki/x
    grace: -1m
`))
	require.Error(t, err)
	for _, want := range []string{
		`checks.yml:2: checks[0].name: name "bad name" must start`,
		`checks.yml:4: checks[1].period: give period or schedule, not both`,
		`checks.yml:7: checks[2].period: give period (e.g. 24h) or schedule`,
		`checks.yml:8: checks[3].timezone: unknown time zone "Mars/Olympus"`,
		`checks.yml:8: checks[3].schedule:`,
		`checks.yml:11: checks[4].schedule: at(...) fires once`,
		`checks.yml:13: checks[5].name: "both" is defined twice`,
		`checks.yml:13: checks[5].severity: unknown severity "loud"`,
		`checks.yml:13: checks[5].runbook: "wiki/x" must be an http(s) URL`,
		`checks.yml:13: checks[5].grace: must not be negative`,
	} {
		require.ErrorContains(t, err, want)
	}
	_, err = ping.Parse("checks.yml", []byte("checks:\n  - name: a\n    perod: 1h\n"))
	require.ErrorContains(t, err, "line 3: field perod not found")
}

func FuzzParseChecks(f *testing.F) {
	if data, err := os.ReadFile("../../../../examples/checks.yml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("checks:\n  - {name: a, period: 1h}\n"))
	f.Add([]byte("checks:\n  - {name: b, schedule: '0 3 * * *', timezone: Asia/Tokyo, grace: 5m}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := ping.Parse("checks.yml", data)
		if err != nil {
			return
		}
		for _, c := range file.Checks {
			if c.Period <= 0 && c.Expr == nil {
				t.Fatalf("check %q has neither period nor schedule", c.Name)
			}
			if c.Grace <= 0 {
				t.Fatalf("check %q has grace %s", c.Name, c.Grace)
			}
		}
	})
}
