//go:build !linux

package output

import "os"

// openDirect: direct I/O is used on Linux only (see File.DirectIO).
var openDirect = func(string) (*os.File, error) { return nil, errNoDirectIO }
