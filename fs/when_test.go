package fs

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the DST tests must never skip for want of zoneinfo
)

// at converts an RFC 3339 UTC instant to the tid for it.
func at(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(v.UnixNano())
}

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func show(tid uint64) string { return time.Unix(0, int64(tid)).UTC().Format(time.RFC3339Nano) }

func TestSplitWhen(t *testing.T) {
	for _, c := range []struct {
		in, name, when string
		has            bool
	}{
		{"a.txt@@2007-08-06", "a.txt", "2007-08-06", true},
		{"@@-2h", "", "-2h", true},
		{"a.txt", "a.txt", "", false},
		{"a@@", "a", "", true},
		{"@@", "", "", true},
		{"@@@@", "", "@@", true},
		{"a@@b@@c", "a", "b@@c", true},
		{"a@b", "a@b", "", false},
		{"", "", "", false},
	} {
		name, when, has := SplitWhen(c.in)
		if name != c.name || when != c.when || has != c.has {
			t.Errorf("SplitWhen(%q) = %q, %q, %v; want %q, %q, %v", c.in, name, when, has, c.name, c.when, c.has)
		}
	}
}

func TestWhenForms(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)
	ist := time.FixedZone("IST", 5*3600+30*60)
	mst := time.FixedZone("MST", -7*3600)
	berlin := zone(t, "Europe/Berlin")
	ny := zone(t, "America/New_York")
	ago := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339Nano) }

	for _, c := range []struct {
		in   string
		loc  *time.Location
		want string // the moment, in UTC
	}{
		// precision: end of day, minute, second; a fraction is that instant
		{"2007-08-06", time.UTC, "2007-08-06T23:59:59.999999999Z"},
		{"2007-08-06T13:56", time.UTC, "2007-08-06T13:56:59.999999999Z"},
		{"2007-08-06T13:56:07", time.UTC, "2007-08-06T13:56:07.999999999Z"},
		{"2007-08-06T13:56:07.25", time.UTC, "2007-08-06T13:56:07.25Z"},
		{"2007-08-06T13:56:07.0", time.UTC, "2007-08-06T13:56:07Z"},
		{"2007-08-06T13:56:07.000000001", time.UTC, "2007-08-06T13:56:07.000000001Z"},
		{"2007-08-06T13:56:07.123456789", time.UTC, "2007-08-06T13:56:07.123456789Z"},
		{"2007-08-06T00:00", time.UTC, "2007-08-06T00:00:59.999999999Z"},
		{"2007-08-06T23:59:59", time.UTC, "2007-08-06T23:59:59.999999999Z"},
		{"2028-02-29", time.UTC, "2028-02-29T23:59:59.999999999Z"}, // leap day; the future is allowed
		{"2007-08-06", nil, "2007-08-06T23:59:59.999999999Z"},      // nil means UTC

		// fixed-offset history.timezone
		{"2007-08-06", ist, "2007-08-06T18:29:59.999999999Z"},
		{"2007-08-06T13:56", ist, "2007-08-06T08:26:59.999999999Z"},
		{"2007-08-06T13:56:07.25", mst, "2007-08-06T20:56:07.25Z"},
		{"2007-08-06", berlin, "2007-08-06T21:59:59.999999999Z"},

		// an explicit offset overrides history.timezone, date-only too
		{"2007-08-06Z", berlin, "2007-08-06T23:59:59.999999999Z"},
		{"2007-08-06+02:00", time.UTC, "2007-08-06T21:59:59.999999999Z"},
		{"2007-08-06-05:30", berlin, "2007-08-07T05:29:59.999999999Z"},
		{"2007-08-06T13:56Z", ist, "2007-08-06T13:56:59.999999999Z"},
		{"2007-08-06T13:56-05:30", time.UTC, "2007-08-06T19:26:59.999999999Z"},
		{"2007-08-06T13:56:07+02:00", ny, "2007-08-06T11:56:07.999999999Z"},
		{"2007-08-06T13:56:07.25+02:00", ny, "2007-08-06T11:56:07.25Z"},
		{"2007-08-06T13:56:07.25-00:00", ny, "2007-08-06T13:56:07.25Z"},
		{"2007-08-06T13:56:07.123456789Z", ny, "2007-08-06T13:56:07.123456789Z"},

		// transaction ids
		{"0x00000000deadbeef", ny, show(0xdeadbeef)},
		{"0x00000000DEADbeef", ny, show(0xdeadbeef)},
		{"0x0000000000000000", ny, "1970-01-01T00:00:00Z"},
		{"0x7fffffffffffffff", ny, "2262-04-11T23:47:16.854775807Z"},

		// relative to now; zero is now
		{"-90s", ny, ago(90 * time.Second)},
		{"-15m", ny, ago(15 * time.Minute)},
		{"-2h", ny, ago(2 * time.Hour)},
		{"-3d", ny, ago(3 * 24 * time.Hour)},
		{"-1w", ny, ago(7 * 24 * time.Hour)},
		{"-007m", ny, ago(7 * time.Minute)},
		{"-0s", ny, ago(0)},
		{"-0w", ny, ago(0)},
		{"-19000d", ny, ago(19000 * 24 * time.Hour)},

		// the edges of the representable range
		{"1970-01-01T00:00:00.0Z", ny, "1970-01-01T00:00:00Z"},
		{"1969-12-31-01:00", ny, "1970-01-01T00:59:59.999999999Z"}, // the day ends after 1970 began
		{"2262-04-11T23:47:16.854775807Z", ny, "2262-04-11T23:47:16.854775807Z"},
	} {
		w, err := ParseWhen(c.in, now, c.loc)
		if err != nil {
			t.Errorf("ParseWhen(%q): %v", c.in, err)
			continue
		}
		if w.Versions || w.Text != c.in || w.TID != at(t, c.want) {
			t.Errorf("ParseWhen(%q) = %+v (%s); want TID %s", c.in, w, show(w.TID), c.want)
		}
	}

	w, err := ParseWhen("", now, ny)
	if err != nil || w != (When{Versions: true}) {
		t.Errorf(`ParseWhen("") = %+v, %v; want the version listing`, w, err)
	}
}

