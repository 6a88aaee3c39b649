package pack

import (
	"container/list"
	"sync"

	"github.com/asof/asof/history/internal/record"
)

// BlockCache keeps copies of recently read, already checked blocks (made
// by readChunk, for the reads that do not go through the packs' mappings),
// so that they are read and checked once. Reads from the mappings need no
// copy and do not use it; nor does a partial write's read of the committed
// block it merges into (Tx.chunk): the write supersedes that block.
type BlockCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recent
	items map[record.Hash]*list.Element
}

type cacheEntry struct {
	h    record.Hash
	data []byte
}

// BlockCacheBytes bounds the cache whatever the store's chunk size.
const BlockCacheBytes = 16 << 20

func NewBlockCache(n int) *BlockCache {
	return &BlockCache{max: n, order: list.New(), items: map[record.Hash]*list.Element{}}
}

// get returns a block's bytes; callers must not modify them.
func (c *BlockCache) Get(h record.Hash) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.items[h]; e != nil {
		c.order.MoveToFront(e)
		return e.Value.(*cacheEntry).data
	}
	return nil
}

func (c *BlockCache) Put(h record.Hash, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.items[h]; e != nil {
		c.order.MoveToFront(e)
		return
	}
	c.items[h] = c.order.PushFront(&cacheEntry{h: h, data: data})
	for c.order.Len() > c.max {
		e := c.order.Back()
		c.order.Remove(e)
		delete(c.items, e.Value.(*cacheEntry).h)
	}
}
