package main

import (
	"time"

	"github.com/spf13/cobra"
)

// addSchedulerCommands adds the scheduler CLI subcommands (placeholder until the scheduler lands).
func addSchedulerCommands(root, schedule *cobra.Command, g *globals) {}

// scheduleNextRemote asks the scheduler for an applied schedule's next fires
// (placeholder until the scheduler lands).
func scheduleNextRemote(cmd *cobra.Command, g *globals, name string, n int, from time.Time) error {
	return &exitError{code: 1, msg: "no file named " + name + " (asking the scheduler by name needs the scheduler daemon)"}
}
