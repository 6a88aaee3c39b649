package volume

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// packs is an in-memory object store for the cache's unit tests: the
// getter the cache is handed, counting the ranges it is asked for.
type packs struct {
	data  map[uint32][]byte
	gets  atomic.Int64
	fail  atomic.Bool
	delay time.Duration
}

func newPacks(t *testing.T, sizes map[uint32]int) *packs {
	p := &packs{data: map[uint32][]byte{}}
	for seq, n := range sizes {
		b := make([]byte, n)
		rand.Read(b)
		p.data[seq] = b
	}
	return p
}

func (p *packs) getter(seq uint32) func(off, length int64) ([]byte, error) {
	return func(off, length int64) ([]byte, error) {
		p.gets.Add(1)
		time.Sleep(p.delay)
		if p.fail.Load() {
			return nil, &unavailable{where: "test", cause: "down"}
		}
		b := p.data[seq]
		if off >= int64(len(b)) {
			return nil, nil
		}
		return bytes.Clone(b[off:min(off+length, int64(len(b)))]), nil
	}
}

func (p *packs) read(t *testing.T, c *Cache, seq uint32, off, n int) {
	t.Helper()
	buf := make([]byte, n)
	got, err := c.readAt("ns", seq, buf, int64(off), p.getter(seq))
	want := p.data[seq][off:min(off+n, len(p.data[seq]))]
	if got != len(want) || !bytes.Equal(buf[:got], want) {
		t.Fatalf("read pack %d at %d+%d: %d bytes (%v), wrong bytes or count", seq, off, n, got, err)
	}
	if (got < n) != (err == io.EOF) {
		t.Fatalf("read pack %d at %d+%d: %d bytes, err %v", seq, off, n, got, err)
	}
}

const testChunk = 256 << 10

func TestCacheServesFromDiskAfterFirstFetch(t *testing.T) {
	p := newPacks(t, map[uint32]int{1: 3*testChunk + 777})
	c, err := OpenCache(t.TempDir(), 64<<20, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	p.read(t, c, 1, 100, 5000)
	p.read(t, c, 1, testChunk-10, 20) // across two pieces
	p.read(t, c, 1, 3*testChunk, 777)
	p.read(t, c, 1, 3*testChunk+700, 500) // across the end
	fetched := p.gets.Load()
	if fetched != 3 {
		t.Fatalf("%d fetches for pieces 0, 1 and 3, want 3", fetched)
	}
	p.fail.Store(true) // the store goes away: cached pieces still read
	p.read(t, c, 1, 0, 2*testChunk)
	p.read(t, c, 1, 3*testChunk, 777)
	if p.gets.Load() != fetched {
		t.Fatal("a cached piece was fetched again")
	}
	buf := make([]byte, 10)
	if _, err := c.readAt("ns", 1, buf, 2*testChunk, p.getter(1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("an uncached piece while the store is down = %v", err)
	}
	if c.Stats().Hits.Load() == 0 {
		t.Fatal("no hits counted")
	}
}

func TestCacheBoundAndLRUEviction(t *testing.T) {
	p := newPacks(t, map[uint32]int{1: 8 * testChunk, 2: 8 * testChunk})
	entry := int64(entryHeaderLen(testChunk) + testChunk)
	bound := 4*entry + entry/2 // room for four pieces
	dir := t.TempDir()
	c, err := OpenCache(dir, bound, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		p.read(t, c, 1, i*testChunk, 10)
	}
	p.read(t, c, 1, 0, 10) // piece 0 is now the most recent
	before := p.gets.Load()
	p.read(t, c, 2, 0, 10) // a fifth piece evicts the least recent: piece 1
	if c.Used() > bound {
		t.Fatalf("cache holds %d bytes, bound %d", c.Used(), bound)
	}
	if c.Stats().Evictions.Load() != 1 {
		t.Fatalf("%d evictions, want 1", c.Stats().Evictions.Load())
	}
	p.read(t, c, 1, 0, 10)
	p.read(t, c, 1, 2*testChunk, 10)
	if p.gets.Load() != before+1 {
		t.Fatal("a piece that should have stayed was fetched again")
	}
	p.read(t, c, 1, testChunk, 10)
	if p.gets.Load() != before+2 {
		t.Fatal("the least recently used piece was not the one evicted")
	}
	// On disk, the files agree with the bound.
	var onDisk int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			onDisk += info.Size()
		}
		return nil
	})
	if onDisk != c.Used() || onDisk > bound {
		t.Fatalf("%d bytes on disk, %d counted, bound %d", onDisk, c.Used(), bound)
	}
	// Read everything many times over: the bound holds throughout.
	for round := range 3 {
		for i := range 8 {
			p.read(t, c, uint32(1+(i+round)%2), i*testChunk+round, testChunk/2)
			if c.Used() > bound {
				t.Fatalf("cache holds %d bytes, bound %d", c.Used(), bound)
			}
		}
	}
}

