package fs

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrBadWhen is wrapped by every ParseWhen error so that callers can map a
// malformed @@ suffix to EINVAL while logging the detailed message.
var ErrBadWhen = errors.New("bad @@ time")

const whenForms = "accepted: 2007-08-06, 2007-08-06T13:56, 2007-08-06T13:56:07, " +
	"2007-08-06T13:56:07.25 (1-9 fraction digits), any of these followed by Z or +02:00 or -05:30, " +
	"0x00000000deadbeef (0x and 16 hex digits), -90s -15m -2h -3d -1w (units s m h d w), " +
	"or nothing (name@@ lists the versions)"

// Transaction ids are Unix nanoseconds in an int64, so these bound every moment.
var (
	minMoment = time.Unix(0, 0)
	maxMoment = time.Unix(0, math.MaxInt64)
)

// When is a parsed @@ suffix.
type When struct {
	Versions bool   // name@@: the directory listing every version of name
	TID      uint64 // otherwise: read the state after every transaction with id <= TID
	Text     string // the WHEN as written
}

// SplitWhen splits a path component at its first "@@". Later "@@"s stay in
// when, where they fail to parse, rather than being silently ignored.
func SplitWhen(component string) (name, when string, has bool) {
	return strings.Cut(component, "@@")
}

// ParseWhen parses the WHEN of name@@WHEN (docs/SPEC.md section 3). now
// anchors the relative forms; loc (nil means UTC) is history.timezone, used
// for dates and times written without an offset. Moments in the future are
// returned as they are: clamping them to the present is the caller's
// business.
//
// A local date or time names the state after everything that happened while
// the clock read at most the end of that day, minute or second (or that
// exact instant, when a fraction is given): the last instant whose local
// reading is <= it. That rule is monotone in the text and settles the DST
// cases without exceptions: an ambiguous fall-back reading means its later
// occurrence, and a reading inside a spring-forward gap (which no clock ever
// showed) means the instant just before the clocks jumped. time.Date is not
// used for this because it does not promise which zone it picks.
func ParseWhen(s string, now time.Time, loc *time.Location) (When, error) {
	if s == "" {
		return When{Versions: true, Text: s}, nil
	}
	if loc == nil {
		loc = time.UTC
	}
	var t time.Time
	var err error
	switch {
	case strings.HasPrefix(s, "0x"):
		t, err = parseTID(s[2:])
	case strings.HasPrefix(s, "-"):
		t, err = parseAgo(s[1:], now)
	default:
		t, err = parseDate(s, loc)
	}
	if err == nil && t.Before(minMoment) {
		err = fmt.Errorf("%s is before 1970", t.UTC().Format(time.RFC3339Nano))
	}
	if err == nil && t.After(maxMoment) {
		err = fmt.Errorf("%s is after the last representable moment %s",
			t.UTC().Format(time.RFC3339Nano), maxMoment.UTC().Format(time.RFC3339Nano))
	}
	if err != nil {
		return When{}, fmt.Errorf("%w %q: %v; %s", ErrBadWhen, s, err, whenForms)
	}
	return When{TID: uint64(t.UnixNano()), Text: s}, nil
}

func parseTID(hex string) (time.Time, error) {
	if len(hex) != 16 {
		return time.Time{}, fmt.Errorf("0x must be followed by exactly 16 hex digits, got %d characters", len(hex))
	}
	v, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not 16 hex digits", hex)
	}
	if v > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("transaction id 0x%s is larger than 0x%016x", hex, uint64(math.MaxInt64))
	}
	return time.Unix(0, int64(v)), nil
}

var agoUnits = map[string]time.Duration{
	"s": time.Second, "m": time.Minute, "h": time.Hour,
	"d": 24 * time.Hour, "w": 7 * 24 * time.Hour,
}

// parseAgo parses the part after "-". Zero ("-0s") is accepted and means now.
func parseAgo(s string, now time.Time) (time.Time, error) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i == 0 {
		return time.Time{}, errors.New("a relative time is - followed by a number and a unit")
	}
	unit, ok := agoUnits[s[i:]]
	if !ok {
		return time.Time{}, fmt.Errorf("unit %q is not one of s m h d w", s[i:])
	}
	n, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil || n > uint64(math.MaxInt64/unit) {
		return time.Time{}, fmt.Errorf("-%s is too long ago", s)
	}
	return now.Add(-time.Duration(n) * unit), nil
}

