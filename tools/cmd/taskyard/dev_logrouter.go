package main

import "github.com/taskyard/taskyard/services/kit/lifecycle"

// devLogrouter builds the in-process logrouter for taskyard dev (placeholder until it lands:
// a nil actor is not started).
func devLogrouter(env devEnv) (lifecycle.Actor, error) { return nil, nil }
