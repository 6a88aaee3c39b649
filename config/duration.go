package config

import (
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

// Units beyond time.ParseDuration. Retention windows are naturally said in
// days and weeks ("1d for 30d"); Go stops at hours, and "720h" is not what
// anyone means to write. A day is 24h and a week 7d: retention ages are
// measured on the transaction clock, not the calendar, so DST is irrelevant.
const (
	Day  = 24 * time.Hour
	Week = 7 * Day
)

// ParseDuration parses a duration the way time.ParseDuration does, and also
// accepts the units d (24h) and w (7d), alone or mixed with the others:
// "30s", "1m", "36h", "1d", "1w", "1d12h", "1.5d", "-2w".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	// No d or w anywhere: Go's own parser has exactly the semantics we want
	// (none of its units contains either letter).
	if !strings.ContainsAny(s, "dw") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return d, nil
	}
	bad := fmt.Errorf("invalid duration %q", s)
	rest := s
	neg := false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if rest == "" {
		return 0, bad
	}
	// Sum in big.Int so that overflow is detected instead of wrapping.
	total := new(big.Int)
	for rest != "" {
		// number: digits, optionally '.' and more digits
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		intPart := rest[:i]
		fracPart := ""
		if i < len(rest) && rest[i] == '.' {
			j := i + 1
			for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
				j++
			}
			fracPart = rest[i+1 : j]
			i = j
		}
		if intPart == "" && fracPart == "" {
			return 0, bad
		}
		// unit: everything up to the next number
		j := i
		for j < len(rest) && rest[j] != '.' && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		unit := rest[i:j]
		var ns *big.Int
		switch unit {
		case "d", "w":
			per := int64(Day)
			if unit == "w" {
				per = int64(Week)
			}
			ns = scaleDecimal(intPart, fracPart, per)
		default:
			// Delegate every Go unit (and its errors) to the standard parser.
			num := intPart
			if fracPart != "" {
				num += "." + fracPart
			}
			d, err := time.ParseDuration(num + unit)
			if err != nil || unit == "" {
				return 0, bad
			}
			ns = big.NewInt(int64(d))
		}
		total.Add(total, ns)
		rest = rest[j:]
	}
	if neg {
		total.Neg(total)
	}
	if !total.IsInt64() {
		return 0, fmt.Errorf("duration %q is out of range", s)
	}
	return time.Duration(total.Int64()), nil
}

// scaleDecimal returns (intPart.fracPart) * per, truncated to an integer as
// time.ParseDuration truncates below a nanosecond.
func scaleDecimal(intPart, fracPart string, per int64) *big.Int {
	n := new(big.Int)
	n.SetString("0"+intPart+fracPart, 10) // digits only: cannot fail
	n.Mul(n, big.NewInt(per))
	div := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(fracPart))), nil)
	return n.Quo(n, div)
}

// FormatDuration writes d in the largest units that represent it exactly,
// using w and d like ParseDuration accepts: 168h -> "1w", 36h -> "1d12h",
// 90m -> "1h30m". Durations that are not whole seconds use
// time.Duration.String ("500ms", "1.5s"). ParseDuration(FormatDuration(d))
// == d for every d.
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d < 0 {
		if d == math.MinInt64 {
			return d.String()
		}
		return "-" + FormatDuration(-d)
	}
	if d%time.Second != 0 {
		return d.String()
	}
	var b strings.Builder
	for _, u := range []struct {
		size time.Duration
		name string
	}{{Week, "w"}, {Day, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.size; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.size
		}
	}
	return b.String()
}
