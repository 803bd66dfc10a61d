package main

import "github.com/spf13/cobra"

// addLogrouterCommands adds the logrouter CLI subcommands (placeholder until the logrouter lands).
func addLogrouterCommands(root, schedule *cobra.Command, g *globals) {}
