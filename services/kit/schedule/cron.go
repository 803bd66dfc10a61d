package schedule

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// cronExpr is a parsed EventBridge cron(...) or 5-field crontab expression.
// Every field is a bit set; day fields also carry the L/W/# specials.
type cronExpr struct {
	text    string // canonical text, e.g. "cron(0 3 ? * MON-FRI *)"
	crontab bool
	loc     *time.Location

	minutes uint64    // bit m, 0-59
	hours   uint64    // bit h, 0-23
	months  uint64    // bit m, 1-12
	years   [4]uint64 // bit y-minYear
	dom     domSet
	dow     dowSet

	// EventBridge: exactly one of the day fields is "?" and only the other
	// one is consulted.
	domAny, dowAny bool
	// Crontab (Vixie): a day field starting with "*" is unrestricted; when
	// both are restricted a day matches if EITHER matches.
	domStar, dowStar bool
}

type domSet struct {
	days        uint64 // bit d, 1-31
	last        bool   // L: last day of the month
	lastWeekday bool   // LW: last Monday-Friday of the month
	nearest     uint64 // bit d for dW: weekday nearest to day d
}

type dowSet struct {
	days uint64   // bit w, time.Weekday (0 = Sunday)
	last uint64   // bit w for "wL": last such weekday of the month
	nth  [7]uint8 // nth[w] bit n (1-5) for "w#n"
}

type fieldSpec struct {
	name     string
	min, max int
	names    map[string]int
}

