package history

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	bolt "go.etcd.io/bbolt"
)

// liveLayers takes the overlays a live read must look through. The caller
// holds s.mu (read or write) while it reads the pending overlay; the frozen
// one never changes once frozen.
func (s *Store) liveLayers() []*overlay {
	ls := []*overlay{s.pending}
	if s.frozen != nil {
		ls = append(ls, s.frozen)
	}
	return ls
}

// readLayers returns the overlays for a read as of at: none for a past
// moment, the pending ones for a live read. The returned function releases
// the read lock a live read holds. A past moment the cleaner collapsed is
// moved to the end of its range: the returned TID is the one to read at.
func (s *Store) readLayers(at TID) ([]*overlay, TID, func(), error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, at, nil, ErrClosed
	}
	at = s.capRead(at)
	if at != Live {
		s.mu.RUnlock()
		return nil, s.snap(at), func() {}, nil
	}
	return s.liveLayers(), at, s.mu.RUnlock, nil
}

// Inode reads an object's attributes as of at.
func (s *Store) Inode(obj ObjID, at TID) (Inode, error) {
	ls, at, done, err := s.readLayers(at)
	if err != nil {
		return Inode{}, err
	}
	defer done()
	return s.inode(ls, obj, at)
}

func (s *Store) inode(ls []*overlay, obj ObjID, at TID) (Inode, error) {
	for _, l := range ls {
		if ino, ok := l.inode(obj); ok {
			if ino == nil {
				return Inode{}, ErrNotFound
			}
			return *ino, nil
		}
	}
	var ino Inode
	err := s.index.View(func(tx *bolt.Tx) error {
		r, ok, err := index.Latest(tx, obj, record.KeyInode, at)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		ino, err = decodeInode(r.Payload)
		return err
	})
	return ino, err
}

func (s *Store) kvGet(ls []*overlay, obj ObjID, key string, at TID) ([]byte, error) {
	for _, l := range ls {
		if p, ok := l.kv(obj, key); ok {
			if p == nil {
				return nil, ErrNotFound
			}
			return append([]byte(nil), p...), nil
		}
	}
	var out []byte
	err := s.index.View(func(tx *bolt.Tx) error {
		r, ok, err := index.Latest(tx, obj, key, at)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		out = r.Payload
		return nil
	})
	return out, err
}

// Lookup finds name in directory dir as of at.
func (s *Store) Lookup(dir ObjID, name string, at TID) (ObjID, Kind, error) {
	ls, at, done, err := s.readLayers(at)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	return s.lookup(ls, dir, name, at)
}

func (s *Store) lookup(ls []*overlay, dir ObjID, name string, at TID) (ObjID, Kind, error) {
	p, err := s.kvGet(ls, dir, record.DirentKey(name), at)
	if err != nil {
		return 0, 0, err
	}
	return decodeDirent(p)
}

// Readlink reads a symlink's target as of at.
func (s *Store) Readlink(obj ObjID, at TID) (string, error) {
	ls, at, done, err := s.readLayers(at)
	if err != nil {
		return "", err
	}
	defer done()
	b, err := s.kvGet(ls, obj, record.KeySymlink, at)
	return string(b), err
}

// Xattr reads an extended attribute as of at.
func (s *Store) Xattr(obj ObjID, name string, at TID) ([]byte, error) {
	ls, at, done, err := s.readLayers(at)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.kvGet(ls, obj, record.XattrKey(name), at)
}

// Xattrs lists an object's extended attribute names as of at.
func (s *Store) Xattrs(obj ObjID, at TID) ([]string, error) {
	ls, at, done, err := s.readLayers(at)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.xattrs(ls, obj, at)
}

func (s *Store) xattrs(ls []*overlay, obj ObjID, at TID) ([]string, error) {
	var names []string
	err := s.scanKV(ls, obj, record.PrefixXattr, "", at, func(key string, _ []byte) bool {
		names = append(names, key[len(record.PrefixXattr):])
		return true
	})
	return names, err
}

// ReadDir calls fn for each entry of directory dir as of at whose name
// sorts after after (all entries when after is ""), in name order, until fn
// returns false. Names order bytewise, so a listing can resume after the
// last name it returned, whatever changed in between.
//
// fn is called without any lock held, so it may read the store; the
// listing is taken in batches, each consistent, resuming after the last
// name of the one before.
func (s *Store) ReadDir(dir ObjID, after string, at TID, fn func(name string, child ObjID, k Kind) bool) error {
	type ent struct {
		name  string
		child ObjID
		kind  Kind
	}
	const batch = 256
	for {
		ls, at, done, err := s.readLayers(at)
		if err != nil {
			return err
		}
		ents := make([]ent, 0, batch)
		err = s.readDir(ls, dir, after, at, func(name string, child ObjID, k Kind) bool {
			ents = append(ents, ent{name, child, k})
			return len(ents) < batch
		})
		done()
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !fn(e.name, e.child, e.kind) {
				return nil
			}
		}
		if len(ents) < batch {
			return nil
		}
		after = ents[len(ents)-1].name
	}
}

