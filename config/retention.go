package config

import (
	"fmt"
	"strings"
	"time"
)

// Rule is one retention rule, {keep: GRAIN, for: AGE} (docs/SPEC.md section 5).
//
// The rules stack into consecutive age windows: rule 1 covers ages
// (0, For1], rule 2 covers (For1, For2], and so on. Inside its window a rule
// keeps one state per Keep-long grain (the state at the grain's end).
// History older than the last For is dropped unless the last rule is
// Forever. No rules at all means nothing is ever pruned.
type Rule struct {
	Keep    time.Duration // the grain: one kept state per Keep of history
	For     time.Duration // the age where this rule's window ends; 0 when Forever
	Forever bool          // the window never ends (only the last rule)
}

// String renders the rule in the compact form ParseRetention accepts,
// e.g. "1m for 24h" or "1w for forever".
func (r Rule) String() string {
	if r.Forever {
		return FormatDuration(r.Keep) + " for forever"
	}
	return FormatDuration(r.Keep) + " for " + FormatDuration(r.For)
}

// windowStart returns where rule i's window starts, given the rules before it
// (the previous rule's For, or 0 for the first rule).
func windowStart(rules []Rule, i int) time.Duration {
	if i == 0 {
		return 0
	}
	return rules[i-1].For
}

// rawRule is a rule as the user wrote it, kept for error messages: saying
// "rule 2 (1m for 24h)" in the user's own words finds the line fastest.
type rawRule struct {
	keep, age       string
	hasKeep, hasFor bool
}

func (r rawRule) text() string {
	switch {
	case r.hasKeep && r.hasFor:
		return r.keep + " for " + r.age
	case r.hasKeep:
		return "keep: " + r.keep
	case r.hasFor:
		return "for: " + r.age
	}
	return "empty"
}

// ParseRetention parses the compact one-line form of a retention policy
// used by ASOF_RETENTION and --retention: comma-separated rules
// "GRAIN for AGE", an optional leading "keep" on each, e.g.
// "30s for 1h, 1m for 24h, 1w for forever". An empty string means no rules
// (keep everything). The rules are validated as in a config file.
func ParseRetention(s string) ([]Rule, error) {
	raws, err := splitRetention(s)
	if err != nil {
		return nil, err
	}
	rules, errs := buildRetention(raws)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return rules, nil
}

// splitRetention splits the compact form into raw rules.
func splitRetention(s string) ([]rawRule, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var raws []rawRule
	for i, part := range strings.Split(s, ",") {
		r, err := parseCompactRule(part)
		if err != nil {
			return nil, fmt.Errorf("rule %d (%s): %v", i+1, strings.TrimSpace(part), err)
		}
		raws = append(raws, r)
	}
	return raws, nil
}

func parseCompactRule(s string) (rawRule, error) {
	f := strings.Fields(s)
	if len(f) > 0 && strings.EqualFold(f[0], "keep") {
		f = f[1:]
	}
	if len(f) != 3 || !strings.EqualFold(f[1], "for") {
		return rawRule{}, fmt.Errorf(`is not "GRAIN for AGE" (e.g. "1m for 24h", "1w for forever")`)
	}
	return rawRule{keep: f[0], age: f[2], hasKeep: true, hasFor: true}, nil
}

// buildRetention parses and validates raw rules. Each error says which rule
// (1-based, in the user's words) is wrong and why. The constraints exist so
// that the cleaner's job is well defined:
//
//   - keep and for are positive durations: a zero grain or an empty window
//     means nothing.
//   - for increases strictly from rule to rule: windows stack, each starting
//     where the previous one ends, so a non-increasing age would give a
//     window of no length (or a negative one).
//   - each grain is a whole multiple of the previous rule's grain: as
//     history ages from one window into the next, its kept states are
//     merged into coarser grains; if every coarse grain boundary is also a
//     fine grain boundary, the state the coarse grain keeps is one the fine
//     grain already kept, so aging never needs a state that was discarded.
//   - a grain is not longer than its own window: otherwise no grain fits in
//     the window and the rule would keep nothing, which is surely not what
//     was meant (the forever window is unbounded, so any grain fits).
//   - for: forever only on the last rule: it covers all older history, so
//     any rule after it would never apply.
func buildRetention(raws []rawRule) ([]Rule, []error) {
	var (
		rules []Rule
		errs  []error
	)
	for i, raw := range raws {
		n := i + 1
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("rule %d (%s): %s", n, raw.text(), fmt.Sprintf(format, args...)))
		}
		if !raw.hasKeep {
			fail("keep is missing (the grain, e.g. keep: 1m)")
			continue
		}
		if !raw.hasFor {
			fail("for is missing (the age the rule reaches, e.g. for: 24h, or for: forever on the last rule)")
			continue
		}
		var r Rule
		keep, err := ParseDuration(raw.keep)
		if err != nil {
			fail("keep %q is not a duration (use e.g. 30s, 1m, 1h, 1d, 1w)", raw.keep)
			continue
		}
		if keep <= 0 {
			fail("keep must be a positive duration, got %s", raw.keep)
			continue
		}
		r.Keep = keep
		if strings.EqualFold(raw.age, "forever") {
			r.Forever = true
		} else {
			age, err := ParseDuration(raw.age)
			if err != nil {
				fail("for %q is not a duration or forever (use e.g. 1h, 24h, 7d, 30d, forever)", raw.age)
				continue
			}
			if age <= 0 {
				fail("for must be a positive duration, got %s", raw.age)
				continue
			}
			r.For = age
		}
		rules = append(rules, r)
	}
	if len(errs) > 0 {
		// Relations between rules are meaningless while a rule is unparsed.
		return nil, errs
	}
	for i, r := range rules {
		n := i + 1
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("rule %d (%s): %s", n, raws[i].text(), fmt.Sprintf(format, args...)))
		}
		if i > 0 {
			prev := rules[i-1]
			if prev.Forever {
				// Reported on the forever rule itself below; skip the rest.
				continue
			}
			if !r.Forever && r.For <= prev.For {
				fail("for %s must be longer than rule %d's %s: each rule's window starts where the previous one ends",
					FormatDuration(r.For), i, FormatDuration(prev.For))
			}
			if r.Keep%prev.Keep != 0 {
				fail("grain %s is not a whole multiple of rule %d's grain %s: an older grain must be made of whole newer grains",
					FormatDuration(r.Keep), i, FormatDuration(prev.Keep))
			}
		}
		if r.Forever && i != len(rules)-1 {
			fail("for: forever must be the last rule: it covers all older history, so rule %d would never apply", n+1)
			continue
		}
		if !r.Forever {
			start := windowStart(rules, i)
			if width := r.For - start; width > 0 && r.Keep > width {
				fail("grain %s is longer than its window (%s to %s, %s long), so it would keep nothing: use a grain of at most %s or a later for",
					FormatDuration(r.Keep), FormatDuration(start), FormatDuration(r.For), FormatDuration(width), FormatDuration(width))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rules, nil
}
