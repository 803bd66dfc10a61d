package output

import (
	"strings"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
)

// Template renders names from an event: {cluster}, {service},
// {container}, {task}, {level} and, from the event time in UTC, %Y %m %d
// %H %M %S. Other text is kept; {unique} is left for the caller.
type Template string

// Render fills the template for e.
func (t Template) Render(e *event.Event) string {
	s := string(t)
	if !strings.ContainsAny(s, "{%") {
		return s
	}
	var b strings.Builder
	ut := e.Time.UTC()
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+1 < len(s) {
			switch s[i+1] {
			case 'Y':
				b.WriteString(ut.Format("2006"))
			case 'm':
				b.WriteString(ut.Format("01"))
			case 'd':
				b.WriteString(ut.Format("02"))
			case 'H':
				b.WriteString(ut.Format("15"))
			case 'M':
				b.WriteString(ut.Format("04"))
			case 'S':
				b.WriteString(ut.Format("05"))
			case '%':
				b.WriteByte('%')
			default:
				b.WriteByte(c)
				continue
			}
			i++
			continue
		}
		if c == '{' {
			if j := strings.IndexByte(s[i:], '}'); j > 0 {
				name := s[i+1 : i+j]
				v, ok := "", true
				switch name {
				case "cluster":
					v = e.Cluster
				case "service":
					v = e.Service
				case "container":
					v = e.Container
				case "task":
					v = e.Task
				case "level":
					v = e.Level
				default:
					ok = false
				}
				if ok {
					b.WriteString(safe(v))
					i += j
					continue
				}
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// safe keeps a tag usable inside a key or name: '/' and control
// characters become '_', empty becomes "_".
func safe(v string) string {
	if v == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, v)
}