func TestCacheReopenKeepsEntriesWithinANewBound(t *testing.T) {
	p := newPacks(t, map[uint32]int{1: 6 * testChunk})
	dir := t.TempDir()
	c, err := OpenCache(dir, 64<<20, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		p.read(t, c, 1, i*testChunk, 1)
	}
	os.WriteFile(filepath.Join(dir, "ns", "00000001-00000009.tmp"), []byte("torn"), 0o644)
	entry := int64(entryHeaderLen(testChunk) + testChunk)
	c2, err := OpenCache(dir, 2*entry, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Used() != 2*entry {
		t.Fatalf("reopened cache holds %d bytes, want two pieces, %d", c2.Used(), 2*entry)
	}
	if _, err := os.Stat(filepath.Join(dir, "ns", "00000001-00000009.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a torn temporary entry survived reopening")
	}
	before := p.gets.Load()
	p.read(t, c2, 1, 4*testChunk, 2*testChunk) // the two newest stayed
	if got := p.gets.Load() - before; got != 0 {
		t.Fatalf("%d fetches of the two pieces kept", got)
	}
	p.read(t, c2, 1, 0, 1)
	if got := p.gets.Load() - before; got != 1 {
		t.Fatalf("%d fetches of an evicted piece, want 1", got)
	}
}

func TestCacheDamageIsDetectedAndFetchedAgain(t *testing.T) {
	p := newPacks(t, map[uint32]int{1: 2 * testChunk})
	dir := t.TempDir()
	c, err := OpenCache(dir, 64<<20, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	p.read(t, c, 1, 0, 2*testChunk)
	name := c.path(pieceKey{ns: "ns", seq: 1, idx: 0})
	hlen := int64(entryHeaderLen(testChunk))
	for _, damage := range []struct {
		what string
		fn   func(f *os.File)
	}{
		{"a flipped data byte", func(f *os.File) {
			b := make([]byte, 1)
			f.ReadAt(b, hlen+70000)
			b[0] ^= 0x40
			f.WriteAt(b, hlen+70000)
		}},
		{"a flipped header byte", func(f *os.File) {
			b := make([]byte, 1)
			f.ReadAt(b, 9)
			b[0] ^= 1
			f.WriteAt(b, 9)
		}},
		{"a cut entry", func(f *os.File) { f.Truncate(hlen + 1000) }},
		{"zeros", func(f *os.File) { f.WriteAt(make([]byte, 4096), 0) }},
	} {
		p.read(t, c, 1, 0, 1) // make sure it is cached
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		damage.fn(f)
		f.Close()
		before, damaged := p.gets.Load(), c.Stats().Damaged.Load()
		p.read(t, c, 1, 65536, 10000) // the segment holding byte 70000
		if p.gets.Load() != before+1 || c.Stats().Damaged.Load() != damaged+1 {
			t.Fatalf("%s: not detected (fetches %d→%d, damaged %d→%d)", damage.what, before, p.gets.Load(), damaged, c.Stats().Damaged.Load())
		}
		p.read(t, c, 1, 0, testChunk) // served from the fresh entry
		if p.gets.Load() != before+1 {
			t.Fatalf("%s: the entry fetched again was not kept", damage.what)
		}
	}
}

func TestCacheFetchesAPieceOnceForConcurrentReaders(t *testing.T) {
	p := newPacks(t, map[uint32]int{1: testChunk})
	p.delay = 50 * time.Millisecond
	c, err := OpenCache(t.TempDir(), 64<<20, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.read(t, c, 1, i*1000, 1000)
		}()
	}
	wg.Wait()
	if p.gets.Load() != 1 {
		t.Fatalf("%d fetches of one piece for 8 concurrent readers", p.gets.Load())
	}
}

func TestCacheTooSmallForAPieceStillReads(t *testing.T) {
	p := newPacks(t, map[uint32]int{1: 2 * testChunk})
	c, err := OpenCache(t.TempDir(), 1000, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	p.read(t, c, 1, 10, testChunk+10)
	p.read(t, c, 1, 10, testChunk+10)
	if c.Used() != 0 || p.gets.Load() != 4 {
		t.Fatalf("used %d, %d fetches", c.Used(), p.gets.Load())
	}
}

func TestCacheForgetDropsAPacksPieces(t *testing.T) {
	p := newPacks(t, map[uint32]int{1: 2 * testChunk, 2: testChunk})
	c, err := OpenCache(t.TempDir(), 64<<20, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	p.read(t, c, 1, 0, 2*testChunk)
	p.read(t, c, 2, 0, 1)
	c.forget("ns", 1)
	entry := int64(entryHeaderLen(testChunk) + testChunk)
	if c.Used() != entry {
		t.Fatalf("after forgetting pack 1 the cache holds %d bytes, want %d", c.Used(), entry)
	}
}
