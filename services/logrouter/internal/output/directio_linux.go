package output

import (
	"os"
	"syscall"
)

// openDirect opens path for writing with O_DIRECT (see File.DirectIO).
// A variable for the tests of the fallback.
var openDirect = func(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
}
