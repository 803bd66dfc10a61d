// Command taskyard is the operator CLI of taskyard: validate and apply
// schedules, see their next fires, trigger runs, tail events and logs, read
// run history, and run the whole system in one process (`taskyard dev`).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "taskyard:", err)
		os.Exit(1)
	}
}

// exitError ends the command with a given exit code after printing msg
// (which may be empty when the command printed its own report).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
