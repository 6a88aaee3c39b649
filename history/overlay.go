package history

import (
	"hash/crc32"
	"maps"
	"sync/atomic"

	"github.com/asof/asof/history/internal/record"
)

// An overlay holds changes not yet in the index: the transaction being
// built (Tx), the pending changes of the current flush interval, and the
// frozen changes being committed. Reads look through the overlays, newest
// first, and fall through to the index.
type overlay struct {
	objs  map[ObjID]*objState
	bytes int64 // payload and data held, for memory pressure
}

type kvChange struct {
	payload []byte
	del     bool
}

// chunkBuf is one chunk's content; nil data with hole set means the chunk
// is absent (reads as zeros). Once in an overlay it is never modified, so a
// reader may keep it after letting go of the lock.
type chunkBuf struct {
	data []byte
	hole bool
	ref  *record.ChunkRef // a committed chunk shared by a copy, read on demand
	// sum is the chunk's hash and CRC once someone computed them: the
	// writer, right after its Update (so that hashing runs on the writers'
	// cores, not in the commit they may be waiting for), or else the commit.
	sum atomic.Pointer[chunkSum]
}

// stored tells whether the chunk goes to a block of its own when committed
// (not a hole, not a copy's reference, too large to live inline): only such
// chunks are hashed.
func (c *chunkBuf) stored() bool { return c.ref == nil && !c.hole && len(c.data) > InlineMax }

// summed is the chunk's sum, computed now unless someone already did. Two
// callers racing compute the same value.
func (c *chunkBuf) summed() chunkSum {
	if p := c.sum.Load(); p != nil {
		return *p
	}
	var sum chunkSum
	if allZero(c.data) {
		sum.zero = true
	} else {
		sum = chunkSum{hash: HashOf(c.data), crc: crc32.Checksum(c.data, record.Castagnoli)}
	}
	c.sum.Store(&sum)
	return sum
}

type objState struct {
	created bool   // no committed record of the object exists
	ended   bool   // the object's inode was ended
	inode   *Inode // the new inode, when it changed
	kv      map[string]kvChange
	chunks  map[uint64]*chunkBuf
	// truncated: chunks from dropFrom on were cut away by a truncate in
	// this overlay, unless written again (then they are in chunks).
	truncated bool
	dropFrom  uint64
	change    Change
	// wrote: writeEnd is where the last write in this overlay ended.
	wrote    bool
	writeEnd uint64
}

// objOverhead is roughly what one changed object costs in memory beyond
// its data, so that MaxPending bounds many small changes as well as a few
// large ones.
const objOverhead = 512

func newOverlay() *overlay { return &overlay{objs: map[ObjID]*objState{}} }

func (o *overlay) empty() bool { return len(o.objs) == 0 }

func (o *overlay) obj(id ObjID) *objState {
	st := o.objs[id]
	if st == nil {
		st = &objState{}
		o.objs[id] = st
		o.bytes += objOverhead
	}
	return st
}

// lookup answers from this overlay alone: found reports whether the
// overlay decides the answer, stop that nothing below may be consulted.
func (o *overlay) inode(id ObjID) (ino *Inode, decided bool) {
	st := o.objs[id]
	if st == nil {
		return nil, false
	}
	if st.inode != nil {
		return st.inode, true
	}
	if st.ended || st.created {
		return nil, true
	}
	return nil, false
}

func (o *overlay) kv(id ObjID, key string) (payload []byte, decided bool) {
	st := o.objs[id]
	if st == nil {
		return nil, false
	}
	if st.ended {
		return nil, true
	}
	if c, ok := st.kv[key]; ok {
		if c.del {
			return nil, true
		}
		if c.payload == nil {
			return []byte{}, true // an empty value is a value
		}
		return c.payload, true
	}
	if st.created {
		return nil, true
	}
	return nil, false
}

func (o *overlay) chunk(id ObjID, idx uint64) (c *chunkBuf, decided bool) {
	st := o.objs[id]
	if st == nil {
		return nil, false
	}
	if st.ended {
		return &chunkBuf{hole: true}, true
	}
	if c := st.chunks[idx]; c != nil {
		return c, true
	}
	if st.created || (st.truncated && idx >= st.dropFrom) {
		return &chunkBuf{hole: true}, true
	}
	return nil, false
}

// mergeInto applies o on top of dst, as if o's changes were made after
// dst's.
func (o *overlay) mergeInto(dst *overlay) {
	for id, st := range o.objs {
		d := dst.objs[id]
		if d == nil {
			dst.objs[id] = st
			continue
		}
		d.change |= st.change
		if st.created {
			// A new object under an old id cannot happen: ids are not reused.
			d.created = true
		}
		if st.inode != nil {
			d.inode, d.ended = st.inode, false
		}
		if st.ended {
			d.inode, d.ended = nil, true
		}
		if d.kv == nil {
			d.kv = map[string]kvChange{}
		}
		maps.Copy(d.kv, st.kv)
		if st.truncated {
			for idx := range d.chunks {
				if idx >= st.dropFrom {
					delete(d.chunks, idx)
				}
			}
			if !d.truncated || st.dropFrom < d.dropFrom {
				d.truncated, d.dropFrom = true, st.dropFrom
			}
		}
		if d.chunks == nil {
			d.chunks = map[uint64]*chunkBuf{}
		}
		maps.Copy(d.chunks, st.chunks)
		if st.wrote {
			d.wrote, d.writeEnd = true, st.writeEnd
		}
	}
	dst.bytes += o.bytes
}
