// Command demojob is the demo job image of docker-compose.yml: it logs
// JSON lines at several levels (debug, info, warn, error) plus one plain
// line on stderr, and exits with the configured code.
//
//	demojob [-exit 0] [-lines 4] [-sleep 0s]
//
// Every flag also reads an environment variable (DEMO_EXIT_CODE,
// DEMO_LINES, DEMO_SLEEP), so a schedule can set them in `environment`.
// Each JSON line carries the run id (TASKYARD_RUN_ID) and a sequence
// number, so a test can find every line it expects.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	exit := flag.Int("exit", envInt("DEMO_EXIT_CODE", 0), "exit code (env DEMO_EXIT_CODE)")
	lines := flag.Int("lines", envInt("DEMO_LINES", 4), "JSON lines to log, cycling through debug/info/warn/error (env DEMO_LINES)")
	sleep := flag.Duration("sleep", envDuration("DEMO_SLEEP", 0), "time to run before exiting (env DEMO_SLEEP)")
	flag.Parse()

	levels := []string{"debug", "info", "warn", "error"}
	run := os.Getenv("TASKYARD_RUN_ID")
	enc := json.NewEncoder(os.Stdout)
	for i := 0; i < *lines; i++ {
		_ = enc.Encode(map[string]any{
			"level":  levels[i%len(levels)],
			"msg":    "demo line",
			"seq":    i,
			"run_id": run,
			"ts":     time.Now().UTC().Format(time.RFC3339Nano),
		})
	}
	if *sleep > 0 {
		time.Sleep(*sleep)
	}
	fmt.Fprintf(os.Stderr, "demojob: plain stderr line, exiting with %d\n", *exit)
	os.Exit(*exit)
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

func envDuration(k string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return v
	}
	return def
}
