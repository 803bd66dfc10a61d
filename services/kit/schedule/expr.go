package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Expression kinds returned by [Expr.Kind].
const (
	KindRate    = "rate"
	KindCron    = "cron"
	KindCrontab = "crontab"
	KindAt      = "at"
)

// Search bounds shared by every calendar expression: EventBridge's year field
// accepts 1970-2199, and crontab expressions are searched over the same span
// so that an impossible expression gives up in bounded time.
const (
	minYear = 1970
	maxYear = 2199
)

// maxRateValue caps N in rate(N unit) so that interval arithmetic cannot
// overflow; a million days is still ~2700 years.
const maxRateValue = 1_000_000

// Expr is a parsed schedule expression.
type Expr interface {
	// Next returns the first fire time strictly after after, in the
	// expression's location, or the zero Time when there is none.
	Next(after time.Time) time.Time
	// String returns the expression in its canonical spelling (single
	// spaces, as accepted by ParseExpr).
	String() string
	// Kind returns "rate", "cron", "crontab" or "at".
	Kind() string
}

// ParseExpr parses a schedule expression: EventBridge rate(...), cron(...)
// and at(...), or a 5-field crontab line. loc is the time zone calendar
// expressions are evaluated in and fire times are returned in (nil means
// UTC). anchor is the origin of rate expressions, which fire at
// anchor + k*interval; the zero anchor means the Unix epoch.
func ParseExpr(s string, loc *time.Location, anchor time.Time) (Expr, error) {
	if loc == nil {
		loc = time.UTC
	}
	src := strings.TrimSpace(s)
	if src == "" {
		return nil, exprErrorf("empty expression")
	}
	for _, kind := range []string{KindRate, KindCron, KindAt} {
		prefix := kind + "("
		if !strings.HasPrefix(src, prefix) {
			continue
		}
		if !strings.HasSuffix(src, ")") {
			return nil, exprErrorf("%s expression %q: missing closing parenthesis", kind, src)
		}
		body := strings.TrimSpace(src[len(prefix) : len(src)-1])
		switch kind {
		case KindRate:
			return parseRate(body, loc, anchor)
		case KindCron:
			return parseCron(body, loc, false)
		default:
			return parseAt(body, loc)
		}
	}
	if i := strings.IndexByte(src, '('); i > 0 && !strings.ContainsAny(src[:i], " \t") {
		return nil, exprErrorf("unknown expression kind %q (want rate, cron, at or a 5-field crontab)", src[:i])
	}
	return parseCron(src, loc, true)
}

// rateExpr fires every interval, anchored at anchor.
type rateExpr struct {
	value    int
	unit     string // canonical unit as written: "minute", "minutes", ...
	interval int64  // seconds
	anchor   time.Time
	loc      *time.Location
}

var rateUnits = map[string]int64{
	"second": 1,
	"minute": 60,
	"hour":   3600,
	"day":    86400,
}

func parseRate(body string, loc *time.Location, anchor time.Time) (Expr, error) {
	parts := strings.Fields(body)
	if len(parts) != 2 {
		return nil, exprErrorf("rate expression %q: want rate(<value> <unit>)", body)
	}
	value, err := strconv.Atoi(parts[0])
	if err != nil || parts[0][0] == '+' || parts[0][0] == '-' {
		return nil, exprErrorf("rate value: %q is not a positive integer", parts[0])
	}
	if value < 1 || value > maxRateValue {
		return nil, exprErrorf("rate value: %q out of range 1-%d", parts[0], maxRateValue)
	}
	unit := parts[1]
	singular := strings.TrimSuffix(unit, "s")
	secs, ok := rateUnits[singular]
	if !ok {
		return nil, exprErrorf("rate unit: %q is not one of second(s), minute(s), hour(s), day(s)", unit)
	}
	// Like EventBridge: singular unit for 1, plural otherwise.
	if value == 1 && unit != singular {
		return nil, exprErrorf("rate unit: %q must be singular (%q) when the value is 1", unit, singular)
	}
	if value != 1 && unit == singular {
		return nil, exprErrorf("rate unit: %q must be plural (%q) when the value is %d", unit, singular+"s", value)
	}
	if anchor.IsZero() {
		anchor = time.Unix(0, 0)
	}
	return &rateExpr{value: value, unit: unit, interval: int64(value) * secs, anchor: anchor, loc: loc}, nil
}

