package schedule

import (
	"testing"
	"time"
)

// FuzzParseExpr checks that parsing never panics and that any expression
// that parses yields, from a few instants, a Next strictly after the instant
// (or zero), quickly.
func FuzzParseExpr(f *testing.F) {
	for _, s := range []string{
		"rate(5 minutes)", "rate(1 second)", "rate(1000000 days)",
		"cron(0 3 ? * MON-FRI *)", "cron(0/15 * * * ? *)", "cron(0 0 L * ? *)",
		"cron(0 0 LW * ? 2026-2030)", "cron(0 0 15W * ? *)", "cron(0 0 ? * 6#3 *)",
		"cron(0 0 ? * FRIL *)", "cron(0 0 30 2 ? *)", "cron(59 23 31 12 ? 2199)",
		"*/5 * * * *", "0 0 13 * 5", "0 0 * * 7", "30 2 * mar sun",
		"at(2026-11-01T01:30:00)", "at(2026-03-08T02:30:00)",
		"", "cron(", "rate()", "cron(* * * * * *)", "0-59/0 * * * *",
	} {
		f.Add(s, "America/New_York", int64(0))
		f.Add(s, "Europe/London", int64(1_700_000_000))
	}
	zones := map[string]*time.Location{}
	f.Fuzz(func(t *testing.T, s, zone string, anchorUnix int64) {
		loc, ok := zones[zone]
		if !ok {
			var err error
			if loc, err = time.LoadLocation(zone); err != nil {
				loc = time.UTC
			}
			zones[zone] = loc
		}
		// Keep the anchor within the years Time arithmetic is meaningful for.
		anchor := time.Unix(anchorUnix%(400*365*86400), 0)
		e, err := ParseExpr(s, loc, anchor)
		if err != nil {
			return
		}
		if e.String() == "" || e.Kind() == "" {
			t.Fatalf("%q: empty String or Kind", s)
		}
		again, err := ParseExpr(e.String(), loc, anchor)
		if err != nil || again.String() != e.String() {
			t.Fatalf("%q: String() %q does not parse back to itself: %v", s, e.String(), err)
		}
		for _, after := range []time.Time{
			{},
			time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC),
			time.Date(2026, 3, 8, 6, 59, 30, 0, time.UTC),
			time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC),
			time.Date(2199, 12, 31, 23, 59, 0, 0, time.UTC),
		} {
			start := time.Now()
			next := e.Next(after)
			if d := time.Since(start); d > time.Second {
				t.Fatalf("%q: Next(%v) took %v", s, after, d)
			}
			if !next.IsZero() && !next.After(after) {
				t.Fatalf("%q: Next(%v) = %v, not after", s, after, next)
			}
		}
	})
}
