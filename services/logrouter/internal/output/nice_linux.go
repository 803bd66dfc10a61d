package output

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"time"
)

// niceSupported reports whether lowerThreadPriority can work here.
const niceSupported = true

// lowerThreadPriority locks the calling goroutine to its OS thread and
// raises that thread's nice value by n (at most to 19), so that the
// kernel prefers the daemon's other threads — the inputs' — whenever the
// CPUs are short. Linux gives every thread its own nice value; raising it
// needs no privilege.
//
// The goroutine must stay locked until it returns: the thread then exits
// with it instead of going back to the runtime's pool at a low priority.
// Threads the runtime starts while this goroutine runs are cloned from its
// template thread, not from this one, so they do not inherit the nice
// value (runtime.newm).
//
// The main thread is never lowered: the runtime cannot end it (it parks it
// for good instead), and tools such as top show the main thread's nice
// value as the process's. A goroutine found on it gives it up and tries
// again.
func lowerThreadPriority(n int) (nice int, err error) {
	var tid int
	for try := 0; ; try++ {
		runtime.LockOSThread()
		if tid = syscall.Gettid(); tid != syscall.Getpid() {
			break
		}
		runtime.UnlockOSThread()
		if try == 100 {
			return 0, errors.New("only the main thread was free to run the output")
		}
		time.Sleep(time.Millisecond)
	}
	// The system call returns 20 - nice (1 … 40), not the nice value.
	raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	if err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("getpriority: %w", err)
	}
	nice = min(20-raw+n, 19)
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil {
		runtime.UnlockOSThread() // unchanged: the thread may serve others again
		return 0, fmt.Errorf("setpriority: %w", err)
	}
	return nice, nil
}

// threadNice is the nice value of the calling thread (tests).
func threadNice() (int, error) {
	raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	return 20 - raw, err
}