// DST: a bare date ends at the next local midnight minus 1ns, however long
// the day; a time inside the spring gap means the instant before the jump;
// an ambiguous fall-back time means its later occurrence.
func TestWhenDST(t *testing.T) {
	now := time.Now()
	berlin := zone(t, "Europe/Berlin")
	ny := zone(t, "America/New_York")
	saoPaulo := zone(t, "America/Sao_Paulo")

	for _, c := range []struct {
		in   string
		loc  *time.Location
		want string
	}{
		{"2021-03-28", berlin, "2021-03-28T21:59:59.999999999Z"}, // 23-hour day
		{"2021-10-31", berlin, "2021-10-31T22:59:59.999999999Z"}, // 25-hour day
		{"2021-03-14", ny, "2021-03-15T03:59:59.999999999Z"},
		{"2021-11-07", ny, "2021-11-08T04:59:59.999999999Z"},

		// New York springs forward at 02:00 EST = 07:00Z to 03:00 EDT.
		{"2021-03-14T01:59", ny, "2021-03-14T06:59:59.999999999Z"},
		{"2021-03-14T02:00", ny, "2021-03-14T06:59:59.999999999Z"},
		{"2021-03-14T02:30", ny, "2021-03-14T06:59:59.999999999Z"},
		{"2021-03-14T02:59:59.999999999", ny, "2021-03-14T06:59:59.999999999Z"},
		{"2021-03-14T03:00", ny, "2021-03-14T07:00:59.999999999Z"},
		{"2021-03-14T03:00:00.0", ny, "2021-03-14T07:00:00Z"},
		// New York falls back at 02:00 EDT = 06:00Z to 01:00 EST.
		{"2021-11-07T00:59", ny, "2021-11-07T04:59:59.999999999Z"},
		{"2021-11-07T01:00:00.0", ny, "2021-11-07T06:00:00Z"},
		{"2021-11-07T01:30", ny, "2021-11-07T06:30:59.999999999Z"},
		{"2021-11-07T01:30-04:00", ny, "2021-11-07T05:30:59.999999999Z"}, // an offset picks the first
		{"2021-11-07T01:59:59", ny, "2021-11-07T06:59:59.999999999Z"},
		{"2021-11-07T02:00", ny, "2021-11-07T07:00:59.999999999Z"},
		// Berlin springs forward at 01:00Z and falls back at 01:00Z.
		{"2021-03-28T02:30", berlin, "2021-03-28T00:59:59.999999999Z"},
		{"2021-10-31T02:30:00.5", berlin, "2021-10-31T01:30:00.5Z"},
		// Sao Paulo's 2018 spring-forward skipped midnight (00:00 -03 = 03:00Z
		// became 01:00 -02), so 3 November ends just before the jump.
		{"2018-11-03", saoPaulo, "2018-11-04T02:59:59.999999999Z"},
		{"2018-11-04", saoPaulo, "2018-11-05T01:59:59.999999999Z"},
	} {
		w, err := ParseWhen(c.in, now, c.loc)
		if err != nil {
			t.Errorf("ParseWhen(%q, %s): %v", c.in, c.loc, err)
		} else if w.TID != at(t, c.want) {
			t.Errorf("ParseWhen(%q, %s) = %s; want %s", c.in, c.loc, show(w.TID), c.want)
		}
	}

	// Every day of a year with transitions in the table and of one far
	// enough ahead that they come from the zone's rule: the end of the day is
	// the next local midnight minus 1ns, and both short and long days occur.
	for _, loc := range []*time.Location{berlin, ny} {
		for _, year := range []int{2021, 2100} {
			lengths := map[time.Duration]bool{}
			for d := time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC); d.Year() == year; d = d.AddDate(0, 0, 1) {
				in := d.Format("2006-01-02")
				start := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, loc)
				next := time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, loc)
				lengths[next.Sub(start)] = true
				w, err := ParseWhen(in, now, loc)
				if err != nil || w.TID != uint64(next.UnixNano()-1) {
					t.Fatalf("ParseWhen(%q, %s) = %s, %v; want %s", in, loc, show(w.TID), err, show(uint64(next.UnixNano()-1)))
				}
			}
			if !lengths[23*time.Hour] || !lengths[25*time.Hour] {
				t.Errorf("%s %d: day lengths %v, want 23h and 25h days", loc, year, lengths)
			}
		}
	}
}

