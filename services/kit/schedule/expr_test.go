package schedule

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

// ts parses an RFC 3339 instant.
func ts(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return v
}

// fires returns the first n fire times strictly after from.
func fires(e Expr, from time.Time, n int) []time.Time {
	var out []time.Time
	for t := from; len(out) < n; {
		t = e.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

func TestNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		expr   string
		zone   string
		anchor string // RFC 3339; empty = zero anchor (Unix epoch)
		after  string
		want   []string // successive fires, RFC 3339 with the zone's offset
	}{
		// rate
		{name: "rate minutes from epoch", expr: "rate(5 minutes)", after: "2026-01-01T00:02:00Z",
			want: []string{"2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z"}},
		{name: "rate on a fire time is strictly after", expr: "rate(5 minutes)", after: "2026-01-01T00:05:00Z",
			want: []string{"2026-01-01T00:10:00Z"}},
		{name: "rate just before a fire time", expr: "rate(5 minutes)", after: "2026-01-01T00:04:59.999999999Z",
			want: []string{"2026-01-01T00:05:00Z"}},
		{name: "rate anchored", expr: "rate(1 hour)", anchor: "2026-01-01T00:17:30Z", after: "2026-01-01T05:00:00Z",
			want: []string{"2026-01-01T05:17:30Z", "2026-01-01T06:17:30Z"}},
		{name: "rate fires before its anchor too", expr: "rate(1 minute)", anchor: "2026-01-01T00:00:07Z", after: "2025-12-31T23:50:00Z",
			want: []string{"2025-12-31T23:50:07Z"}},
		{name: "rate anchor with nanoseconds", expr: "rate(1 second)", anchor: "2026-01-01T00:00:00.5Z", after: "2026-01-01T00:00:03.5Z",
			want: []string{"2026-01-01T00:00:04.5Z"}},
		{name: "rate seconds", expr: "rate(10 seconds)", after: "2026-01-01T00:00:01Z",
			want: []string{"2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z"}},
		{name: "rate days", expr: "rate(2 days)", anchor: "2026-01-01T12:00:00Z", after: "2026-01-02T00:00:00Z",
			want: []string{"2026-01-03T12:00:00Z"}},
		{name: "rate ignores DST in New York", expr: "rate(1 hour)", zone: "America/New_York", after: "2026-03-08T00:30:00-05:00",
			want: []string{"2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"}},
		{name: "rate returned in its zone", expr: "rate(1 day)", zone: "Asia/Tokyo", after: "2026-01-01T00:00:00Z",
			want: []string{"2026-01-02T09:00:00+09:00"}},

		// at
		{name: "at in Tokyo", expr: "at(2026-05-01T09:00:00)", zone: "Asia/Tokyo", after: "2026-04-30T00:00:00Z",
			want: []string{"2026-05-01T09:00:00+09:00"}},
		{name: "at already passed", expr: "at(2026-05-01T09:00:00)", zone: "Asia/Tokyo", after: "2026-05-01T00:00:00Z"},
		{name: "at ambiguous fires at first occurrence", expr: "at(2026-11-01T01:30:00)", zone: "America/New_York", after: "2026-10-01T00:00:00Z",
			want: []string{"2026-11-01T01:30:00-04:00"}},

		// cron fields
		{name: "cron weekdays", expr: "cron(0 3 ? * MON-FRI *)", after: "2026-11-21T10:00:00Z",
			want: []string{"2026-11-23T03:00:00Z", "2026-11-24T03:00:00Z"}},
		{name: "cron every 15 from 0", expr: "cron(0/15 * * * ? *)", after: "2026-11-21T10:07:00Z",
			want: []string{"2026-11-21T10:15:00Z", "2026-11-21T10:30:00Z", "2026-11-21T10:45:00Z", "2026-11-21T11:00:00Z"}},
		{name: "cron star step", expr: "cron(*/20 9-10 * * ? *)", after: "2026-11-21T10:30:00Z",
			want: []string{"2026-11-21T10:40:00Z", "2026-11-22T09:00:00Z"}},
		{name: "cron list and range with step", expr: "cron(5,10 1-7/3 * * ? *)", after: "2026-11-21T00:00:00Z",
			want: []string{"2026-11-21T01:05:00Z", "2026-11-21T01:10:00Z", "2026-11-21T04:05:00Z", "2026-11-21T04:10:00Z", "2026-11-21T07:05:00Z", "2026-11-21T07:10:00Z", "2026-11-22T01:05:00Z"}},
		{name: "cron offset step", expr: "cron(0 0 10/10 * ? *)", after: "2026-11-01T00:00:00Z",
			want: []string{"2026-11-10T00:00:00Z", "2026-11-20T00:00:00Z", "2026-11-30T00:00:00Z", "2026-12-10T00:00:00Z"}},
		{name: "cron month names", expr: "cron(0 0 1 JAN,jul ? *)", after: "2026-02-01T00:00:00Z",
			want: []string{"2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"}},
		{name: "cron day of week numbers 1=SUN", expr: "cron(0 12 ? * 1 *)", after: "2026-11-21T00:00:00Z",
			want: []string{"2026-11-22T12:00:00Z", "2026-11-29T12:00:00Z"}},
		{name: "cron day of week 7=SAT", expr: "cron(0 12 ? * 7 *)", after: "2026-11-16T00:00:00Z",
			want: []string{"2026-11-21T12:00:00Z"}},
		{name: "cron year", expr: "cron(0 0 1 1 ? 2028,2030-2031)", after: "2026-06-01T00:00:00Z",
			want: []string{"2028-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z"}},
		{name: "cron year step", expr: "cron(0 0 1 1 ? 2100/50)", after: "2026-06-01T00:00:00Z",
			want: []string{"2100-01-01T00:00:00Z", "2150-01-01T00:00:00Z"}},
		{name: "cron last year", expr: "cron(59 23 31 12 ? 2199)", after: "2199-12-31T23:58:59Z",
			want: []string{"2199-12-31T23:59:00Z"}},
		{name: "cron in Tokyo", expr: "cron(0 3 ? * MON-FRI *)", zone: "Asia/Tokyo", after: "2026-11-21T00:00:00Z",
			want: []string{"2026-11-23T03:00:00+09:00"}},

		// L, W, LW, #
		{name: "L last day of month", expr: "cron(0 0 L * ? *)", after: "2026-01-31T00:00:00Z",
			want: []string{"2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z"}},
		{name: "L in a leap February", expr: "cron(0 0 L 2 ? *)", after: "2027-03-01T00:00:00Z",
			want: []string{"2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"}},
		{name: "Feb 29 only in leap years", expr: "cron(0 0 29 2 ? *)", after: "2026-01-01T00:00:00Z",
			want: []string{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"}},
		{name: "Feb 29 skips 2100", expr: "cron(0 0 29 2 ? 2096-2104)", after: "2096-03-01T00:00:00Z",
			want: []string{"2104-02-29T00:00:00Z"}},
		{name: "W Saturday moves to Friday", expr: "cron(0 0 15W 8 ? 2026)", after: "2026-01-01T00:00:00Z",
			want: []string{"2026-08-14T00:00:00Z"}},
		{name: "W Sunday moves to Monday", expr: "cron(0 0 16W 8 ? 2026)", after: "2026-01-01T00:00:00Z",
			want: []string{"2026-08-17T00:00:00Z"}},
		{name: "W on the 1st Saturday moves to the 3rd", expr: "cron(0 0 1W 8 ? 2026)", after: "2026-01-01T00:00:00Z",
			want: []string{"2026-08-03T00:00:00Z"}},
		{name: "W on the last Sunday moves back to Friday", expr: "cron(0 0 31W 1 ? 2027)", after: "2026-01-01T00:00:00Z",
			want: []string{"2027-01-29T00:00:00Z"}},
		{name: "W on a weekday stays", expr: "cron(0 0 3W 11 ? 2026)", after: "2026-01-01T00:00:00Z",
			want: []string{"2026-11-03T00:00:00Z"}},
		{name: "31W skips short months", expr: "cron(0 0 31W * ? 2026)", after: "2026-03-31T00:00:00Z",
			want: []string{"2026-05-29T00:00:00Z", "2026-07-31T00:00:00Z", "2026-08-31T00:00:00Z"}},
		{name: "LW last weekday", expr: "cron(0 0 LW * ? 2026-2027)", after: "2026-04-30T12:00:00Z",
			want: []string{"2026-05-29T00:00:00Z", "2026-06-30T00:00:00Z", "2026-07-31T00:00:00Z", "2026-08-31T00:00:00Z"}},
		{name: "# third Friday", expr: "cron(0 0 ? * 6#3 *)", after: "2026-11-01T00:00:00Z",
			want: []string{"2026-11-20T00:00:00Z", "2026-12-18T00:00:00Z"}},
		{name: "# with a name and fifth occurrence", expr: "cron(0 0 ? * SUN#5 2026)", after: "2026-10-01T00:00:00Z",
			want: []string{"2026-11-29T00:00:00Z"}},
		{name: "nL last Friday", expr: "cron(0 0 ? * 6L *)", after: "2026-11-01T00:00:00Z",
			want: []string{"2026-11-27T00:00:00Z", "2026-12-25T00:00:00Z"}},
		{name: "FRIL last Friday", expr: "cron(0 0 ? * FRIL *)", after: "2026-11-01T00:00:00Z",
			want: []string{"2026-11-27T00:00:00Z"}},
		{name: "L alone in day-of-week is Saturday", expr: "cron(0 0 ? * L *)", after: "2026-11-16T00:00:00Z",
			want: []string{"2026-11-21T00:00:00Z", "2026-11-28T00:00:00Z"}},

		// crontab
		{name: "crontab every 5 minutes", expr: "*/5 * * * *", after: "2026-11-21T10:03:10Z",
			want: []string{"2026-11-21T10:05:00Z", "2026-11-21T10:10:00Z"}},
		{name: "crontab 0 is Sunday", expr: "0 12 * * 0", after: "2026-11-21T00:00:00Z",
			want: []string{"2026-11-22T12:00:00Z"}},
		{name: "crontab 7 is Sunday", expr: "0 12 * * 7", after: "2026-11-21T00:00:00Z",
			want: []string{"2026-11-22T12:00:00Z"}},
		{name: "crontab names", expr: "30 6 * feb-mar mon-fri", after: "2026-01-15T00:00:00Z",
			want: []string{"2026-02-02T06:30:00Z", "2026-02-03T06:30:00Z"}},
		{name: "crontab Vixie OR when both day fields restricted", expr: "0 0 13 * 5", after: "2026-11-01T00:00:00Z",
			want: []string{"2026-11-06T00:00:00Z", "2026-11-13T00:00:00Z", "2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z", "2026-12-04T00:00:00Z", "2026-12-11T00:00:00Z", "2026-12-13T00:00:00Z"}},
		{name: "crontab AND when day-of-week is star", expr: "0 0 13 * *", after: "2026-11-01T00:00:00Z",
			want: []string{"2026-11-13T00:00:00Z", "2026-12-13T00:00:00Z"}},
		{name: "crontab stepped star counts as unrestricted (Vixie)", expr: "0 0 */10 * 1", after: "2026-11-01T00:00:00Z",
			want: []string{"2026-12-21T00:00:00Z", "2027-01-11T00:00:00Z"}}, // Mondays that are the 1st/11th/21st/31st; OR would give 2026-11-01
		{name: "crontab from before 1970", expr: "0 0 1 1 *", after: "0001-01-01T00:00:00Z",
			want: []string{"1970-01-01T00:00:00Z"}},

		// DST, America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST.
		{name: "NY spring-forward skips the missing time", expr: "cron(30 2 * * ? *)", zone: "America/New_York", after: "2026-03-07T12:00:00-05:00",
			want: []string{"2026-03-09T02:30:00-04:00"}},
		{name: "NY spring-forward crontab", expr: "30 2 * * *", zone: "America/New_York", after: "2026-03-07T12:00:00-05:00",
			want: []string{"2026-03-09T02:30:00-04:00"}},
		{name: "NY spring-forward keeps the times around the gap", expr: "cron(0/30 1-3 8 3 ? 2026)", zone: "America/New_York", after: "2026-03-08T00:00:00-05:00",
			want: []string{"2026-03-08T01:00:00-05:00", "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"}},
		{name: "NY fall-back fires once at first occurrence", expr: "cron(30 1 * * ? *)", zone: "America/New_York", after: "2026-10-31T12:00:00-04:00",
			want: []string{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"}},
		{name: "NY fall-back crontab", expr: "30 1 * * *", zone: "America/New_York", after: "2026-10-31T12:00:00-04:00",
			want: []string{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"}},
		{name: "NY fall-back from inside the repeated hour", expr: "cron(30 1 * * ? *)", zone: "America/New_York", after: "2026-11-01T01:15:00-05:00",
			want: []string{"2026-11-02T01:30:00-05:00"}},
		{name: "NY fall-back every 20 minutes skips the repeat", expr: "*/20 1-2 1 11 *", zone: "America/New_York", after: "2026-11-01T00:50:00-04:00",
			want: []string{"2026-11-01T01:00:00-04:00", "2026-11-01T01:20:00-04:00", "2026-11-01T01:40:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T02:20:00-05:00"}},

		// DST, Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST, 2026-10-25 02:00 BST -> 01:00 GMT.
		{name: "London spring-forward", expr: "cron(30 1 * * ? *)", zone: "Europe/London", after: "2026-03-28T12:00:00Z",
			want: []string{"2026-03-30T01:30:00+01:00"}},
		{name: "London spring-forward crontab", expr: "30 1 * * *", zone: "Europe/London", after: "2026-03-28T12:00:00Z",
			want: []string{"2026-03-30T01:30:00+01:00"}},
		{name: "London fall-back", expr: "cron(30 1 * * ? *)", zone: "Europe/London", after: "2026-10-24T12:00:00+01:00",
			want: []string{"2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00Z"}},
		{name: "London fall-back crontab every 30", expr: "*/30 1 25 10 *", zone: "Europe/London", after: "2026-10-25T00:00:00+01:00",
			want: []string{"2026-10-25T01:00:00+01:00", "2026-10-25T01:30:00+01:00"}},

		// never
		{name: "impossible Feb 30", expr: "cron(0 0 30 2 ? *)", after: "2026-01-01T00:00:00Z"},
		{name: "impossible crontab Apr 31", expr: "0 0 31 4 *", after: "2026-01-01T00:00:00Z"},
		{name: "past the year field", expr: "cron(0 0 1 1 ? 2027)", after: "2027-01-01T00:00:00Z"},
		{name: "after 2199", expr: "* * * * *", after: "2200-01-01T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			loc := time.UTC
			if tt.zone != "" {
				loc = mustLoc(t, tt.zone)
			}
			var anchor time.Time
			if tt.anchor != "" {
				anchor = ts(t, tt.anchor)
			}
			e, err := ParseExpr(tt.expr, loc, anchor)
			require.NoError(t, err)
			n := len(tt.want)
			got := fires(e, ts(t, tt.after), n+1)
			var gotS []string
			for _, g := range got {
				require.Equal(t, loc, g.Location(), "fire times are in the expression's zone")
				gotS = append(gotS, g.Format(time.RFC3339Nano))
			}
			if len(gotS) > n {
				gotS = gotS[:n] // only the listed fires are checked...
			} else {
				require.Len(t, got, n) // ...unless fewer exist, then there must be no more
			}
			require.Equal(t, tt.want, gotS)
		})
	}
}

// TestNextBounded checks that expressions that never (or no longer) fire give
// up quickly instead of scanning minute by minute.
func TestNextBounded(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"cron(0 0 30 2 ? *)", "cron(0 0 31 4,6,9,11 ? *)", "0 0 30 2 *", "cron(0 0 ? 2 2#5 2199)"} {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			e, err := ParseExpr(s, mustLoc(t, "America/New_York"), time.Time{})
			require.NoError(t, err)
			start := time.Now()
			require.True(t, e.Next(ts(t, "2026-01-01T00:00:00Z")).IsZero())
			require.Less(t, time.Since(start), 500*time.Millisecond)
		})
	}
}

func TestExprStringKind(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, str, kind string }{
		{"rate(5 minutes)", "rate(5 minutes)", KindRate},
		{"  rate( 1   hour ) ", "rate(1 hour)", KindRate},
		{"cron(0  3 ? * MON-FRI *)", "cron(0 3 ? * MON-FRI *)", KindCron},
		{"*/5 *  * * *", "*/5 * * * *", KindCrontab},
		{"at(2026-05-01T09:00:00)", "at(2026-05-01T09:00:00)", KindAt},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			e, err := ParseExpr(tt.in, nil, time.Time{})
			require.NoError(t, err)
			require.Equal(t, tt.str, e.String())
			require.Equal(t, tt.kind, e.Kind())
			again, err := ParseExpr(e.String(), nil, time.Time{})
			require.NoError(t, err)
			require.Equal(t, e.String(), again.String())
		})
	}
}

