// Command job is the container the docker runner's tests run: it prints
// its arguments' lines and exits as told.
//
//	job exit CODE LINE...   print the lines (stdout), exit CODE
//	job oom                 allocate memory until the kernel kills it
//	job sleep DURATION      print "sleeping" and sleep (until stopped)
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: job exit CODE LINE... | oom | sleep DURATION")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "exit":
		code, _ := strconv.Atoi(os.Args[2])
		for _, l := range os.Args[3:] {
			fmt.Println(l)
		}
		fmt.Fprintln(os.Stderr, "run "+os.Getenv("TASKYARD_RUN_ID"))
		os.Exit(code)
	case "oom":
		var keep [][]byte
		for {
			b := make([]byte, 8<<20)
			for i := range b {
				b[i] = byte(i)
			}
			keep = append(keep, b)
		}
	case "sleep":
		d, _ := time.ParseDuration(os.Args[2])
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		// From here a SIGTERM exits 143. Before, the runtime's default
		// action cannot kill PID 1 and the process exits 2 instead: tests
		// that stop the job wait for this line.
		fmt.Println("sleeping")
		select {
		case <-time.After(d):
		case <-sig:
			fmt.Println("terminated")
			os.Exit(143)
		}
	}
}
