package main

import "github.com/taskyard/taskyard/services/kit/lifecycle"

// devExitwatch builds the in-process exitwatch for taskyard dev (placeholder until it lands:
// a nil actor is not started).
func devExitwatch(env devEnv) (lifecycle.Actor, error) { return nil, nil }
