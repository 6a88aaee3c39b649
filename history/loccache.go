package history

import (
	"sync"

	"github.com/asof/asof/history/internal/pack"
)

// locCache remembers where blocks were found in the index, so a read of a
// block it has met skips that lookup (the index's block bucket is keyed by
// hash: every lookup is a descent to a random leaf). It needs no
// invalidation: a pack never changes where it holds a block, and a pack
// the cleaner removed is never made again under its number, so a
// remembered place holds that block (which the read checks against the
// pack's header, as always) or no longer exists, and the read then looks
// in the index again.
type locCache struct {
	mu  sync.Mutex
	max int
	m   map[Hash]pack.Loc
}

// locCacheMax bounds it: a 1 GiB file's blocks at 16 KiB, about 6 MiB.
const locCacheMax = 64 << 10

func newLocCache(n int) *locCache { return &locCache{max: n, m: make(map[Hash]pack.Loc)} }

func (c *locCache) get(h Hash) (pack.Loc, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	loc, ok := c.m[h]
	return loc, ok
}

// put remembers a place; when full it forgets one at random (map order),
// which costs no bookkeeping per read.
func (c *locCache) put(h Hash, loc pack.Loc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[h]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[h] = loc
}

// place sets where each block of pieces lies that it remembers, under one
// lock for the whole read, and reports whether it knew them all.
func (c *locCache) place(pieces []readPiece) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := true
	for i := range pieces {
		pc := &pieces[i]
		if pc.ref == nil || !pc.ref.Block || pc.has {
			continue
		}
		if pc.loc, pc.has = c.m[pc.ref.Hash]; !pc.has {
			all = false
		}
	}
	return all
}

func (c *locCache) forget(h Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, h)
}