// Around each transition, every minute resolves to the last instant whose
// local reading is at most the end of that minute, so later text never
// means an earlier moment.
func TestWhenMonotone(t *testing.T) {
	for _, c := range []struct {
		zone string
		day  time.Time
	}{
		{"America/New_York", time.Date(2021, 3, 14, 0, 0, 0, 0, time.UTC)},
		{"America/New_York", time.Date(2021, 11, 7, 0, 0, 0, 0, time.UTC)},
		{"Europe/Berlin", time.Date(2021, 3, 28, 0, 0, 0, 0, time.UTC)},
		{"Europe/Berlin", time.Date(2021, 10, 31, 0, 0, 0, 0, time.UTC)},
	} {
		loc := zone(t, c.zone)
		reading := func(tid uint64) time.Time {
			l := time.Unix(0, int64(tid)).In(loc)
			return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
		}
		var prev uint64
		for wall := c.day.Add(-3 * time.Hour); wall.Before(c.day.Add(27 * time.Hour)); wall = wall.Add(time.Minute) {
			in := wall.Format("2006-01-02T15:04")
			w, err := ParseWhen(in, time.Now(), loc)
			if err != nil {
				t.Fatalf("ParseWhen(%q): %v", in, err)
			}
			end := wall.Add(time.Minute - 1)
			if reading(w.TID).After(end) || !reading(w.TID+1).After(end) {
				t.Fatalf("%s %s = %s: not the last instant reading at most %s", c.zone, in, show(w.TID), end)
			}
			if w.TID < prev {
				t.Fatalf("%s %s = %s, before the previous minute's %s", c.zone, in, show(w.TID), show(prev))
			}
			prev = w.TID
		}
	}
}