var (
	monthNames = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}
	// EventBridge numbers days of the week 1-7 = SUN-SAT.
	cronDowNames = map[string]int{"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
	// Crontab numbers them 0-7, with both 0 and 7 meaning Sunday.
	crontabDowNames = map[string]int{"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}

	fMinute      = fieldSpec{name: "minute", min: 0, max: 59}
	fHour        = fieldSpec{name: "hour", min: 0, max: 23}
	fDom         = fieldSpec{name: "day-of-month", min: 1, max: 31}
	fMonth       = fieldSpec{name: "month", min: 1, max: 12, names: monthNames}
	fCronDow     = fieldSpec{name: "day-of-week", min: 1, max: 7, names: cronDowNames}
	fCrontabDow  = fieldSpec{name: "day-of-week", min: 0, max: 7, names: crontabDowNames}
	fYear        = fieldSpec{name: "year", min: minYear, max: maxYear}
	errFieldKind = map[bool]string{false: "cron", true: "crontab"}
)

type fieldError struct {
	kind, field, token, msg string
}

func (e *fieldError) Error() string {
	return fmt.Sprintf("%s %s: %q %s", e.kind, e.field, e.token, e.msg)
}

func (e *fieldError) Unwrap() error { return ErrInvalidExpr }

func parseCron(body string, loc *time.Location, crontab bool) (Expr, error) {
	kind := errFieldKind[crontab]
	fields := strings.Fields(body)
	want := 6
	if crontab {
		want = 5
	}
	if len(fields) != want {
		if crontab {
			return nil, exprErrorf("%q is not rate(...), cron(...), at(...) or a 5-field crontab (got %d fields)", body, len(fields))
		}
		return nil, exprErrorf("cron expression %q has %d fields, want 6 (minute hour day-of-month month day-of-week year)", body, len(fields))
	}
	c := &cronExpr{crontab: crontab, loc: loc}
	if crontab {
		c.text = strings.Join(fields, " ")
	} else {
		c.text = "cron(" + strings.Join(fields, " ") + ")"
	}
	p := cronParser{kind: kind, crontab: crontab}
	var err error
	if c.minutes, err = p.simple(fields[0], fMinute); err != nil {
		return nil, err
	}
	if c.hours, err = p.simple(fields[1], fHour); err != nil {
		return nil, err
	}
	if c.months, err = p.simple(fields[3], fMonth); err != nil {
		return nil, err
	}
	if c.domAny, err = p.dom(fields[2], &c.dom); err != nil {
		return nil, err
	}
	if c.dowAny, err = p.dow(fields[4], &c.dow); err != nil {
		return nil, err
	}
	if crontab {
		c.domStar = strings.HasPrefix(fields[2], "*")
		c.dowStar = strings.HasPrefix(fields[4], "*")
		for y := minYear; y <= maxYear; y++ {
			c.setYear(y)
		}
	} else {
		if c.domAny == c.dowAny {
			return nil, exprErrorf("cron expression %q: exactly one of day-of-month and day-of-week must be \"?\"", body)
		}
		if err := p.years(fields[5], c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

type cronParser struct {
	kind    string
	crontab bool
}

func (p cronParser) errf(f fieldSpec, token, format string, args ...any) error {
	return &fieldError{kind: p.kind, field: f.name, token: token, msg: fmt.Sprintf(format, args...)}
}

// value parses a number or (where the field has names) a name.
func (p cronParser) value(tok string, f fieldSpec) (int, error) {
	if tok == "" {
		return 0, p.errf(f, tok, "is empty")
	}
	if f.names != nil {
		if v, ok := f.names[strings.ToUpper(tok)]; ok {
			return v, nil
		}
	}
	for _, r := range tok {
		if r < '0' || r > '9' {
			if f.names != nil {
				return 0, p.errf(f, tok, "is not a number or name")
			}
			return 0, p.errf(f, tok, "is not a number")
		}
	}
	v, err := strconv.Atoi(tok)
	if err != nil || v < f.min || v > f.max {
		return 0, p.errf(f, tok, "out of range %d-%d", f.min, f.max)
	}
	return v, nil
}

// rangeStep parses one list element of the form *, a, a-b, */s, a/s or a-b/s
// and calls set for each selected value.
func (p cronParser) rangeStep(elem string, f fieldSpec, set func(int)) error {
	base, stepText, hasStep := strings.Cut(elem, "/")
	step := 1
	if hasStep {
		if stepText == "" {
			return p.errf(f, elem, "has an empty step")
		}
		for _, r := range stepText {
			if r < '0' || r > '9' {
				return p.errf(f, elem, "step %q is not a number", stepText)
			}
		}
		s, err := strconv.Atoi(stepText)
		if err != nil || s < 1 || s > f.max-f.min+1 {
			return p.errf(f, elem, "step %q out of range 1-%d", stepText, f.max-f.min+1)
		}
		step = s
	}
	lo, hi := f.min, f.max
	switch {
	case base == "*":
	case strings.Contains(base, "-"):
		a, b, _ := strings.Cut(base, "-")
		var err error
		if lo, err = p.value(a, f); err != nil {
			return err
		}
		if hi, err = p.value(b, f); err != nil {
			return err
		}
		if lo > hi {
			return p.errf(f, elem, "range start is after its end")
		}
	default:
		v, err := p.value(base, f)
		if err != nil {
			return err
		}
		lo = v
		if !hasStep {
			hi = v
		}
		// "a/s" means from a to the field's maximum every s.
	}
	for v := lo; v <= hi; v += step {
		set(v)
	}
	return nil
}

func (p cronParser) list(field string, f fieldSpec, elem func(string) error) error {
	if field == "" {
		return p.errf(f, field, "is empty")
	}
	for _, e := range strings.Split(field, ",") {
		if e == "" {
			return p.errf(f, field, "has an empty list element")
		}
		if err := elem(e); err != nil {
			return err
		}
	}
	return nil
}

func (p cronParser) simple(field string, f fieldSpec) (uint64, error) {
	var set uint64
	err := p.list(field, f, func(e string) error {
		return p.rangeStep(e, f, func(v int) { set |= 1 << uint(v) })
	})
	return set, err
}

func (p cronParser) years(field string, c *cronExpr) error {
	return p.list(field, fYear, func(e string) error {
		return p.rangeStep(e, fYear, c.setYear)
	})
}

func (c *cronExpr) setYear(y int) { c.years[(y-minYear)/64] |= 1 << uint((y-minYear)%64) }
func (c *cronExpr) hasYear(y int) bool {
	return c.years[(y-minYear)/64]&(1<<uint((y-minYear)%64)) != 0
}

// dom parses the day-of-month field. any reports "?".
func (p cronParser) dom(field string, d *domSet) (any bool, err error) {
	if field == "?" && !p.crontab {
		return true, nil
	}
	err = p.list(field, fDom, func(e string) error {
		if p.crontab {
			return p.rangeStep(e, fDom, func(v int) { d.days |= 1 << uint(v) })
		}
		up := strings.ToUpper(e)
		switch {
		case e == "?":
			return p.errf(fDom, field, "\"?\" must be the whole field")
		case up == "L":
			d.last = true
			return nil
		case up == "LW":
			d.lastWeekday = true
			return nil
		case strings.HasSuffix(up, "W"):
			v, err := p.value(e[:len(e)-1], fDom)
			if err != nil {
				return p.errf(fDom, e, "must be <day>W with day 1-31")
			}
			d.nearest |= 1 << uint(v)
			return nil
		}
		return p.rangeStep(e, fDom, func(v int) { d.days |= 1 << uint(v) })
	})
	return false, err
}

// dow parses the day-of-week field into time.Weekday bits. any reports "?".
func (p cronParser) dow(field string, d *dowSet) (any bool, err error) {
	f := fCronDow
	toWeekday := func(v int) int { return v - 1 } // EventBridge 1-7 = SUN-SAT
	if p.crontab {
		f = fCrontabDow
		toWeekday = func(v int) int { return v % 7 } // 0 and 7 = SUN
	}
	if field == "?" && !p.crontab {
		return true, nil
	}
	err = p.list(field, f, func(e string) error {
		if p.crontab {
			return p.rangeStep(e, f, func(v int) { d.days |= 1 << uint(toWeekday(v)) })
		}
		up := strings.ToUpper(e)
		switch {
		case e == "?":
			return p.errf(f, field, "\"?\" must be the whole field")
		case up == "L":
			// Alone, L is the last day of the week: Saturday.
			d.days |= 1 << uint(time.Saturday)
			return nil
		case strings.Contains(e, "#"):
			a, b, _ := strings.Cut(e, "#")
			v, err := p.value(a, f)
			if err != nil {
				return err
			}
			if len(b) != 1 || b[0] < '1' || b[0] > '5' {
				return p.errf(f, e, "occurrence after # must be 1-5")
			}
			d.nth[toWeekday(v)] |= 1 << (b[0] - '0')
			return nil
		case strings.HasSuffix(up, "L"):
			v, err := p.value(e[:len(e)-1], f)
			if err != nil {
				return err
			}
			d.last |= 1 << uint(toWeekday(v))
			return nil
		}
		return p.rangeStep(e, f, func(v int) { d.days |= 1 << uint(toWeekday(v)) })
	})
	return false, err
}

func (c *cronExpr) Kind() string {
	if c.crontab {
		return KindCrontab
	}
	return KindCron
}

func (c *cronExpr) String() string { return c.text }

// monthInfo caches what day matching needs about one month.
type monthInfo struct {
	days     int          // number of days
	firstWd  time.Weekday // weekday of the 1st
	lastWkdy int          // last Monday-Friday
}

func newMonthInfo(y int, m time.Month) monthInfo {
	first := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	mi := monthInfo{days: daysIn(y, m), firstWd: first.Weekday()}
	mi.lastWkdy = mi.days
	for wd := mi.weekday(mi.lastWkdy); wd == time.Saturday || wd == time.Sunday; wd = mi.weekday(mi.lastWkdy) {
		mi.lastWkdy--
	}
	return mi
}

func (mi monthInfo) weekday(d int) time.Weekday { return time.Weekday((int(mi.firstWd) + d - 1) % 7) }

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// nearestWeekday returns the Monday-Friday nearest to day d without leaving
// the month, or 0 when the month has no day d.
func (mi monthInfo) nearestWeekday(d int) int {
	if d > mi.days {
		return 0
	}
	switch mi.weekday(d) {
	case time.Saturday:
		if d == 1 {
			return 3 // Monday the 3rd
		}
		return d - 1
	case time.Sunday:
		if d == mi.days {
			return d - 2 // Friday
		}
		return d + 1
	}
	return d
}

func (s *domSet) match(mi monthInfo, d int) bool {
	if s.days&(1<<uint(d)) != 0 {
		return true
	}
	if s.last && d == mi.days {
		return true
	}
	if s.lastWeekday && d == mi.lastWkdy {
		return true
	}
	if s.nearest != 0 {
		// d can only be the nearest weekday of d-2..d+2.
		for n := max(1, d-2); n <= min(31, d+2); n++ {
			if s.nearest&(1<<uint(n)) != 0 && mi.nearestWeekday(n) == d {
				return true
			}
		}
	}
	return false
}

func (s *dowSet) match(mi monthInfo, d int) bool {
	wd := mi.weekday(d)
	if s.days&(1<<uint(wd)) != 0 {
		return true
	}
	if s.last&(1<<uint(wd)) != 0 && d+7 > mi.days {
		return true
	}
	return s.nth[wd]&(1<<uint((d-1)/7+1)) != 0
}

func (c *cronExpr) dayMatches(mi monthInfo, d int) bool {
	if !c.crontab {
		if c.domAny {
			return c.dow.match(mi, d)
		}
		return c.dom.match(mi, d)
	}
	if c.domStar || c.dowStar {
		return c.dom.match(mi, d) && c.dow.match(mi, d)
	}
	return c.dom.match(mi, d) || c.dow.match(mi, d)
}

// nextBit returns the lowest set bit of set at or above from, or -1.
func nextBit(set uint64, from int) int {
	if from > 63 {
		return -1
	}
	rest := set >> uint(from) << uint(from)
	if rest == 0 {
		return -1
	}
	return bits.TrailingZeros64(rest)
}

// Next walks the calendar field by field (year, month, day, hour, minute)
// from the wall-clock minute of after, skipping whole months, days and hours
// that cannot match, so even an impossible expression finishes after at most
// (maxYear-minYear+1)*12 month steps. Fire times are at second 0.
func (c *cronExpr) Next(after time.Time) time.Time {
	w := after.In(c.loc)
	y, mo, d, h, mi := w.Year(), int(w.Month()), w.Day(), w.Hour(), w.Minute()
	if y > maxYear {
		return time.Time{}
	}
	// fresh is false while every outer field is still at after's value, so
	// the inner fields must start at after's value too.
	fresh := false
	if y < minYear {
		y, fresh = minYear, true
	}
	for ; y <= maxYear; y, fresh = y+1, true {
		if !c.hasYear(y) {
			continue
		}
		startMo := 1
		if !fresh {
			startMo = mo
		}
		for m := nextBit(c.months, startMo); m > 0; m = nextBit(c.months, m+1) {
			freshM := fresh || m != mo
			info := newMonthInfo(y, time.Month(m))
			startD := 1
			if !freshM {
				startD = d
			}
			for day := startD; day <= info.days; day++ {
				if !c.dayMatches(info, day) {
					continue
				}
				freshD := freshM || day != d
				startH := 0
				if !freshD {
					startH = h
				}
				for hr := nextBit(c.hours, startH); hr >= 0; hr = nextBit(c.hours, hr+1) {
					freshH := freshD || hr != h
					startMi := 0
					if !freshH {
						startMi = mi
					}
					for mn := nextBit(c.minutes, startMi); mn >= 0; mn = nextBit(c.minutes, mn+1) {
						t, ok := resolveWall(y, time.Month(m), day, hr, mn, 0, c.loc)
						// Skipped wall times (spring-forward) never fire; a
						// repeated one (fall-back) resolves to its first
						// occurrence, which may already be at or before after.
						if ok && t.After(after) {
							return t
						}
					}
				}
			}
		}
	}
	return time.Time{}
}
