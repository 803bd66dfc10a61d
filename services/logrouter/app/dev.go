package app

import (
	"path/filepath"
	"time"

	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/logrouter/internal/lrconfig"
)

// DevConfig is the logrouter of `taskyard dev`: the forward input on
// forwardListen (and an HTTP NDJSON input on httpInputListen when not
// empty), every record to logsDir/taskyard.ndjson (rotating, JSON format)
// and to stdout, spools under dataDir/spool.
func DevConfig(nc natsconn.Config, forwardListen, httpInputListen, httpListen, logsDir, dataDir string) Config {
	f := &lrconfig.File{
		Inputs: lrconfig.Inputs{Forward: &lrconfig.Forward{Listen: forwardListen}},
		Outputs: []lrconfig.Output{
			{Name: "file", Type: "file", File: &lrconfig.FileOut{Path: filepath.Join(logsDir, "taskyard.ndjson")}},
			{Name: "stdout", Type: "stdout"},
		},
		Spool:    lrconfig.Spool{Dir: filepath.Join(dataDir, "spool"), MaxBytes: 256 << 20},
		Pipeline: lrconfig.Pipeline{DefaultCluster: "local"},
	}
	if httpInputListen != "" {
		f.Inputs.HTTP = &lrconfig.HTTPInput{Listen: httpInputListen}
	}
	return Config{
		NATS:          nc,
		Routing:       f,
		Instance:      "dev",
		HTTPListen:    httpListen,
		DrainTimeout:  5 * time.Second,
		StatsInterval: 10 * time.Second,
	}
}

// ParseSize reads a byte size as the config file does (1048576, 512KiB,
// 64MiB, 1GiB).
func ParseSize(s string) (int64, error) { return lrconfig.ParseSize(s) }