func TestWhenBad(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct{ in, why string }{
		{"2007-13-01", "month 13 is not 1-12"},
		{"2007-00-10", "month 0 is not 1-12"},
		{"2007-02-30", "February 2007 has no day 30"},
		{"2007-02-29", "February 2007 has no day 29"},
		{"2007-04-31", "April 2007 has no day 31"},
		{"2007-08-00", "August 2007 has no day 0"},
		{"2007-08-06T24:00", "hour 24 is not 0-23"},
		{"2007-08-06T13:60", "minute 60 is not 0-59"},
		{"2007-08-06T13:56:60", "second 60 is not 0-59"},
		{"2007-08-06T13", "expected HH:MM after T"},
		{"2007-08-06T1:56", "expected HH:MM after T"},
		{"2007-08-06T", "expected HH:MM after T"},
		{"2007-08-06T13:56:7", "expected two digits of seconds"},
		{"2007-08-06T13:56:07.", "1-9 digits, not 0"},
		{"2007-08-06T13:56:07.1234567890", "1-9 digits, not 10"},
		{"2007-08-06T13:56:07,25", `unexpected ",25"`},
		{"2007-08-06T13:56.5", `unexpected ".5"`},
		{"2007-08-06 13:56", `unexpected " 13:56"`},
		{"2007-08-06 ", `unexpected " "`},
		{"2007-08-06x", `unexpected "x"`},
		{"2007-08-06t13:56", `unexpected "t13:56"`},
		{"2007-08-06T13:56z", `unexpected "z"`},
		{"2007-08-06T13:56:07.25Zjunk", `unexpected "junk"`},
		{"2007-08-06T13:56Z+02:00", `unexpected "+02:00"`},
		{"2007-08-06T13:56+2:00", "an offset is Z, +HH:MM or -HH:MM"},
		{"2007-08-06T13:56+02", "an offset is Z, +HH:MM or -HH:MM"},
		{"2007-08-06T13:56+0200", "an offset is Z, +HH:MM or -HH:MM"},
		{"2007-08-06T13:56+24:00", "an offset is Z, +HH:MM or -HH:MM"},
		{"2007-08-06T13:56-02:60", "an offset is Z, +HH:MM or -HH:MM"},
		{" 2007-08-06", "expected a date YYYY-MM-DD"},
		{"2007-8-6", "expected a date YYYY-MM-DD"},
		{"07-08-06", "expected a date YYYY-MM-DD"},
		{"２００７-08-06", "expected a date YYYY-MM-DD"},
		{"@@", "expected a date YYYY-MM-DD"},
		{"now", "expected a date YYYY-MM-DD"},
		{"+5m", "expected a date YYYY-MM-DD"},
		{"0X00000000deadbeef", "expected a date YYYY-MM-DD"},
		{"0x123", "exactly 16 hex digits, got 3"},
		{"0x", "exactly 16 hex digits, got 0"},
		{"0x00000000deadbeefa", "exactly 16 hex digits, got 17"},
		{"0x00000000deadbeeg", "is not 16 hex digits"},
		{"0x+0000000deadbeef", "is not 16 hex digits"},
		{"0x 0000000deadbeef", "is not 16 hex digits"},
		{"0x8000000000000000", "larger than 0x7fffffffffffffff"},
		{"0xffffffffffffffff", "larger than 0x7fffffffffffffff"},
		{"-5x", `unit "x" is not one of s m h d w`},
		{"-5", `unit "" is not one of s m h d w`},
		{"-5M", `unit "M" is not one of s m h d w`},
		{"-1h30m", `unit "h30m" is not one of s m h d w`},
		{"-5 m", `unit " m" is not one of s m h d w`},
		{"-5m ", `unit "m " is not one of s m h d w`},
		{"-", "followed by a number and a unit"},
		{"-m", "followed by a number and a unit"},
		{"--5m", "followed by a number and a unit"},
		{"- 5m", "followed by a number and a unit"},
		{"-1000000w", "too long ago"},
		{"-99999999999999999999s", "too long ago"},
		{"-100000d", "before 1970"},
		{"1969-12-31", "before 1970"},
		{"1969-12-31T23:59:59.999999999Z", "before 1970"},
		{"0000-01-01", "before 1970"},
		{"9999-12-31", "after the last representable moment"},
		{"2262-04-11T23:47:16.854775808Z", "after the last representable moment"},
	} {
		w, err := ParseWhen(c.in, now, time.UTC)
		if err == nil {
			t.Errorf("ParseWhen(%q) = %+v; want an error", c.in, w)
			continue
		}
		msg := err.Error()
		if !errors.Is(err, ErrBadWhen) || !strings.Contains(msg, c.why) ||
			!strings.Contains(msg, `"`+c.in+`"`) || !strings.Contains(msg, "accepted: ") {
			t.Errorf("ParseWhen(%q): %q; want ErrBadWhen, the input, %q and the accepted forms", c.in, msg, c.why)
		}
	}
}

