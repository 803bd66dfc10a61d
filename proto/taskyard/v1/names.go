package taskyardv1

import (
	"fmt"
	"regexp"
)

// NamePattern is the rule for schedule, cluster profile and ping check
// names: safe as a NATS subject token, a KV key and a Mackerel metric name
// segment.
const NamePattern = `^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidName reports whether s follows NamePattern.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// CheckName returns an error naming what is wrong with s, or nil.
func CheckName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("name is empty")
	case len(s) > 64:
		return fmt.Errorf("name %q is %d characters long, at most 64 are allowed", s, len(s))
	case !nameRE.MatchString(s):
		return fmt.Errorf("name %q must start with a letter or digit and contain only letters, digits, '_' and '-'", s)
	}
	return nil
}
