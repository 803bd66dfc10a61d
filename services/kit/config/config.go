// Package config binds a daemon's Config struct to command-line flags with
// TASKYARD_* environment variable fallbacks, and collects the problems a
// Validate method finds so they are all reported at once.
//
// Precedence: a flag given on the command line wins, then the environment
// variable, then the default. The variable of flag "nats-url" is
// TASKYARD_NATS_URL; every flag's usage line names its variable.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Flags registers flags on a FlagSet and remembers which environment
// variable backs each.
type Flags struct {
	fs     *flag.FlagSet
	lookup func(string) (string, bool)
	envs   map[string]string // flag name -> env var
}

// New returns Flags on fs. lookup reads the environment (os.LookupEnv when
// nil), so tests can pass their own.
func New(fs *flag.FlagSet, lookup func(string) (string, bool)) *Flags {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &Flags{fs: fs, lookup: lookup, envs: map[string]string{}}
}

// FlagSet returns the underlying flag set.
func (f *Flags) FlagSet() *flag.FlagSet { return f.fs }

// EnvName is the environment variable backing flag name.
func EnvName(name string) string {
	return "TASKYARD_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

func (f *Flags) register(name, usage string) string {
	env := EnvName(name)
	f.envs[name] = env
	return usage + " (env " + env + ")"
}

// String binds a string flag.
func (f *Flags) String(p *string, name, def, usage string) {
	f.fs.StringVar(p, name, def, f.register(name, usage))
}

// Int binds an int flag.
func (f *Flags) Int(p *int, name string, def int, usage string) {
	f.fs.IntVar(p, name, def, f.register(name, usage))
}

// Bool binds a bool flag.
func (f *Flags) Bool(p *bool, name string, def bool, usage string) {
	f.fs.BoolVar(p, name, def, f.register(name, usage))
}

// Duration binds a duration flag (Go syntax: 10s, 5m, 1h30m).
func (f *Flags) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	f.fs.DurationVar(p, name, def, f.register(name, usage))
}

// Float binds a float flag.
func (f *Flags) Float(p *float64, name string, def float64, usage string) {
	f.fs.Float64Var(p, name, def, f.register(name, usage))
}

// List binds a comma-separated list flag; repeating the flag appends.
func (f *Flags) List(p *[]string, name string, def []string, usage string) {
	*p = append([]string(nil), def...)
	f.fs.Var(&listValue{p: p, def: true}, name, f.register(name, usage+" (comma-separated)"))
}

type listValue struct {
	p   *[]string
	def bool // still holding the default: the first Set replaces it
}

func (l *listValue) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *listValue) Set(s string) error {
	if l.def {
		*l.p = nil
		l.def = false
	}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.p = append(*l.p, part)
		}
	}
	return nil
}

// Parse parses args, then fills every flag not given on the command line
// from its environment variable. A malformed variable is an error naming it.
func (f *Flags) Parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	return f.ApplyEnv(set)
}

// ApplyEnv fills every flag not named in set (the flags given on the
// command line) from its environment variable. Parse calls it; CLIs whose
// flag parsing is done elsewhere (cobra) call it themselves.
func (f *Flags) ApplyEnv(set map[string]bool) error {
	names := make([]string, 0, len(f.envs))
	for n := range f.envs {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		if set[name] {
			continue
		}
		env := f.envs[name]
		v, ok := f.lookup(env)
		if !ok {
			continue
		}
		if err := f.fs.Set(name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s=%q: %w", env, v, err))
		}
	}
	return errors.Join(errs...)
}

// Problems collects configuration problems; Err returns them joined, one
// per line, or nil.
type Problems []string

// Addf records a problem.
func (p *Problems) Addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// Check records msg when ok is false.
func (p *Problems) Check(ok bool, format string, args ...any) {
	if !ok {
		p.Addf(format, args...)
	}
}

// Err returns nil when there are no problems, else an error listing them.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return &InvalidError{Problems: append([]string(nil), p...)}
}

// InvalidError is returned by Validate methods.
type InvalidError struct{ Problems []string }

func (e *InvalidError) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// ParseBoolEnv is strconv.ParseBool for callers reading a variable directly.
func ParseBoolEnv(s string) (bool, error) { return strconv.ParseBool(s) }