func TestWhenVersionNames(t *testing.T) {
	berlin := zone(t, "Europe/Berlin")
	if got := FormatVersionName(at(t, "2007-08-06T13:56:07.123456789Z")); got != "2007-08-06T13:56:07.123456789Z" {
		t.Errorf("FormatVersionName = %q", got)
	}
	if got := FormatVersionName(0); got != "1970-01-01T00:00:00.000000000Z" {
		t.Errorf("FormatVersionName(0) = %q", got)
	}

	r := rand.New(rand.NewPCG(1, 2))
	tids := []uint64{0, 1, 999_999_999, 1_000_000_000, math.MaxInt64, math.MaxInt64 - 1}
	for range 10000 {
		tids = append(tids, r.Uint64N(math.MaxInt64+1))
	}
	for _, tid := range tids {
		name := FormatVersionName(tid)
		if got, ok := ParseVersionName(name); !ok || got != tid {
			t.Fatalf("ParseVersionName(%q) = %d, %v; want %d", name, got, ok, tid)
		}
		// A version's name and its FormatTID both lead back to that version.
		for _, s := range []string{name, FormatTID(tid)} {
			if w, err := ParseWhen(s, time.Now(), berlin); err != nil || w.TID != tid {
				t.Fatalf("ParseWhen(%q) = %+v, %v; want TID %d", s, w, err, tid)
			}
		}
	}

	for _, s := range []string{
		"",
		"2007-08-06T13:56:07Z",
		"2007-08-06T13:56:07.12345678Z",
		"2007-08-06T13:56:07.1234567890Z",
		"2007-08-06T13:56:07.123456789",
		"2007-08-06T13:56:07.123456789z",
		"2007-08-06T13:56:07.123456789+00:00",
		"2007-08-06T13:56:07.123456789+02:00",
		"2007-08-06T13:56:07.123456789Z ",
		"2007-02-30T00:00:00.000000000Z",
		"1969-12-31T23:59:59.999999999Z",
		"2262-04-11T23:47:16.854775808Z",
		"0x00000000deadbeef",
	} {
		if tid, ok := ParseVersionName(s); ok {
			t.Errorf("ParseVersionName(%q) = %d, true; want false", s, tid)
		}
	}
}

func TestWhenFormatTID(t *testing.T) {
	for tid, want := range map[uint64]string{
		0:              "0x0000000000000000",
		0xdeadbeef:     "0x00000000deadbeef",
		math.MaxUint64: "0xffffffffffffffff",
	} {
		if got := FormatTID(tid); got != want {
			t.Errorf("FormatTID(%#x) = %q; want %q", tid, got, want)
		}
	}
}

// Admin output prints moments as version names: a time asof history prints
// names that version in a name@@ listing, trailing zeros included (which
// time.RFC3339Nano drops).
func TestMomentIsAVersionName(t *testing.T) {
	tid := uint64(time.Date(2026, 11, 26, 11, 50, 15, 651914760, time.UTC).UnixNano())
	m := Moment{time.Unix(0, int64(tid))}
	const want = "2026-11-26T11:50:15.651914760Z"
	if m.String() != want || FormatVersionName(tid) != want {
		t.Fatalf("moment %s, version name %s, want %s", m, FormatVersionName(tid), want)
	}
	b, err := json.Marshal(struct{ T Moment }{m})
	if err != nil || string(b) != `{"T":"`+want+`"}` {
		t.Fatalf("JSON %s, %v", b, err)
	}
	var back struct{ T Moment }
	if err := json.Unmarshal(b, &back); err != nil || !back.T.Equal(m.Time) {
		t.Fatalf("read back %v, %v", back.T, err)
	}
	if got, ok := ParseVersionName(m.String()); !ok || got != tid {
		t.Fatalf("ParseVersionName(%s) = %d, %v", m, got, ok)
	}
}
