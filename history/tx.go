package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/intent"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	bolt "go.etcd.io/bbolt"
)

// Tx is one atomic change: everything done inside an Update is applied to
// the pending changes together, or not at all. Reads through a Tx see the
// live state including the Tx's own changes.
type Tx struct {
	s        *Store
	ov       *overlay
	ops      intent.Entry // the intent log entry: encoded iops
	nops     int
	reserved bool // object ids were reserved: sync before they are exposed
	// written are the chunks this Tx wrote that will be stored as blocks:
	// the writer hashes them after its Update lets go of the lock.
	written []*chunkBuf
}

func (s *Store) newTx() *Tx { return &Tx{s: s, ov: newOverlay()} }

// Update runs fn as one change. Writers run one at a time; readers go on.
// The change is buffered: it becomes part of the next transaction, and is
// durable once Durable or Commit returns.
func (s *Store) Update(fn func(tx *Tx) error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.mirror.Load() {
		s.mu.Unlock()
		return ErrReadOnly
	}
	if s.broken != nil {
		s.mu.Unlock()
		return fmt.Errorf("history: no changes until the index has the last commit, tried again every flush interval: %w", s.broken)
	}
	tx := s.newTx()
	if err := fn(tx); err != nil {
		if tx.reserved {
			// The ids reserved stay reserved: keep the reservation
			// durable even though the change itself is dropped.
			var e intent.Entry
			addIop(&e, iop{kind: iopReserve, n: uint64(s.objHigh)}, false)
			_, aerr := s.ilog.Append(e)
			ps := s.ilog.Positions()
			s.mu.Unlock()
			if aerr == nil {
				aerr = s.ilog.SyncAll(ps)
			}
			return errors.Join(err, aerr)
		}
		s.mu.Unlock()
		return err
	}
	if tx.nops > 0 {
		if _, err := s.ilog.Append(tx.ops); err != nil {
			s.mu.Unlock()
			return err
		}
		tx.ov.mergeInto(s.pending)
	}
	held := s.pending.bytes + s.ilog.Buffered()
	var ps []intent.Pos
	if tx.reserved {
		ps = s.ilog.Positions()
	}
	s.mu.Unlock()
	// Hash the chunks written here, beside the other writers, rather than
	// in the commit: a commit is one goroutine, and writers that fill the
	// next transaction faster than it commits wait for it (below).
	for _, c := range tx.written {
		c.summed()
	}
	// A reservation must be durable before its ids are handed out; and
	// nothing after an entry may survive a crash without it, so every
	// intent file still unwritten goes with it — the frozen one of a
	// commit in flight too — as Durable does.
	if err := s.ilog.SyncAll(ps); err != nil {
		return err
	}
	switch {
	case held > 2*s.opts.MaxPending:
		// A commit is already running and the next one is full too:
		// wait for it, so memory stays bounded.
		return s.awaitCommit()
	case held > s.opts.MaxPending:
		// Too much waits for the next flush: have the flusher commit now,
		// while writers go on filling the next transaction.
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

func (tx *Tx) record(op iop) error {
	if err := tx.apply(op); err != nil {
		return err
	}
	// The entry refers to a large write's data where the write put
	// it, in the Tx's chunks, instead of copying it.
	held := op.kind == iopWrite && len(op.data) >= holdMin
	addIop(&tx.ops, op, held)
	if held {
		tx.chunkPieces(op.obj, op.n, len(op.data), tx.ops.Hold)
	}
	tx.nops++
	return nil
}

// holdMin is the smallest write whose data an intent entry refers to
// rather than copies.
const holdMin = 4 << 10

// chunkPieces calls fn with the pieces of the Tx's chunks that hold the n
// bytes at off, in order: the ones a write there just made.
func (tx *Tx) chunkPieces(obj ObjID, off uint64, n int, fn func([]byte)) {
	st := tx.ov.objs[obj]
	cs := uint64(tx.s.chunk)
	for n > 0 {
		idx, in := off/cs, int(off%cs)
		m := min(n, int(cs)-in)
		fn(st.chunks[idx].data[in : in+m])
		off, n = off+uint64(m), n-m
	}
}

// apply makes one primitive change to the Tx's overlay. Replay of the
// intent log calls it with the same operations in the same order.
func (tx *Tx) apply(op iop) error {
	ov := tx.ov
	switch op.kind {
	case iopReserve:
		tx.s.objHigh = max(tx.s.objHigh, ObjID(op.n))
		return nil
	case iopNewObj, iopInode:
		ino, err := decodeInode(op.data)
		if err != nil {
			return err
		}
		st := ov.obj(op.obj)
		if op.kind == iopNewObj {
			st.created = true
			st.change |= ChangeCreated
			tx.s.nextObj = max(tx.s.nextObj, op.obj+1)
			tx.s.objHigh = max(tx.s.objHigh, op.obj+1)
		} else {
			st.change |= ChangeAttr
		}
		st.inode, st.ended = &ino, false
		return nil
	case iopEndObj:
		st := ov.obj(op.obj)
		st.inode, st.ended = nil, true
		st.change |= ChangeDeleted
		return nil
	case iopPut, iopDel:
		st := ov.obj(op.obj)
		if st.kv == nil {
			st.kv = map[string]kvChange{}
		}
		st.kv[op.key] = kvChange{payload: op.data, del: op.kind == iopDel}
		ov.bytes += int64(len(op.key)+len(op.data)) + 64
		switch {
		case strings.HasPrefix(op.key, record.PrefixMeta):
			// Bookkeeping is no change of the object.
		case strings.HasPrefix(op.key, record.PrefixXattr):
			st.change |= ChangeXattr
		default:
			st.change |= ChangeWritten
		}
		return nil
	case iopWrite:
		return tx.write(op.obj, op.data, int64(op.n))
	case iopTrunc:
		return tx.truncate(op.obj, op.n)
	case iopCopy:
		if len(op.data) != 8 {
			return fmt.Errorf("%w: copy operation", ErrCorrupt)
		}
		return tx.copyData(op.obj, ObjID(binary.BigEndian.Uint64(op.data)), TID(op.n))
	case iopAtime:
		ino, err := tx.Inode(op.obj)
		if err != nil {
			return err
		}
		ino.Atime = int64(op.n)
		tx.ov.obj(op.obj).inode = &ino
		return nil
	case iopNote:
		ov.obj(op.obj).change |= Change(op.n)
		return nil
	}
	return fmt.Errorf("%w: intent operation %d", ErrCorrupt, op.kind)
}

func (tx *Tx) layers() []*overlay {
	ls := []*overlay{tx.ov, tx.s.pending}
	if tx.s.frozen != nil {
		ls = append(ls, tx.s.frozen)
	}
	return ls
}

// NewObject creates an object and returns its id, never used before.
func (tx *Tx) NewObject(ino Inode) (ObjID, error) {
	s := tx.s
	id := s.nextObj
	if id >= s.objHigh {
		// Reserve ids in a durable intent entry before handing them out,
		// so a crash can never give the same id to a second object.
		if err := tx.record(iop{kind: iopReserve, n: uint64(s.objHigh + objReserve)}); err != nil {
			return 0, err
		}
		tx.reserved = true
	}
	s.nextObj = id + 1
	if err := tx.record(iop{kind: iopNewObj, obj: id, data: ino.encode()}); err != nil {
		return 0, err
	}
	return id, nil
}

// PutInode replaces an object's attributes.
func (tx *Tx) PutInode(obj ObjID, ino Inode) error {
	return tx.record(iop{kind: iopInode, obj: obj, data: ino.encode()})
}

// SetAtime records an access time. Like HAMMER, asof does not make reading
// a version of its own: the new atime is kept, but the object's version
// list shows no change for it.
func (tx *Tx) SetAtime(obj ObjID, atime int64) error {
	return tx.record(iop{kind: iopAtime, obj: obj, n: uint64(atime)})
}

// EndObject ends an object: it and all its records stop at this
// transaction; history keeps them.
func (tx *Tx) EndObject(obj ObjID) error { return tx.record(iop{kind: iopEndObj, obj: obj}) }

// SetDirent points name in directory dir at child.
func (tx *Tx) SetDirent(dir ObjID, name string, child ObjID, k Kind) error {
	return tx.record(iop{kind: iopPut, obj: dir, key: record.DirentKey(name), data: encodeDirent(child, k)})
}

// RemoveDirent removes name from directory dir.
func (tx *Tx) RemoveDirent(dir ObjID, name string) error {
	return tx.record(iop{kind: iopDel, obj: dir, key: record.DirentKey(name)})
}

// SetSymlink sets a symlink's target.
func (tx *Tx) SetSymlink(obj ObjID, target string) error {
	return tx.record(iop{kind: iopPut, obj: obj, key: record.KeySymlink, data: []byte(target)})
}

// SetXattr sets an extended attribute.
func (tx *Tx) SetXattr(obj ObjID, name string, value []byte) error {
	return tx.record(iop{kind: iopPut, obj: obj, key: record.XattrKey(name), data: append([]byte(nil), value...)})
}

// RemoveXattr removes an extended attribute.
func (tx *Tx) RemoveXattr(obj ObjID, name string) error {
	return tx.record(iop{kind: iopDel, obj: obj, key: record.XattrKey(name)})
}

// PutMeta keeps a piece of the file system's own bookkeeping (such as the
// list of open unlinked files) as a record, hidden from every listing.
func (tx *Tx) PutMeta(name string, value []byte) error {
	return tx.record(iop{kind: iopPut, obj: RootID, key: record.PrefixMeta + name, data: value})
}

// DelMeta removes a bookkeeping record.
func (tx *Tx) DelMeta(name string) error {
	return tx.record(iop{kind: iopDel, obj: RootID, key: record.PrefixMeta + name})
}

// Note adds change kinds the engine cannot see, such as a rename, to the
// object's next version.
func (tx *Tx) Note(obj ObjID, c Change) error {
	return tx.record(iop{kind: iopNote, obj: obj, n: uint64(c)})
}

// CopyData makes dst's content that of src as of the committed moment at,
// sharing every block: the cost is one record per chunk, no data is read
// or copied. dst's size becomes src's size then.
func (tx *Tx) CopyData(dst, src ObjID, at TID) error {
	if at == Live || at > tx.s.lastTID {
		return fmt.Errorf("history: copy from %s: only committed moments can be copied (last is %s)", at, tx.s.lastTID)
	}
	return tx.record(iop{kind: iopCopy, obj: dst, n: uint64(at), data: binary.BigEndian.AppendUint64(nil, uint64(src))})
}

func (tx *Tx) copyData(dst, src ObjID, at TID) error {
	at = tx.s.snap(at)
	srcIno, err := tx.s.inode(nil, src, at)
	if err != nil {
		return err
	}
	if err := tx.truncate(dst, 0); err != nil {
		return err
	}
	st := tx.ov.obj(dst)
	if st.chunks == nil {
		st.chunks = map[uint64]*chunkBuf{}
	}
	err = tx.s.index.View(func(btx *bolt.Tx) error {
		return index.Visible(btx, src, record.PrefixData, at, func(r Record) error {
			idx, ok := record.ChunkOfKey(r.Key)
			if !ok {
				return fmt.Errorf("%w: data key %q", ErrCorrupt, r.Key)
			}
			ref, err := record.DecodeChunk(r.Payload)
			if err != nil {
				return err
			}
			if !ref.Block {
				ref.Inline = append([]byte(nil), ref.Inline...)
			}
			st.chunks[idx] = &chunkBuf{ref: &ref}
			return nil
		})
	})
	if err != nil {
		return err
	}
	ino := *st.inode
	ino.Size = srcIno.Size
	st.inode = &ino
	return nil
}

// WriteAt writes p at off, growing the file's size when it ends past it.
func (tx *Tx) WriteAt(obj ObjID, p []byte, off int64) error {
	if off < 0 {
		return fmt.Errorf("history: negative offset %d", off)
	}
	// No copy here: apply copies p into the chunk, and the intent entry
	// encodes it.
	return tx.record(iop{kind: iopWrite, obj: obj, n: uint64(off), data: p})
}

// Truncate sets the file's size, cutting or extending (with zeros).
func (tx *Tx) Truncate(obj ObjID, size uint64) error {
	return tx.record(iop{kind: iopTrunc, obj: obj, n: size})
}

func (tx *Tx) write(obj ObjID, p []byte, off int64) error {
	ino, err := tx.Inode(obj)
	if err != nil {
		return err
	}
	// A write that goes on where the object's last one ended is likely
	// followed by the next: the chunk it leaves part-written will be
	// written again, so hashing it now would be wasted (see below).
	sequential := tx.writeEnd(obj) == uint64(off)
	st := tx.ov.obj(obj)
	if st.chunks == nil {
		st.chunks = map[uint64]*chunkBuf{}
	}
	for len(p) > 0 {
		cs := uint64(tx.s.chunk)
		idx := uint64(off) / cs
		in := int(uint64(off) % cs)
		n := min(len(p), int(cs)-in)
		var base []byte
		if n < int(cs) {
			// Only a partial write keeps some of the old chunk; one that
			// covers it whole need not read it.
			if base, err = tx.chunk(obj, idx); err != nil {
				return err
			}
		}
		var buf []byte
		if in == 0 && n >= len(base) {
			buf = append([]byte(nil), p[:n]...) // no zeroing of what is overwritten at once
		} else {
			buf = make([]byte, max(len(base), in+n))
			copy(buf, base)
			copy(buf[in:], p[:n])
		}
		c := &chunkBuf{data: buf}
		st.chunks[idx] = c
		// Hashed by this writer after its Update, unless a sequential
		// write stopped inside it: then the commit hashes what is left
		// of it, once, rather than every writer hashing each step (16
		// KiB hashed for every 4 KiB step of a 16 KiB chunk rewritten by
		// 4 KiB writes).
		if c.stored() && (n == int(cs) || !sequential || in+n == int(cs)) {
			tx.written = append(tx.written, c)
		}
		tx.ov.bytes += int64(len(buf))
		p, off = p[n:], off+int64(n)
	}
	if uint64(off) > ino.Size {
		ino.Size = uint64(off)
	}
	st.wrote, st.writeEnd = true, uint64(off)
	st.inode = &ino
	st.change |= ChangeWritten
	return nil
}

func (tx *Tx) truncate(obj ObjID, size uint64) error {
	ino, err := tx.Inode(obj)
	if err != nil {
		return err
	}
	st := tx.ov.obj(obj)
	if size < ino.Size {
		cs := uint64(tx.s.chunk)
		idx, rem := size/cs, int(size%cs)
		drop := idx
		if rem > 0 {
			base, err := tx.chunk(obj, idx)
			if err != nil {
				return err
			}
			if st.chunks == nil {
				st.chunks = map[uint64]*chunkBuf{}
			}
			st.chunks[idx] = &chunkBuf{data: append([]byte(nil), base[:min(len(base), rem)]...)}
			drop++
		}
		for i := range st.chunks {
			if i >= drop {
				delete(st.chunks, i)
			}
		}
		if !st.truncated || drop < st.dropFrom {
			st.truncated, st.dropFrom = true, drop
		}
	}
	ino.Size = size
	st.inode = &ino
	st.change |= ChangeWritten
	return nil
}

// writeEnd is where the last write to obj since the last commit froze the
// changes ended, or MaxUint64 when there was none.
func (tx *Tx) writeEnd(obj ObjID) uint64 {
	for _, l := range []*overlay{tx.ov, tx.s.pending} {
		if st := l.objs[obj]; st != nil && st.wrote {
			return st.writeEnd
		}
	}
	return math.MaxUint64
}

// chunk is the live content of one chunk, nil for a hole.
func (tx *Tx) chunk(obj ObjID, idx uint64) ([]byte, error) {
	for _, l := range tx.layers() {
		if c, ok := l.chunk(obj, idx); ok {
			if c.ref != nil {
				return tx.s.chunkData(*c.ref)
			}
			return c.data, nil
		}
	}
	// The chunk's record and its block's place come from one index
	// transaction, and the block is read without entering the caches:
	// the write that reads it supersedes it.
	var ref record.ChunkRef
	var loc pack.Loc
	var found, placed bool
	err := tx.s.index.View(func(btx *bolt.Tx) error {
		r, ok, err := index.Latest(btx, obj, record.ChunkKey(idx), Live)
		if err != nil || !ok {
			return err
		}
		found = true
		if ref, err = record.DecodeChunk(r.Payload); err != nil || !ref.Block {
			return err
		}
		if loc, placed = tx.s.locs.get(ref.Hash); placed {
			return nil
		}
		e, ok, err := index.GetBlk(btx, ref.Hash)
		loc, placed = e.Loc, ok
		return err
	})
	switch {
	case err != nil || !found:
		return nil, err
	case !ref.Block:
		return ref.Inline, nil
	}
	if b := tx.s.cache.Get(ref.Hash); b != nil {
		return b, nil
	}
	if placed {
		if b, err := tx.s.packs.Get(loc, ref.Hash, false); err == nil {
			return b, nil
		}
		// Moved by the cleaner since, or damaged: the general path looks
		// again, and reports damage.
	}
	return tx.s.chunkData(ref)
}

// Inode reads an object's live attributes.
func (tx *Tx) Inode(obj ObjID) (Inode, error) { return tx.s.inode(tx.layers(), obj, Live) }

// Lookup finds name in directory dir.
func (tx *Tx) Lookup(dir ObjID, name string) (ObjID, Kind, error) {
	return tx.s.lookup(tx.layers(), dir, name, Live)
}

// ReadDir lists a directory's live entries after the name after.
func (tx *Tx) ReadDir(dir ObjID, after string, fn func(name string, child ObjID, k Kind) bool) error {
	return tx.s.readDir(tx.layers(), dir, after, Live, fn)
}

// ReadAt reads live file data.
func (tx *Tx) ReadAt(obj ObjID, p []byte, off int64) (int, error) {
	v, _, err := tx.s.readView(tx.layers(), obj, off, len(p), Live, false)
	if err != nil {
		return 0, err
	}
	defer v.Release()
	return v.CopyTo(p)
}

// Readlink reads a symlink's live target.
func (tx *Tx) Readlink(obj ObjID) (string, error) {
	b, err := tx.s.kvGet(tx.layers(), obj, record.KeySymlink, Live)
	return string(b), err
}

// Xattr reads an extended attribute.
func (tx *Tx) Xattr(obj ObjID, name string) ([]byte, error) {
	return tx.s.kvGet(tx.layers(), obj, record.XattrKey(name), Live)
}

// Xattrs lists extended attribute names.
func (tx *Tx) Xattrs(obj ObjID) ([]string, error) {
	return tx.s.xattrs(tx.layers(), obj, Live)
}

// History reads inside a Tx: the state as of a committed moment (at must
// not be Live). They let a change copy from the past, as clone and restore
// do, without leaving the Tx.

// InodeAt reads attributes as of at.
func (tx *Tx) InodeAt(obj ObjID, at TID) (Inode, error) { return tx.s.inode(nil, obj, tx.s.snap(at)) }

// ReadDirAt lists a directory as of at.
func (tx *Tx) ReadDirAt(dir ObjID, at TID, fn func(name string, child ObjID, k Kind) bool) error {
	return tx.s.readDir(nil, dir, "", tx.s.snap(at), fn)
}

// ReadlinkAt reads a symlink target as of at.
func (tx *Tx) ReadlinkAt(obj ObjID, at TID) (string, error) {
	b, err := tx.s.kvGet(nil, obj, record.KeySymlink, tx.s.snap(at))
	return string(b), err
}

// XattrsAt lists extended attributes with their values as of at.
func (tx *Tx) XattrsAt(obj ObjID, at TID) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := tx.s.scanKV(nil, obj, record.PrefixXattr, "", tx.s.snap(at), func(key string, p []byte) bool {
		out[key[len(record.PrefixXattr):]] = append([]byte(nil), p...)
		return true
	})
	return out, err
}
