//go:build !linux

package output

import (
	"errors"
	"os"
)

// openDirect: direct I/O is used on Linux only (see File.DirectIO).
var openDirect = func(string) (*os.File, error) {
	return nil, errors.New("direct I/O is implemented for Linux only")
}