func parseDate(s string, loc *time.Location) (time.Time, error) {
	p := scanner{s}
	y, ok1 := p.num(4)
	ok2 := p.lit('-')
	mo, ok3 := p.num(2)
	ok4 := p.lit('-')
	d, ok5 := p.num(2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5) {
		return time.Time{}, errors.New("expected a date YYYY-MM-DD, 0x and a transaction id, or -N and a unit")
	}
	if mo < 1 || mo > 12 {
		return time.Time{}, fmt.Errorf("month %d is not 1-12", mo)
	}
	if last := time.Date(y, time.Month(mo)+1, 0, 0, 0, 0, 0, time.UTC).Day(); d < 1 || d > last {
		return time.Time{}, fmt.Errorf("%s %d has no day %d", time.Month(mo), y, d)
	}
	// The wall-clock reading is carried in a UTC time so that adding to it
	// is plain calendar arithmetic, untouched by any zone's transitions.
	wall := time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC)
	span := 24 * time.Hour
	if p.lit('T') {
		h, ok1 := p.num(2)
		ok2 := p.lit(':')
		mi, ok3 := p.num(2)
		if !(ok1 && ok2 && ok3) {
			return time.Time{}, errors.New("expected HH:MM after T")
		}
		if h > 23 {
			return time.Time{}, fmt.Errorf("hour %d is not 0-23", h)
		}
		if mi > 59 {
			return time.Time{}, fmt.Errorf("minute %d is not 0-59", mi)
		}
		wall = wall.Add(time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute)
		span = time.Minute
		if p.lit(':') {
			sec, ok := p.num(2)
			if !ok {
				return time.Time{}, errors.New("expected two digits of seconds after HH:MM:")
			}
			if sec > 59 {
				return time.Time{}, fmt.Errorf("second %d is not 0-59", sec)
			}
			wall = wall.Add(time.Duration(sec) * time.Second)
			span = time.Second
			if p.lit('.') {
				frac := p.digits()
				if len(frac) < 1 || len(frac) > 9 {
					return time.Time{}, fmt.Errorf("a fraction of a second has 1-9 digits, not %d", len(frac))
				}
				ns, _ := strconv.Atoi(frac + strings.Repeat("0", 9-len(frac)))
				wall = wall.Add(time.Duration(ns))
				span = time.Nanosecond // an exact instant is its own end
			}
		}
	}
	if p.lit('Z') {
		loc = time.UTC
	} else if len(p.s) > 0 && (p.s[0] == '+' || p.s[0] == '-') {
		sign := 1
		if p.s[0] == '-' {
			sign = -1
		}
		p.s = p.s[1:]
		oh, ok1 := p.num(2)
		ok2 := p.lit(':')
		om, ok3 := p.num(2)
		if !(ok1 && ok2 && ok3) || oh > 23 || om > 59 {
			return time.Time{}, errors.New("an offset is Z, +HH:MM or -HH:MM with HH 00-23 and MM 00-59")
		}
		loc = time.FixedZone("", sign*(oh*3600+om*60))
	}
	if p.s != "" {
		return time.Time{}, fmt.Errorf("unexpected %q after the date and time", p.s)
	}
	return lastReading(wall.Add(span-1), loc), nil
}

// lastReading returns the last instant at which clocks in loc read at most
// wall (a reading carried in a UTC time); see ParseWhen for why.
func lastReading(wall time.Time, loc *time.Location) time.Time {
	var best time.Time
	consider := func(t time.Time) {
		_, off := t.In(loc).Zone()
		if !t.Add(time.Duration(off)*time.Second).After(wall) && t.After(best) {
			best = t
		}
	}
	// No offset reaches a day, so the answer lies within a day of wall and is
	// either wall read under one of the offsets in force then, or the last
	// instant before a zone change. Every candidate considered satisfies the
	// condition, so taking the latest gives exactly the answer.
	for t := wall.Add(-24 * time.Hour); t.Before(wall.Add(24 * time.Hour)); {
		_, off := t.In(loc).Zone()
		consider(wall.Add(-time.Duration(off) * time.Second))
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() {
			break
		}
		consider(end.Add(-1))
		t = end
	}
	return best
}

type scanner struct{ s string }

// num consumes exactly n ASCII digits.
func (p *scanner) num(n int) (int, bool) {
	if len(p.s) < n {
		return 0, false
	}
	v := 0
	for i := 0; i < n; i++ {
		if !isDigit(p.s[i]) {
			return 0, false
		}
		v = v*10 + int(p.s[i]-'0')
	}
	p.s = p.s[n:]
	return v, true
}

func (p *scanner) lit(c byte) bool {
	if len(p.s) > 0 && p.s[0] == c {
		p.s = p.s[1:]
		return true
	}
	return false
}

func (p *scanner) digits() string {
	i := 0
	for i < len(p.s) && isDigit(p.s[i]) {
		i++
	}
	d := p.s[:i]
	p.s = p.s[i:]
	return d
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

const versionLayout = "2006-01-02T15:04:05.000000000Z07:00"

// FormatVersionName names a version in a name@@ listing by its transaction
// time in UTC with all nine fraction digits, so names sort by time and
// ParseWhen reads one back as exactly that transaction.
func FormatVersionName(tid uint64) string {
	return FormatMoment(time.Unix(0, int64(tid)))
}

// FormatMoment prints a moment of the store's history as every admin
// command shows it: the form of a version's name in a name@@ listing, so
// that a time asof history prints names that version there too
// (time.RFC3339Nano drops trailing zeros, which such a name keeps).
func FormatMoment(t time.Time) string { return t.UTC().Format(versionLayout) }

// Moment is a time in admin output, printed and encoded in JSON by
// FormatMoment.
type Moment struct{ time.Time }

func (m Moment) String() string { return FormatMoment(m.Time) }

// MarshalJSON encodes the moment as FormatMoment prints it.
func (m Moment) MarshalJSON() ([]byte, error) { return []byte(`"` + FormatMoment(m.Time) + `"`), nil }

// UnmarshalJSON reads any RFC 3339 time.
func (m *Moment) UnmarshalJSON(b []byte) error { return m.Time.UnmarshalJSON(b) }

// ParseVersionName is the inverse of FormatVersionName. It accepts only the
// exact form FormatVersionName produces, so every name maps to one version.
func ParseVersionName(s string) (uint64, bool) {
	t, err := time.Parse(versionLayout, s)
	if err != nil || t.Before(minMoment) || t.After(maxMoment) {
		return 0, false
	}
	tid := uint64(t.UnixNano())
	if FormatVersionName(tid) != s {
		return 0, false
	}
	return tid, true
}

// FormatTID prints a transaction id as the 0x form ParseWhen accepts.
func FormatTID(tid uint64) string {
	return fmt.Sprintf("0x%016x", tid)
}