func (r *rateExpr) Kind() string   { return KindRate }
func (r *rateExpr) String() string { return fmt.Sprintf("rate(%d %s)", r.value, r.unit) }

// Next returns anchor + k*interval for the smallest integer k (negative k
// included) that lands strictly after after. It is pure arithmetic on
// absolute time, so DST changes do not affect it.
func (r *rateExpr) Next(after time.Time) time.Time {
	// Work in whole seconds plus the anchor's sub-second part to avoid
	// time.Duration overflow (after may be centuries away from anchor).
	ds := after.Unix() - r.anchor.Unix()
	dn := after.Nanosecond() - r.anchor.Nanosecond()
	if dn < 0 {
		ds--
	}
	// after - anchor = ds + f seconds with 0 <= f < 1, so the number of whole
	// intervals elapsed is floor(ds / interval).
	k := floorDiv(ds, r.interval) + 1
	return time.Unix(r.anchor.Unix()+k*r.interval, int64(r.anchor.Nanosecond())).In(r.loc)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// atExpr fires once.
type atExpr struct {
	text string
	at   time.Time
}

const atLayout = "2006-01-02T15:04:05"

func parseAt(body string, loc *time.Location) (Expr, error) {
	wall, err := time.Parse(atLayout, body)
	if err != nil {
		return nil, exprErrorf("at expression: %q is not YYYY-MM-DDThh:mm:ss", body)
	}
	t, ok := resolveWall(wall.Year(), wall.Month(), wall.Day(), wall.Hour(), wall.Minute(), wall.Second(), loc)
	if !ok {
		return nil, exprErrorf("at expression: %s does not exist in %s (skipped by a daylight saving change)", body, loc)
	}
	return &atExpr{text: body, at: t}, nil
}

func (a *atExpr) Kind() string   { return KindAt }
func (a *atExpr) String() string { return "at(" + a.text + ")" }

// Next returns the at time if it is strictly after after, else zero.
func (a *atExpr) Next(after time.Time) time.Time {
	if a.at.After(after) {
		return a.at
	}
	return time.Time{}
}

// resolveWall returns the absolute instant at which the wall clock in loc
// reads the given date and time. When the wall time occurs twice (DST
// fall-back) the first occurrence is returned; when it does not occur at all
// (spring-forward gap) ok is false. This is EventBridge Scheduler's rule.
func resolveWall(y int, mo time.Month, d, h, mi, sec int, loc *time.Location) (t time.Time, ok bool) {
	wall := time.Date(y, mo, d, h, mi, sec, 0, time.UTC).Unix()
	guess := time.Date(y, mo, d, h, mi, sec, 0, loc)
	// Any instant showing this wall time lies in the zone period containing
	// guess or in one of its neighbours; try each period's offset.
	probes := [3]time.Time{guess}
	n := 1
	if start, end := guess.ZoneBounds(); !start.IsZero() || !end.IsZero() {
		if !start.IsZero() {
			probes[n] = start.Add(-time.Second)
			n++
		}
		if !end.IsZero() {
			probes[n] = end
			n++
		}
	}
	for _, p := range probes[:n] {
		_, off := p.Zone()
		u := time.Unix(wall-int64(off), 0).In(loc)
		if _, o := u.Zone(); o != off {
			continue
		}
		if !ok || u.Before(t) {
			t, ok = u, true
		}
	}
	return t, ok
}
