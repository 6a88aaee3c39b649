package history

import (
	"fmt"
	"sort"
	"time"
)

// Rule keeps one moment per Keep-long grain for history younger than For
// (SPEC section 5). The windows stack: a policy's first rule covers ages 0
// to its For, the next from there to its own For, and so on.
type Rule struct {
	Keep    time.Duration
	For     time.Duration
	Forever bool // For is unbounded; only the last rule may say so
}

func (r Rule) String() string {
	if r.Forever {
		return fmt.Sprintf("%v for forever", r.Keep)
	}
	return fmt.Sprintf("%v for %v", r.Keep, r.For)
}

// Policy is a list of rules in window order. An empty policy keeps all
// history: nothing is ever destroyed until a policy says so.
type Policy []Rule

// Validate says which rule is wrong and why: grains and ages positive, ages
// increasing, each grain a multiple of the one before (so grains nest and a
// moment thinned once is never needed again), forever only last.
func (p Policy) Validate() error {
	for i, r := range p {
		n := i + 1
		switch {
		case r.Keep <= 0:
			return fmt.Errorf("retention rule %d (%v): the grain must be positive", n, r)
		case !r.Forever && r.For <= 0:
			return fmt.Errorf("retention rule %d (%v): the age must be positive", n, r)
		case r.Forever && i != len(p)-1:
			return fmt.Errorf("retention rule %d (%v): only the last rule can keep for ever", n, r)
		case !r.Forever && r.Keep > r.For:
			return fmt.Errorf("retention rule %d (%v): the grain is longer than the age it covers", n, r)
		}
		if i == 0 {
			continue
		}
		prev := p[i-1]
		if !r.Forever && r.For <= prev.For {
			return fmt.Errorf("retention rule %d (%v): its age must be greater than rule %d's %v", n, r, i, prev.For)
		}
		if r.Keep%prev.Keep != 0 {
			return fmt.Errorf("retention rule %d (%v): its grain must be a multiple of rule %d's %v", n, r, i, prev.Keep)
		}
	}
	return nil
}

// grain is the grain that applies to history of the given age, or 0 when
// no rule covers it (older than the last window: that history goes).
func (p Policy) grain(age time.Duration) time.Duration {
	for _, r := range p {
		if r.Forever || age < r.For {
			return r.Keep
		}
	}
	return 0
}

// collapse says that every moment in [Lo, To) reads as the state at To: the
// transactions in between were thinned away by the cleaner. To is always a
// kept transaction.
type collapse struct {
	Lo, To TID
}

// collapses is a sorted, disjoint list of collapsed ranges.
type collapses []collapse

// snap maps a moment to the one whose state it reads: the end of its
// collapsed range, or itself.
func (cs collapses) snap(at TID) TID {
	i := sort.Search(len(cs), func(i int) bool { return cs[i].To > at })
	if i < len(cs) && cs[i].Lo <= at {
		return cs[i].To
	}
	return at
}

// covers reports whether a record alive in [create, delete) is seen by no
// kept moment: both ends fall within one collapsed range.
func (cs collapses) covers(create, delete TID) bool {
	if delete == 0 {
		return false
	}
	i := sort.Search(len(cs), func(i int) bool { return cs[i].To >= delete })
	return i < len(cs) && cs[i].Lo <= create
}

// kept decides, for the transactions txns (ascending, state-changing ones
// only), which are kept moments under p at now: the newest transaction of
// each grain that has ended, every transaction of a grain still running, and
// always the newest transaction (the live state). Grains are aligned to the
// Unix epoch, so days end at midnight UTC; since each grain is a multiple of
// the one before, a transaction not kept at one time is never kept later.
func (p Policy) kept(txns []TID, now TID) []bool {
	out := make([]bool, len(txns))
	for i, t := range txns {
		if i == len(txns)-1 || t >= now {
			out[i] = true
			continue
		}
		g := TID(p.grain(time.Duration(now - t)))
		if g == 0 {
			continue
		}
		end := (t/g + 1) * g
		out[i] = end > now || txns[i+1] >= end
	}
	return out
}

// plan works out the collapsed ranges after thinning txns under p at now,
// merging the ranges an earlier pass left (old). It returns the full new
// list and the ranges that are new or grew, which the pass must record.
func (p Policy) plan(txns []TID, old collapses, now TID) (all, changed collapses) {
	keep := p.kept(txns, now)
	for i, t := range txns {
		// A transaction thinned once stays thinned, even if the policy
		// changed since: its records may be gone.
		if old.snap(t) != t {
			keep[i] = false
		}
	}
	oldByTo := make(map[TID]TID, len(old))
	for _, c := range old {
		oldByTo[c.To] = c.Lo
	}
	// Ranges whose end is not among txns (it cannot happen: an end is a
	// kept transaction, and kept transactions stay) are carried over.
	inTxns := make(map[TID]bool, len(old))
	var lo TID
	open := false
	for i, t := range txns {
		start := t
		if l, ok := oldByTo[t]; ok {
			start = l
			inTxns[t] = true
		}
		if !keep[i] {
			if !open || start < lo {
				lo = start
			}
			open = true
			continue
		}
		if open || start != t {
			if !open || start < lo {
				lo = start
			}
			c := collapse{Lo: lo, To: t}
			all = append(all, c)
			if l, ok := oldByTo[t]; !ok || l != lo {
				changed = append(changed, c)
			}
		}
		open = false
	}
	// Kept moments stay in the transaction index, so every old range ends
	// at one of txns; one that does not is carried over unless a new
	// range swallowed it.
	for _, c := range old {
		if !inTxns[c.To] && all.snap(c.Lo) == c.Lo {
			all = append(all, c)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].To < all[j].To })
	return all, changed
}
