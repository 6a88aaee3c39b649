package volume

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Cache keeps pieces of remote packs on local disk, bounded in bytes, the
// piece used least recently going first. Packs are immutable and their
// numbers never reused, so a piece never goes stale; it can only be
// damaged, and every read checks the CRC-32C of the segments it touches:
// a damaged piece is dropped and fetched again, never served.
//
// A piece is the ChunkSize bytes of a pack at a multiple of ChunkSize (the
// last one shorter), fetched with one ranged GET: a block read cold
// brings its neighbours, which a file read in order asks for next.
//
// Entries are files under the cache directory, one per piece:
//
//	"ACP1" | data length u32 | crc32c of each 64 KiB segment u32... | crc32c of the header so far u32 | data
//
// They are written to a temporary name and renamed, unsynced: the cache
// is no one's only copy, and a torn entry after a power cut fails its
// CRC. Entries left from a previous run are kept, oldest first to go.
type Cache struct {
	dir   string
	max   int64
	chunk int64

	// mu guards the LRU and the fetches in flight; no I/O under it but
	// renaming a new entry into place and removing evicted ones, so that
	// the files and the LRU agree.
	mu      sync.Mutex
	used    int64
	lru     *list.List // of *cacheEntry, front: most recent
	entries map[pieceKey]*list.Element
	flight  map[pieceKey]*fetch

	stats CacheStats
}

// CacheStats counts what the cache did, for metrics and tests.
type CacheStats struct {
	Hits, Misses, Evictions, Damaged atomic.Int64
}

type pieceKey struct {
	ns  string // the volume's namespace
	seq uint32
	idx uint32
}

type cacheEntry struct {
	key  pieceKey
	size int64 // of the file: header and data
}

type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

const (
	cacheMagic   = "ACP1"
	cacheSegment = 64 << 10
	cacheTmp     = ".tmp"
	// DefaultChunk is the piece size when none is given.
	DefaultChunk = 1 << 20
)

