package main

import "github.com/taskyard/taskyard/services/kit/lifecycle"

// devScheduler builds the in-process scheduler for taskyard dev (placeholder until it lands:
// a nil actor is not started).
func devScheduler(env devEnv) (lifecycle.Actor, error) { return nil, nil }
