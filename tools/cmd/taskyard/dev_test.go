package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// assertEventually polls cond until it holds or timeout passes.
func assertEventually(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return cond()
}

// freeAddrs returns n distinct free loopback addresses. The listeners stay
// open until all n are picked, so the kernel cannot hand one port out twice.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// TestDevRunsExamples is `make run`: taskyard dev with examples/, every
// daemon in-process on an embedded NATS. The failing example, triggered by
// hand with `taskyard run`, must reach the alert webhook as a run_failed
// naming exit code 3 and its runbook; the heartbeat example must succeed,
// its JSON log lines must land in the logs directory tagged and levelled,
// and the exporter must count both. Ctrl-C stops everything cleanly.
func TestDevRunsExamples(t *testing.T) {
	var (
		mu     sync.Mutex
		alerts []map[string]any
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var a map[string]any
		if json.Unmarshal(b, &a) == nil {
			mu.Lock()
			alerts = append(alerts, a)
			mu.Unlock()
		}
	}))
	defer hook.Close()

	data := t.TempDir()
	addrs := freeAddrs(t, 6)
	natsAddr, metrics := addrs[0], addrs[1]
	natsURL := "nats://" + natsAddr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errOut := &syncBuffer{}
	cmd := newRootCmd(io.Discard, errOut)
	cmd.SetArgs([]string{"dev",
		"--schedules", "../../../examples/schedules", "--clusters", "../../../examples/clusters",
		"--data", data, "--nats-listen", natsAddr, "--forward-listen", addrs[2],
		"--metrics-listen", metrics, "--scheduler-http", addrs[3], "--exitwatch-http", addrs[4],
		"--logrouter-http", addrs[5], "--alert-webhook", hook.URL,
	})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		select {
		case err := <-done:
			t.Logf("taskyard dev had stopped: %v", err)
		default:
		}
		for _, l := range strings.Split(errOut.String(), "\n") {
			if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
				t.Log(l)
			}
		}
	})

	var metricsErr error
	getMetrics := func() map[string]any {
		resp, err := http.Get("http://" + metrics + "/api/v1/metrics")
		if err != nil {
			metricsErr = err
			return nil
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			metricsErr = err
			return nil
		}
		return m
	}
	require.Eventually(t, func() bool { return getMetrics() != nil }, 60*time.Second, 100*time.Millisecond, "exporter up")

	// The schedules are applied by dev at start; trigger the failing one.
	require.Eventually(t, func() bool {
		_, _, code := runCLI(t, ctx, "run", "flaky-export", "--nats-url", natsURL)
		return code == 0
	}, 30*time.Second, 500*time.Millisecond, "taskyard run flaky-export")

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range alerts {
			f, _ := a["fields"].(map[string]any)
			if a["kind"] == "run_failed" && a["schedule"] == "flaky-export" && f["exit_code"] == "3" &&
				strings.HasPrefix(a["runbookUrl"].(string), "https://") {
				return true
			}
		}
		return false
	}, 60*time.Second, 100*time.Millisecond, "run_failed for flaky-export at the webhook")

	count := func(m map[string]any, sched, key string) float64 {
		s, _ := m["schedule"].(map[string]any)
		e, _ := s[sched].(map[string]any)
		v, _ := e[key].(float64)
		return v
	}
	var last map[string]any
	if !assertEventually(func() bool {
		last = getMetrics()
		return count(last, "heartbeat", "succeeded") >= 1 && count(last, "flaky-export", "failed") >= 1 &&
			count(last, "heartbeat", "log_records") >= 1
	}, 90*time.Second) {
		s, _ := json.Marshal(last["schedule"])
		t.Fatalf("exporter did not count the runs; schedule metrics: %s (last error %v)", s, metricsErr)
	}

	// The heartbeat's JSON lines went through the logrouter to the file output.
	var sawLevels map[string]bool
	require.Eventually(t, func() bool {
		sawLevels = map[string]bool{}
		files, _ := filepath.Glob(filepath.Join(data, "logs", "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) != nil {
					continue
				}
				if rec["cluster"] == "dev" && rec["service"] == "heartbeat" && rec["container"] != "" && rec["task"] != "" {
					sawLevels[rec["level"].(string)] = true
				}
			}
		}
		return sawLevels["info"] && sawLevels["warn"]
	}, 60*time.Second, 200*time.Millisecond, "tagged heartbeat lines in the logs dir")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(40 * time.Second):
		var buf strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("taskyard dev did not stop within 40s of Ctrl-C; goroutines:\n%s", buf.String())
	}
	// The daemons' logs went to the command's error stream as JSON lines.
	require.Contains(t, errOut.String(), `"msg":"taskyard dev running"`)
}