func (s *Store) readDir(ls []*overlay, dir ObjID, after string, at TID, fn func(string, ObjID, Kind) bool) error {
	var derr error
	err := s.scanKV(ls, dir, record.PrefixDir, after, at, func(key string, p []byte) bool {
		child, k, err := decodeDirent(p)
		if err != nil {
			derr = err
			return false
		}
		return fn(key[len(record.PrefixDir):], child, k)
	})
	if err == nil {
		err = derr
	}
	return err
}

// scanKV merges the committed records with the given key prefix and the
// overlays' changes to them, in key order, starting after prefix+after.
func (s *Store) scanKV(ls []*overlay, obj ObjID, prefix, after string, at TID, fn func(key string, payload []byte) bool) error {
	// The overlays' changes, newest first wins.
	changes := map[string]kvChange{}
	created := false
	for _, l := range ls {
		st := l.objs[obj]
		if st == nil {
			continue
		}
		if st.ended {
			created = true // nothing of an ended object is visible
			break
		}
		for k, c := range st.kv {
			if _, seen := changes[k]; !seen && strings.HasPrefix(k, prefix) && k > prefix+after {
				changes[k] = c
			}
		}
		if st.created {
			created = true
			break
		}
	}
	keys := make([]string, 0, len(changes))
	for k := range changes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	stop := false
	emit := func(k string, p []byte) {
		if !stop && !fn(k, p) {
			stop = true
		}
	}
	// flush emits overlay changes that sort before key (all when key is "").
	flush := func(key string) {
		for len(keys) > 0 && !stop && (key == "" || keys[0] < key) {
			if c := changes[keys[0]]; !c.del {
				emit(keys[0], c.payload)
			}
			keys = keys[1:]
		}
	}
	if !created {
		err := s.index.View(func(tx *bolt.Tx) error {
			return index.VisibleFrom(tx, obj, prefix, after, at, func(r Record) error {
				flush(r.Key)
				if stop {
					return errStop
				}
				if _, ok := changes[r.Key]; ok {
					return nil // the overlay has the newer state, emitted by flush
				}
				emit(r.Key, r.Payload)
				if stop {
					return errStop
				}
				return nil
			})
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
	}
	flush("")
	return nil
}

var errStop = errors.New("stop")

// ReadAt reads file data as of at into p from offset off. It stops at the
// file's size and returns the count read; reading at or past the end
// returns 0.
func (s *Store) ReadAt(obj ObjID, p []byte, off int64, at TID) (int, error) {
	n, _, err := s.ReadInode(obj, p, off, at)
	return n, err
}

// ReadInode is ReadAt that also returns the attributes the read went by,
// of the same moment as the data: a server answering a read with the
// file's attributes needs no second lookup, nor one that may see a later
// change.
func (s *Store) ReadInode(obj ObjID, p []byte, off int64, at TID) (int, Inode, error) {
	return s.readInto(obj, p, off, at, false)
}

func (s *Store) readInto(obj ObjID, p []byte, off int64, at TID, nowait bool) (int, Inode, error) {
	v, ino, err := s.ReadView(obj, off, len(p), at, nowait)
	if err != nil {
		return 0, ino, err
	}
	defer v.Release()
	n, err := v.CopyTo(p)
	return n, ino, err
}

// A View is file data as read, in place: slices of the packs' mappings
// (internal/pack/packmap.go), of the engine's buffers and of zeros, which in order are
// the bytes read. They stay valid until Release, and nothing may write to
// them. A server sends them to the socket as they are: the data is not
// copied on the way.
type View struct {
	Segs [][]byte
	N    int // bytes in Segs
	maps []*pack.Map
}

// Release lets go of the memory the view points into; the view is empty
// afterwards.
func (v *View) Release() {
	for _, m := range v.maps {
		m.Release()
	}
	*v = View{}
}

// CopyTo copies the view into p, which must hold N bytes, and returns N.
func (v *View) CopyTo(p []byte) (int, error) {
	n := 0
	err := pack.Fault(func() {
		for _, b := range v.Segs {
			n += copy(p[n:], b)
		}
	})
	return n, err
}

func (v *View) add(b []byte) {
	if len(b) > 0 {
		v.Segs = append(v.Segs, b)
		v.N += len(b)
	}
}

// zeroes are what holes and the unwritten ends of chunks read as.
var zeroes = make([]byte, 64<<10)

func (v *View) addZeros(n int) {
	for n > 0 {
		k := min(n, len(zeroes))
		v.add(zeroes[:k])
		n -= k
	}
}

// ReadView reads up to n bytes of file data from off as of at, as a View
// of where the data lies: it stops at the file's size. With nowait it
// does not wait for the disk: where a block is not in memory it returns
// ErrWouldBlock. A server answers reads inline that way and hands the ones
// that must wait to a goroutine, so that those reach the disk together.
// The index is read through bbolt's mmap, which nowait cannot cover: a
// page of it not in memory is waited for.
func (s *Store) ReadView(obj ObjID, off int64, n int, at TID, nowait bool) (View, Inode, error) {
	ls, at, done, err := s.readLayers(at)
	if err != nil {
		return View{}, Inode{}, err
	}
	return s.readView(ls, obj, off, n, at, nowait, done)
}

// A readPiece is one chunk of a read, as it is resolved.
type readPiece struct {
	buf     []byte // overlay data
	ref     *record.ChunkRef
	indexed bool     // no overlay decides the chunk: its record is looked up
	loc     pack.Loc // where ref's block was, when looked up
	has     bool     // loc is set
}

// readView resolves which chunk holds each piece under the lock (release
// is called once that is done), with one index transaction for whatever
// the overlays do not decide, then checks the blocks without it.
func (s *Store) readView(ls []*overlay, obj ObjID, off int64, n int, at TID, nowait bool, release ...func()) (View, Inode, error) {
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			for _, r := range release {
				r()
			}
		}
	}
	defer unlock()
	if off < 0 {
		return View{}, Inode{}, fmt.Errorf("history: negative offset %d", off)
	}
	if n < 0 {
		return View{}, Inode{}, fmt.Errorf("history: negative count %d", n)
	}
	var ino Inode
	inoDecided := false
	for _, l := range ls {
		if i, ok := l.inode(obj); ok {
			if i == nil {
				return View{}, Inode{}, ErrNotFound
			}
			ino, inoDecided = *i, true
			break
		}
	}
	var pieces []readPiece
	cs := uint64(s.chunk)
	var first uint64
	// resolve finds each piece in the overlays, and in the index through
	// tx (nil when the overlays decided everything so far).
	resolve := func(tx *bolt.Tx) (needIndex bool, err error) {
		if !inoDecided {
			if tx == nil {
				return true, nil
			}
			r, ok, err := index.Latest(tx, obj, record.KeyInode, at)
			if err != nil {
				return false, err
			}
			if !ok {
				return false, ErrNotFound
			}
			if ino, err = decodeInode(r.Payload); err != nil {
				return false, err
			}
			inoDecided = true
		}
		if uint64(off) >= ino.Size {
			n = 0
			return false, nil
		}
		n = int(min(uint64(n), ino.Size-uint64(off)))
		if n == 0 {
			return false, nil // an empty read: no chunk to resolve
		}
		var last uint64
		first, last = uint64(off)/cs, (uint64(off)+uint64(n)-1)/cs
		if pieces == nil {
			pieces = make([]readPiece, last-first+1)
			for idx := first; idx <= last; idx++ {
				pc := &pieces[idx-first]
				decided := false
				for _, l := range ls {
					if c, ok := l.chunk(obj, idx); ok {
						pc.buf, pc.ref, decided = c.data, c.ref, true
						break
					}
				}
				pc.indexed = !decided
				needIndex = needIndex || pc.indexed
			}
			if !s.locs.place(pieces) {
				needIndex = true
			}
		}
		if tx == nil {
			return needIndex, nil
		}
		// The chunks no overlay decides, in runs: one cursor each.
		for i := 0; i < len(pieces); {
			if !pieces[i].indexed {
				i++
				continue
			}
			j := i + 1
			for j < len(pieces) && pieces[j].indexed {
				j++
			}
			refs := make([]record.ChunkRef, j-i)
			err := index.ChunkRecords(tx, obj, first+uint64(i), j-i, at, func(k int, payload []byte) error {
				ref, err := record.DecodeChunk(payload)
				if err != nil {
					return err
				}
				if !ref.Block {
					ref.Inline = bytes.Clone(ref.Inline) // the payload is the index's, for this transaction
				}
				refs[k] = ref
				pieces[i+k].ref = &refs[k]
				return nil
			})
			if err != nil {
				return false, err
			}
			i = j
		}
		s.locs.place(pieces)
		for i := range pieces {
			pc := &pieces[i]
			if pc.ref != nil && pc.ref.Block && !pc.has {
				e, ok, err := index.GetBlk(tx, pc.ref.Hash)
				if err != nil {
					return false, err
				}
				pc.loc, pc.has = e.Loc, ok
				if ok {
					s.locs.put(pc.ref.Hash, e.Loc)
				}
			}
		}
		return false, nil
	}
	needIndex, err := resolve(nil)
	if err == nil && needIndex {
		err = s.index.View(func(tx *bolt.Tx) error {
			_, err := resolve(tx)
			return err
		})
	}
	if err != nil {
		return View{}, Inode{}, err
	}
	unlock()
	v := View{Segs: make([][]byte, 0, len(pieces)+1)}
	// span is the part of chunk first+i the read covers: from in, for k
	// bytes.
	span := func(i int) (in, k int) {
		start := int64(first+uint64(i)) * int64(cs)
		from := max(start, off)
		to := min(start+int64(cs), off+int64(n))
		return int(from - start), int(to - from)
	}
	// add puts what chunk i holds from in into the view: data, then
	// zeros for a chunk whose written end comes before k bytes.
	add := func(data []byte, i int) {
		in, k := span(i)
		d := data[min(in, len(data)):min(in+k, len(data))]
		v.add(d)
		v.addZeros(k - len(d))
	}
	mapped := func(i int) bool {
		pc := &pieces[i]
		return pc.ref != nil && pc.ref.Block && pc.has
	}
	var locs []pack.Loc
	var hashes []Hash
	for i := 0; i < len(pieces); {
		// Blocks back to back in one pack: checked together, with one
		// look at whether they are in memory.
		if mapped(i) {
			j := i + 1
			for j < len(pieces) && j-i < 512 && mapped(j) && pieces[j].loc.Pack == pieces[j-1].loc.Pack &&
				pieces[j].loc.Off == pieces[j-1].loc.Off+uint64(pieces[j-1].loc.Length)+pack.HdrLen {
				j++
			}
			locs, hashes = locs[:0], hashes[:0]
			for k := i; k < j; k++ {
				locs, hashes = append(locs, pieces[k].loc), append(hashes, pieces[k].ref.Hash)
			}
			views, m, err := s.packs.ViewRun(locs, hashes, nowait, nil)
			if errors.Is(err, ErrWouldBlock) {
				v.Release()
				return View{}, Inode{}, err
			}
			if err == nil {
				v.maps = append(v.maps, m)
				for k := i; k < j; k++ {
					add(views[k-i], k)
				}
				i = j
				continue
			}
			// Moved by the cleaner since, or damaged: block by block,
			// which looks again and reports damage (not the run again
			// from the next block, at the same stale places).
			for k := i; k < j; k++ {
				s.locs.forget(pieces[k].ref.Hash)
				pieces[k].has = false
			}
		}
		pc := pieces[i]
		data := pc.buf
		if pc.ref != nil {
			if data, err = s.readChunk(*pc.ref, nowait); err != nil {
				v.Release()
				return View{}, Inode{}, err
			}
		}
		add(data, i)
		i++
	}
	return v, ino, nil
}