// OpenCache opens (making it if need be) a cache of at most maxBytes in
// dir, in pieces of chunk bytes (0: DefaultChunk). A maxBytes smaller
// than one piece caches nothing: every read goes to the store.
func OpenCache(dir string, maxBytes, chunk int64) (*Cache, error) {
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	if chunk > 1<<30 {
		return nil, fmt.Errorf("volume cache: piece size %d is over 1 GiB", chunk)
	}
	if maxBytes < 0 {
		return nil, fmt.Errorf("volume cache: negative size %d", maxBytes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("volume cache: %w", err)
	}
	c := &Cache{dir: dir, max: maxBytes, chunk: chunk, lru: list.New(),
		entries: map[pieceKey]*list.Element{}, flight: map[pieceKey]*fetch{}}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load takes in the entries a previous run left, the oldest modified as
// the least recently used, and evicts down to the bound (which may have
// shrunk since).
func (c *Cache) load() error {
	type found struct {
		key  pieceKey
		size int64
		mod  time.Time
	}
	var all []found
	err := filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if strings.HasSuffix(path, cacheTmp) {
			os.Remove(path)
			return nil
		}
		key, ok := c.parsePath(path)
		if !ok {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		all = append(all, found{key, info.Size(), info.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("volume cache %s: %w", c.dir, err)
	}
	slices.SortFunc(all, func(a, b found) int { return a.mod.Compare(b.mod) })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range all {
		c.entries[f.key] = c.lru.PushFront(&cacheEntry{key: f.key, size: f.size})
		c.used += f.size
	}
	c.evictLocked(0)
	return nil
}

func (c *Cache) path(k pieceKey) string {
	return filepath.Join(c.dir, k.ns, fmt.Sprintf("%08x-%08x", k.seq, k.idx))
}

func (c *Cache) parsePath(path string) (pieceKey, bool) {
	rel, err := filepath.Rel(c.dir, path)
	if err != nil {
		return pieceKey{}, false
	}
	ns, name, ok := strings.Cut(rel, string(filepath.Separator))
	if !ok || strings.Contains(name, string(filepath.Separator)) {
		return pieceKey{}, false
	}
	s, i, ok := strings.Cut(name, "-")
	if !ok || len(s) != 8 || len(i) != 8 {
		return pieceKey{}, false
	}
	seq, err1 := strconv.ParseUint(s, 16, 32)
	idx, err2 := strconv.ParseUint(i, 16, 32)
	if err1 != nil || err2 != nil {
		return pieceKey{}, false
	}
	return pieceKey{ns: ns, seq: uint32(seq), idx: uint32(idx)}, true
}

// Used is the bytes the cache's entries take now.
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// Max is the cache's bound in bytes.
func (c *Cache) Max() int64 { return c.max }

// Stats are the cache's counters.
func (c *Cache) Stats() *CacheStats { return &c.stats }

// evictLocked drops least recently used entries until room more bytes
// fit; c.mu is held.
func (c *Cache) evictLocked(room int64) {
	for c.used+room > c.max && c.lru.Len() > 0 {
		c.dropLocked(c.lru.Back())
		c.stats.Evictions.Add(1)
	}
}

func (c *Cache) dropLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.entries, e.key)
	c.used -= e.size
	os.Remove(c.path(e.key))
}

// forget drops every entry of pack seq of namespace ns (the pack was
// deleted).
func (c *Cache) forget(ns string, seq uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, el := range c.entries {
		if k.ns == ns && k.seq == seq {
			c.dropLocked(el)
		}
	}
}

// readAt reads p at off of pack seq of namespace ns, each piece from the
// cache or, when missing or damaged, from get, which fetches length
// bytes at off of the pack (fewer at the pack's end). Like io.ReaderAt,
// a read past the pack's end returns the bytes before it and io.EOF.
func (c *Cache) readAt(ns string, seq uint32, p []byte, off int64, get func(off, length int64) ([]byte, error)) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("volume cache: negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		idx := pos / c.chunk
		if idx > int64(^uint32(0)) {
			return n, io.EOF
		}
		k := pieceKey{ns: ns, seq: seq, idx: uint32(idx)}
		in := pos - idx*c.chunk
		want := min(int64(len(p)-n), c.chunk-in)
		got, err := c.readPiece(k, p[n:n+int(want)], in, get)
		n += got
		if err != nil {
			return n, err
		}
		if int64(got) < want {
			return n, io.EOF // the pack's last piece ended
		}
	}
	return n, nil
}

// readPiece fills p from piece k at in, returning fewer bytes when the
// piece ends first.
func (c *Cache) readPiece(k pieceKey, p []byte, in int64, get func(off, length int64) ([]byte, error)) (int, error) {
	c.mu.Lock()
	el := c.entries[k]
	if el != nil {
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if el != nil {
		n, err := c.readEntry(k, p, in)
		if err == nil {
			c.stats.Hits.Add(1)
			return n, nil
		}
		// Damaged, or evicted since it was looked up: fetch it again.
		if errors.Is(err, errDamaged) {
			c.stats.Damaged.Add(1)
		}
		c.mu.Lock()
		if cur := c.entries[k]; cur == el {
			c.dropLocked(el)
		}
		c.mu.Unlock()
	}
	c.stats.Misses.Add(1)
	data, err := c.fetchPiece(k, get)
	if err != nil {
		return 0, err
	}
	if in >= int64(len(data)) {
		return 0, nil
	}
	return copy(p, data[in:]), nil
}

// fetchPiece gets piece k from the store, once for every reader that asks
// for it meanwhile, and keeps it.
func (c *Cache) fetchPiece(k pieceKey, get func(off, length int64) ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if f := c.flight[k]; f != nil {
		c.mu.Unlock()
		<-f.done
		return f.data, f.err
	}
	f := &fetch{done: make(chan struct{})}
	c.flight[k] = f
	c.mu.Unlock()

	f.data, f.err = get(int64(k.idx)*c.chunk, c.chunk)
	if f.err == nil {
		c.store(k, f.data)
	}
	c.mu.Lock()
	delete(c.flight, k)
	c.mu.Unlock()
	close(f.done)
	return f.data, f.err
}

func entryHeaderLen(dataLen int) int {
	return 4 + 4 + 4*((dataLen+cacheSegment-1)/cacheSegment) + 4
}

// store writes piece k. A failure (a full disk) only means it is not
// cached.
func (c *Cache) store(k pieceKey, data []byte) {
	hlen := entryHeaderLen(len(data))
	size := int64(hlen + len(data))
	if size > c.max {
		return
	}
	buf := make([]byte, hlen, hlen+len(data))
	copy(buf, cacheMagic)
	binary.BigEndian.PutUint32(buf[4:], uint32(len(data)))
	for i, o := 0, 0; o < len(data); i, o = i+1, o+cacheSegment {
		binary.BigEndian.PutUint32(buf[8+4*i:], crc32.Checksum(data[o:min(o+cacheSegment, len(data))], castagnoli))
	}
	binary.BigEndian.PutUint32(buf[hlen-4:], crc32.Checksum(buf[:hlen-4], castagnoli))
	buf = append(buf, data...)

	name := c.path(k)
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return
	}
	tmp := name + cacheTmp
	if err := os.WriteFile(tmp, buf, 0o644); err != nil {
		os.Remove(tmp)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[k]; el != nil {
		c.dropLocked(el)
	}
	c.evictLocked(size)
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return
	}
	c.entries[k] = c.lru.PushFront(&cacheEntry{key: k, size: size})
	c.used += size
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errDamaged = errors.New("damaged cache entry")

// readEntry reads p at in of piece k's entry, checking the header and
// every segment it touches.
func (c *Cache) readEntry(k pieceKey, p []byte, in int64) (int, error) {
	f, err := os.Open(c.path(k))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var fixed [8]byte
	if _, err := f.ReadAt(fixed[:], 0); err != nil {
		return 0, errDamaged
	}
	dataLen := int64(binary.BigEndian.Uint32(fixed[4:]))
	if string(fixed[:4]) != cacheMagic || dataLen > c.chunk {
		return 0, errDamaged
	}
	hlen := entryHeaderLen(int(dataLen))
	hdr := make([]byte, hlen)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return 0, errDamaged
	}
	if crc32.Checksum(hdr[:hlen-4], castagnoli) != binary.BigEndian.Uint32(hdr[hlen-4:]) {
		return 0, errDamaged
	}
	if in >= dataLen {
		return 0, nil
	}
	end := min(in+int64(len(p)), dataLen)
	first, last := in/cacheSegment, (end-1)/cacheSegment
	segs := make([]byte, min((last+1)*cacheSegment, dataLen)-first*cacheSegment)
	if _, err := f.ReadAt(segs, int64(hlen)+first*cacheSegment); err != nil {
		return 0, errDamaged
	}
	for s := first; s <= last; s++ {
		o := (s - first) * cacheSegment
		seg := segs[o:min(o+cacheSegment, int64(len(segs)))]
		if crc32.Checksum(seg, castagnoli) != binary.BigEndian.Uint32(hdr[8+4*s:]) {
			return 0, errDamaged
		}
	}
	return copy(p, segs[in-first*cacheSegment:end-first*cacheSegment]), nil
}
