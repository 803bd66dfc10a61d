// Command mackerel-plugin-taskyard is a mackerel-agent metric plugin reading
// the taskyard exporter's /api/v1/metrics: runs per schedule by outcome,
// running runs, last duration, time since the last success, cluster tasks
// against their limit, log records per service and the log outputs'
// counters, with graph definitions (printed when MACKEREL_AGENT_PLUGIN_META
// is set).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	mp "github.com/mackerelio/go-mackerel-plugin"

	"github.com/taskyard/taskyard/services/exporter/internal/mackerel"
	"github.com/taskyard/taskyard/services/exporter/internal/metricsjson"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("mackerel-plugin-taskyard", flag.ContinueOnError)
	url := fs.String("url", metricsjson.DefaultURL, "URL of the exporter's /api/v1/metrics")
	prefix := fs.String("metric-key-prefix", "taskyard", "first token of every metric name")
	tempfile := fs.String("tempfile", "", "file keeping the previous values for per-minute rates (default: in $MACKEREL_PLUGIN_WORKDIR or the temp dir, named after the prefix and arguments)")
	timeout := fs.Duration("timeout", 5*time.Second, "HTTP timeout")
	var hs headers
	fs.Var(&hs, "header", `HTTP request header "Name: value" (repeatable)`)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: mackerel-plugin-taskyard [-url URL] [-header 'Name: value'] [-metric-key-prefix taskyard] [-tempfile FILE]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	h, err := metricsjson.Headers(hs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mackerel-plugin-taskyard:", err)
		return 2
	}
	helper := mp.NewMackerelPlugin(mackerel.Plugin{URL: *url, Header: h, Prefix: *prefix, Timeout: *timeout})
	helper.Tempfile = *tempfile
	helper.Run()
	return 0
}
