//go:build !linux

package output

import "errors"

const niceSupported = false

var errNoThreadNice = errors.New("per-thread CPU priority is implemented on Linux only")

func lowerThreadPriority(int) (int, error) { return 0, errNoThreadNice }

func threadNice() (int, error) { return 0, errNoThreadNice }
