package main

import "github.com/spf13/cobra"

// addExitwatchCommands adds the exitwatch CLI subcommands (placeholder until the exitwatch lands).
func addExitwatchCommands(root, schedule *cobra.Command, g *globals) {}