// chunkData returns the bytes of a committed chunk, checked.
func (s *Store) chunkData(ref record.ChunkRef) ([]byte, error) { return s.readChunk(ref, false) }

// readChunk is chunkData, with nowait ErrWouldBlock where the block is
// not in memory.
func (s *Store) readChunk(ref record.ChunkRef, nowait bool) ([]byte, error) {
	if !ref.Block {
		return ref.Inline, nil
	}
	if b := s.cache.Get(ref.Hash); b != nil {
		return b, nil
	}
	if loc, ok := s.locs.get(ref.Hash); ok {
		b, err := s.packs.Get(loc, ref.Hash, nowait)
		if err == nil {
			s.cache.Put(ref.Hash, b)
			return b, nil
		}
		if errors.Is(err, ErrWouldBlock) {
			return nil, err
		}
		s.locs.forget(ref.Hash) // moved, or damaged: the index says
	}
	var b []byte
	var prev pack.Loc
	for try := 0; ; try++ {
		var e index.BlkEntry
		err := s.index.View(func(tx *bolt.Tx) error {
			var ok bool
			var err error
			e, ok, err = index.GetBlk(tx, ref.Hash)
			if err == nil && !ok {
				err = fmt.Errorf("%w: block %s is referenced but not indexed", ErrCorrupt, ref.Hash)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if b, err = s.packs.Get(e.Loc, ref.Hash, nowait); err == nil {
			s.locs.put(ref.Hash, e.Loc)
			break
		}
		if errors.Is(err, ErrWouldBlock) {
			return nil, err
		}
		// The cleaner may have moved the block to another pack between
		// the lookup and the read: look again, once it says so.
		if try > 0 && e.Loc == prev || try > 3 {
			return nil, err
		}
		prev = e.Loc
	}
	s.cache.Put(ref.Hash, b)
	return b, nil
}
