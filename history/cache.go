package history

import (
	"container/list"
	"sync"
)

// blockCache keeps recently read, already verified blocks, so a client
// reading a 64 KiB chunk in small pieces reads and hashes it once.
type blockCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recent
	items map[Hash]*list.Element
}

type cacheEntry struct {
	h    Hash
	data []byte
}

// blockCacheBytes bounds the cache whatever the store's chunk size.
const blockCacheBytes = 16 << 20

func newBlockCache(n int) *blockCache {
	return &blockCache{max: n, order: list.New(), items: map[Hash]*list.Element{}}
}

// get returns a block's bytes; callers must not modify them.
func (c *blockCache) get(h Hash) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.items[h]; e != nil {
		c.order.MoveToFront(e)
		return e.Value.(*cacheEntry).data
	}
	return nil
}

func (c *blockCache) put(h Hash, data []byte) {
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
