package main

import "github.com/spf13/pflag"

// pflagFlag is cobra's flag type.
type pflagFlag = pflag.Flag