func TestParseExprErrors(t *testing.T) {
	t.Parallel()
	ny := "America/New_York"
	tests := []struct{ expr, zone, want string }{
		{"", "", `empty expression`},
		{"every(5 minutes)", "", `unknown expression kind "every" (want rate, cron, at or a 5-field crontab)`},
		{"rate(5 minutes", "", `rate expression "rate(5 minutes": missing closing parenthesis`},
		{"rate(5)", "", `rate expression "5": want rate(<value> <unit>)`},
		{"rate(0 minutes)", "", `rate value: "0" out of range 1-1000000`},
		{"rate(-1 minutes)", "", `rate value: "-1" is not a positive integer`},
		{"rate(1.5 hours)", "", `rate value: "1.5" is not a positive integer`},
		{"rate(1000001 seconds)", "", `rate value: "1000001" out of range 1-1000000`},
		{"rate(1 minutes)", "", `rate unit: "minutes" must be singular ("minute") when the value is 1`},
		{"rate(5 minute)", "", `rate unit: "minute" must be plural ("minutes") when the value is 5`},
		{"rate(2 weeks)", "", `rate unit: "weeks" is not one of second(s), minute(s), hour(s), day(s)`},
		{"at(2026-05-01 09:00:00)", "", `at expression: "2026-05-01 09:00:00" is not YYYY-MM-DDThh:mm:ss`},
		{"at(2026-02-30T09:00:00)", "", `at expression: "2026-02-30T09:00:00" is not YYYY-MM-DDThh:mm:ss`},
		{"at(2026-03-08T02:30:00)", ny, `at expression: 2026-03-08T02:30:00 does not exist in America/New_York (skipped by a daylight saving change)`},
		{"cron(0 3 * * *)", "", `cron expression "0 3 * * *" has 5 fields, want 6 (minute hour day-of-month month day-of-week year)`},
		{"cron(0 3 * * ? * *)", "", `cron expression "0 3 * * ? * *" has 7 fields, want 6 (minute hour day-of-month month day-of-week year)`},
		{"cron(0 3 * * * *)", "", `cron expression "0 3 * * * *": exactly one of day-of-month and day-of-week must be "?"`},
		{"cron(0 3 ? * ? *)", "", `cron expression "0 3 ? * ? *": exactly one of day-of-month and day-of-week must be "?"`},
		{"cron(0 3 ? * 8 *)", "", `cron day-of-week: "8" out of range 1-7`},
		{"cron(0 3 ? * 0 *)", "", `cron day-of-week: "0" out of range 1-7`},
		{"cron(60 3 * * ? *)", "", `cron minute: "60" out of range 0-59`},
		{"cron(0 24 * * ? *)", "", `cron hour: "24" out of range 0-23`},
		{"cron(0 0 32 * ? *)", "", `cron day-of-month: "32" out of range 1-31`},
		{"cron(0 0 0 * ? *)", "", `cron day-of-month: "0" out of range 1-31`},
		{"cron(0 0 1 13 ? *)", "", `cron month: "13" out of range 1-12`},
		{"cron(0 0 1 FOO ? *)", "", `cron month: "FOO" is not a number or name`},
		{"cron(0 0 1 1 ? 1969)", "", `cron year: "1969" out of range 1970-2199`},
		{"cron(0 0 1 1 ? 2200)", "", `cron year: "2200" out of range 1970-2199`},
		{"cron(x 0 1 1 ? *)", "", `cron minute: "x" is not a number`},
		{"cron(5-1 0 1 1 ? *)", "", `cron minute: "5-1" range start is after its end`},
		{"cron(*/0 0 1 1 ? *)", "", `cron minute: "*/0" step "0" out of range 1-60`},
		{"cron(*/ 0 1 1 ? *)", "", `cron minute: "*/" has an empty step`},
		{"cron(*/x 0 1 1 ? *)", "", `cron minute: "*/x" step "x" is not a number`},
		{"cron(1,,2 0 1 1 ? *)", "", `cron minute: "1,,2" has an empty list element`},
		{"cron(0 0 32W * ? *)", "", `cron day-of-month: "32W" must be <day>W with day 1-31`},
		{"cron(0 0 ? * 6#6 *)", "", `cron day-of-week: "6#6" occurrence after # must be 1-5`},
		{"cron(0 0 ? * 9#1 *)", "", `cron day-of-week: "9" out of range 1-7`},
		{"cron(0 0 ? * 9L *)", "", `cron day-of-week: "9" out of range 1-7`},
		{"cron(0 0 1,? * ? *)", "", `cron day-of-month: "1,?" "?" must be the whole field`},
		{"*/5 * * *", "", `"*/5 * * *" is not rate(...), cron(...), at(...) or a 5-field crontab (got 4 fields)`},
		{"0 0 * * 8", "", `crontab day-of-week: "8" out of range 0-7`},
		{"0 0 L * *", "", `crontab day-of-month: "L" is not a number`},
		{"0 0 ? * *", "", `crontab day-of-month: "?" is not a number`},
		{"0 0 * * 5#3", "", `crontab day-of-week: "5#3" is not a number or name`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			loc := time.UTC
			if tt.zone != "" {
				loc = mustLoc(t, tt.zone)
			}
			_, err := ParseExpr(tt.expr, loc, time.Time{})
			require.ErrorIs(t, err, ErrInvalidExpr)
			require.EqualError(t, err, tt.want)
		})
	}
}

func BenchmarkNext(b *testing.B) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(b, err)
	after := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"rate(5 minutes)",
		"cron(0/15 * * * ? *)",
		"cron(0 3 ? * MON-FRI *)",
		"cron(0 0 ? * 6#3 *)",
		"cron(0 0 LW * ? *)",
		"*/5 * * * *",
		"0 0 13 * 5",
		"at(2027-01-01T00:00:00)",
		"cron(0 0 30 2 ? *)", // never fires: worst case
	} {
		e, err := ParseExpr(s, ny, time.Time{})
		require.NoError(b, err)
		b.Run(s, func(b *testing.B) {
			for b.Loop() {
				_ = e.Next(after)
			}
		})
	}
}
