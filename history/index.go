package history

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// The index is a bbolt file of derived buckets; Rebuild makes it again from
// the log and the packs.
//
//	rec  obj | key | 0x00 | create tid  ->  delete tid | crc32c | payload
//	ver  obj | tid                      ->  change u8 | size u64
//	blk  sha256                         ->  vol u16 | pack u32 | off u64 | len u32 | refs u64
//	txn  tid                            ->  segment u32 | offset u64 | [flags u8: 1 = the cleaner's, changes no state]
//	gone to tid                         ->  lo tid     (moments [lo, to) read as the state at to)
//	pseg segment u32                    ->  ()         (log segments the cleaner can shrink)
//	meta "state"                        ->  applied tid | next frame seg u32, off u64 | intent seq | object high-water
var (
	bucketRec  = []byte("rec")
	bucketVer  = []byte("ver")
	bucketBlk  = []byte("blk")
	bucketTxn  = []byte("txn")
	bucketGone = []byte("gone")
	bucketPseg = []byte("pseg")
	bucketMeta = []byte("meta")
	metaState  = []byte("state")
)

// txnPruneOnly flags a transaction that only thins history: it is no
// moment of its own.
const txnPruneOnly = 1

type indexState struct {
	Applied   TID
	Next      txlog.Loc // where the frame after Applied starts
	IntentSeq uint64
	ObjHigh   ObjID
}

func (m indexState) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(m.Applied))
	b = binary.BigEndian.AppendUint32(b, m.Next.Seg)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Next.Off))
	b = binary.BigEndian.AppendUint64(b, m.IntentSeq)
	return binary.BigEndian.AppendUint64(b, uint64(m.ObjHigh))
}

func decodeIndexState(b []byte) (indexState, error) {
	if len(b) != 36 {
		return indexState{}, fmt.Errorf("%w: index state of %d bytes", ErrCorrupt, len(b))
	}
	return indexState{
		Applied:   TID(binary.BigEndian.Uint64(b)),
		Next:      txlog.Loc{Seg: binary.BigEndian.Uint32(b[8:]), Off: int64(binary.BigEndian.Uint64(b[12:]))},
		IntentSeq: binary.BigEndian.Uint64(b[20:]),
		ObjHigh:   ObjID(binary.BigEndian.Uint64(b[28:])),
	}, nil
}

type blkEntry struct {
	Loc  pack.Loc
	Refs uint64
}

func (e blkEntry) encode() []byte {
	b := binary.BigEndian.AppendUint16(nil, e.Loc.Vol)
	b = binary.BigEndian.AppendUint32(b, e.Loc.Pack)
	b = binary.BigEndian.AppendUint64(b, e.Loc.Off)
	b = binary.BigEndian.AppendUint32(b, e.Loc.Length)
	return binary.BigEndian.AppendUint64(b, e.Refs)
}

func decodeBlk(b []byte) (blkEntry, error) {
	if len(b) != 26 {
		return blkEntry{}, fmt.Errorf("%w: block index entry of %d bytes", ErrCorrupt, len(b))
	}
	return blkEntry{
		Loc: pack.Loc{Vol: binary.BigEndian.Uint16(b), Pack: binary.BigEndian.Uint32(b[2:]),
			Off: binary.BigEndian.Uint64(b[6:]), Length: binary.BigEndian.Uint32(b[14:])},
		Refs: binary.BigEndian.Uint64(b[18:]),
	}, nil
}

// indexMapSize is what the index maps from the start. A commit that must
// map more waits for every read transaction to end, and verify holds one
// for as long as it runs; below this size none has to. It is address
// space, not memory: a gibibyte on 64-bit machines, nothing on 32-bit ones.
const indexMapSize = int(^uint(0)>>63) << 30

func openIndex(path string, noSync bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o644, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: indexMapSize})
	if err != nil {
		return nil, fmt.Errorf("history: open index %s: %w", path, err)
	}
	db.NoSync = noSync
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRec, bucketVer, bucketBlk, bucketTxn, bucketGone, bucketPseg, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("history: init index: %w", err)
	}
	return db, nil
}

func readIndexState(tx *bolt.Tx) (indexState, bool, error) {
	v := tx.Bucket(bucketMeta).Get(metaState)
	if v == nil {
		return indexState{}, false, nil
	}
	st, err := decodeIndexState(v)
	return st, err == nil, err
}

// latest finds the version of (obj, key) visible as of at: the one with the
// largest create tid <= at, if it was not yet deleted at at. One seek: the
// cost is O(log n) in all records, however many versions the key has.
func latest(tx *bolt.Tx, obj ObjID, key string, at TID) (Record, bool, error) {
	r, ok, err := newest(tx, obj, key, at)
	if err != nil || !ok || !r.Visible(at) {
		return Record{}, false, err
	}
	r.Payload = append([]byte(nil), r.Payload...)
	return r, true, nil
}

// newest finds the newest record of obj's key created at or before at,
// whether or not it has ended since: one seek and a step back. Its payload
// is valid only during tx.
func newest(tx *bolt.Tx, obj ObjID, key string, at TID) (Record, bool, error) {
	c := tx.Bucket(bucketRec).Cursor()
	want := recKey(obj, key, at)
	prefix := want[:len(want)-8]
	k, v := c.Seek(want)
	if k == nil || !bytes.Equal(k, want) {
		k, v = c.Prev()
	}
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(want) {
		return Record{}, false, nil
	}
	r, err := decodeRec(k, v)
	if err != nil {
		return Record{}, false, err
	}
	return r, true, nil
}

// chunkRecords finds, for each of count chunks of obj from first, the
// version of its record visible as of at, as latest does, and calls fn
// with the chunk's place in the run and its payload (valid only during
// fn); a chunk with none (a hole) is skipped. One cursor serves the run:
// a file's chunk records lie together in key order, so the next chunk's
// place is usually a step or two on from the last one's, not a new
// descent from the root. Where it is further (many versions, or a gap)
// the cursor seeks, so the cost stays O(log n) per chunk at worst.
func chunkRecords(tx *bolt.Tx, obj ObjID, first uint64, count int, at TID, fn func(i int, payload []byte) error) error {
	c := tx.Bucket(bucketRec).Cursor()
	want := recKey(obj, record.ChunkKey(first), at)
	pfx := want[:len(want)-8] // obj | key | NUL
	const walk = 8            // steps forward before a seek is cheaper
	var k, v []byte
	for i := 0; i < count; i++ {
		record.PutChunkHex(want[8+1:8+17], first+uint64(i))
		// k is where the last chunk's search ended, before want: step
		// on to the first key at or after want, as Seek would.
		n := 0
		for ; k != nil && n < walk && bytes.Compare(k, want) < 0; n++ {
			k, v = c.Next()
		}
		if i == 0 || k == nil || bytes.Compare(k, want) < 0 {
			k, v = c.Seek(want)
		}
		if k == nil || !bytes.Equal(k, want) {
			k, v = c.Prev()
		}
		if k == nil {
			// Before the first key: nothing of this chunk, and the next
			// search seeks.
			k, v = c.Seek(want)
			if k == nil {
				return nil // and past the last
			}
			continue
		}
		if len(k) != len(want) || !bytes.HasPrefix(k, pfx) {
			continue // a hole
		}
		if len(v) < 12 {
			return fmt.Errorf("%w: index value of %d bytes for object %d chunk %d", ErrCorrupt, len(v), obj, first+uint64(i))
		}
		create, del := TID(binary.BigEndian.Uint64(k[len(k)-8:])), TID(binary.BigEndian.Uint64(v))
		if record.Checksum(obj, create, del, k[8:len(k)-9], v[12:]) != binary.BigEndian.Uint32(v[8:]) {
			return fmt.Errorf("%w: record object %d chunk %d created %s", ErrCorrupt, obj, first+uint64(i), create)
		}
		if del != 0 && del <= at {
			continue // deleted by then: a hole
		}
		if err := fn(i, v[12:]); err != nil {
			return err
		}
	}
	return nil
}

// visible calls fn for each key with the given prefix that has a version
// visible as of at, in key order. The payload is only valid during fn.
func visible(tx *bolt.Tx, obj ObjID, keyPrefix string, at TID, fn func(r Record) error) error {
	return visibleFrom(tx, obj, keyPrefix, "", at, fn)
}

// visibleFrom is visible for the keys after prefix+after ("" for all).
func visibleFrom(tx *bolt.Tx, obj ObjID, prefix, after string, at TID, fn func(r Record) error) error {
	c := tx.Bucket(bucketRec).Cursor()
	pfx := recPrefix(obj, prefix)
	start := pfx
	if after != "" {
		// Past every version of prefix+after: its key ends in NUL + tid,
		// and 0x01 sorts after that NUL.
		start = append(recPrefix(obj, prefix+after), 1)
	}
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
		_, _, create, err := parseRecKey(k)
		if err != nil {
			return err
		}
		if create > at {
			continue
		}
		if d := TID(binary.BigEndian.Uint64(v)); d != 0 && d <= at {
			continue
		}
		r, err := decodeRec(k, v)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// applyTxn adds a committed transaction to the index.
//
// replay is set when the log is being replayed (recovery, rebuild): a block
// that a record created then names may since have been freed by the cleaner
// and its pack removed, and a later drop in the log ends that record. Such
// a block gets a placeholder entry; one left referenced at the end of the
// replay is damage (see missingBlocks).
func applyTxn(tx *bolt.Tx, t *Txn, loc, next txlog.Loc, blocks map[Hash]pack.Loc, replay bool) error {
	a := newTxnApply(tx, t.TID, replay)
	if err := a.ops(t.Ops); err != nil {
		return err
	}
	return a.finish(t, loc, next, blocks)
}

// A txnApply adds one transaction to the index: its operations, in one or
// more batches (a commit hands them over while it builds the rest), then
// what needs all of them.
type txnApply struct {
	tx       *bolt.Tx
	rec, blk *bolt.Bucket
	tid      TID
	replay   bool
	// stored are blocks the transaction stored that the index has no
	// entry for: the first record created that refers to one puts its
	// entry, with no lookup.
	stored map[Hash]pack.Loc
	refs   []Hash // the other blocks of the records created, counted by finish
}

func newTxnApply(tx *bolt.Tx, tid TID, replay bool) *txnApply {
	return &txnApply{tx: tx, rec: tx.Bucket(bucketRec), blk: tx.Bucket(bucketBlk), tid: tid, replay: replay,
		stored: map[Hash]pack.Loc{}}
}

func (a *txnApply) ops(ops []Op) error {
	for _, op := range ops {
		switch op.Kind {
		case OpCreate:
			r := Record{Obj: op.Obj, Key: op.Key, Create: a.tid, Payload: op.Payload}
			if err := a.rec.Put(recKey(op.Obj, op.Key, a.tid), recValue(&r)); err != nil {
				return err
			}
			if strings.HasPrefix(op.Key, record.PrefixData) {
				c, err := record.DecodeChunk(op.Payload)
				if err != nil {
					return err
				}
				if loc, ok := a.stored[c.Hash]; ok && c.Block {
					delete(a.stored, c.Hash) // a second reference finds the entry
					if err := a.blk.Put(c.Hash[:], blkEntry{Loc: loc, Refs: 1}.encode()); err != nil {
						return err
					}
				} else if c.Block {
					a.refs = append(a.refs, c.Hash)
				}
			}
		case OpEnd:
			k := recKey(op.Obj, op.Key, op.Create)
			v := a.rec.Get(k)
			if v == nil && a.replay {
				// The cleaner dropped the record and a log rewrite
				// removed its create op, but not (yet) this end op:
				// it is in a segment not rewritten. Verify compares the
				// result with the live index.
				continue
			}
			if v == nil {
				return fmt.Errorf("%w: transaction %s ends record object %d key %q created %s, which the index lacks",
					ErrCorrupt, a.tid, op.Obj, op.Key, op.Create)
			}
			r, err := decodeRec(k, v)
			if err != nil {
				return err
			}
			r.Delete = a.tid
			if err := a.rec.Put(k, recValue(&r)); err != nil {
				return err
			}
		case OpDrop, OpVersion:
			// Transactions of the cleaner create no records, so no
			// reference waits to be counted before a drop.
			if err := applyPruneOp(a.tx, op); err != nil {
				return err
			}
			// The segments holding what this op undoes can now shrink.
			if err := markSegment(a.tx, op.Create); err != nil {
				return err
			}
		case OpCollapse:
			if err := applyCollapse(a.tx, op); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish counts the references of the records created to blocks that had
// entries, and records the transaction: its versions, where it lies in the
// log, and the index's state. blocks, in a replay, are those the packs
// hold (see addRef).
func (a *txnApply) finish(t *Txn, loc, next txlog.Loc, blocks map[Hash]pack.Loc) error {
	for _, h := range a.refs {
		if err := addRef(a.blk, h, blocks, a.replay); err != nil {
			return err
		}
	}
	ver := a.tx.Bucket(bucketVer)
	for _, n := range t.Notes {
		k := binary.BigEndian.AppendUint64(nil, uint64(n.Obj))
		k = binary.BigEndian.AppendUint64(k, uint64(t.TID))
		v := append([]byte{byte(n.Change)}, binary.BigEndian.AppendUint64(nil, n.Size)...)
		if err := ver.Put(k, v); err != nil {
			return err
		}
	}
	lv := binary.BigEndian.AppendUint32(nil, loc.Seg)
	lv = binary.BigEndian.AppendUint64(lv, uint64(loc.Off))
	if pruneOnly(t) {
		lv = append(lv, txnPruneOnly)
		if err := a.tx.Bucket(bucketPseg).Put(binary.BigEndian.AppendUint32(nil, loc.Seg), nil); err != nil {
			return err
		}
	}
	if err := a.tx.Bucket(bucketTxn).Put(binary.BigEndian.AppendUint64(nil, uint64(t.TID)), lv); err != nil {
		return err
	}
	st := indexState{Applied: t.TID, Next: next, IntentSeq: t.IntentSeq, ObjHigh: t.ObjHigh}
	return a.tx.Bucket(bucketMeta).Put(metaState, st.encode())
}

// decodeTxnLoc reads a transaction index value.
func decodeTxnLoc(v []byte) (txlog.Loc, byte, error) {
	if len(v) != 12 && len(v) != 13 {
		return txlog.Loc{}, 0, fmt.Errorf("%w: transaction index entry of %d bytes", ErrCorrupt, len(v))
	}
	var flags byte
	if len(v) == 13 {
		flags = v[12]
	}
	return txlog.Loc{Seg: binary.BigEndian.Uint32(v), Off: int64(binary.BigEndian.Uint64(v[4:]))}, flags, nil
}

// volMissing marks the placeholder entry of a block no pack holds.
const volMissing = 0xffff

func addRef(blk *bolt.Bucket, h Hash, blocks map[Hash]pack.Loc, replay bool) error {
	var e blkEntry
	if v := blk.Get(h[:]); v != nil {
		var err error
		if e, err = decodeBlk(v); err != nil {
			return err
		}
	} else if loc, ok := blocks[h]; ok {
		e.Loc = loc
	} else if replay {
		e.Loc = pack.Loc{Vol: volMissing}
	} else {
		return fmt.Errorf("%w: a record references block %s, which no pack holds", ErrCorrupt, h)
	}
	e.Refs++
	return blk.Put(h[:], e.encode())
}

func getBlk(tx *bolt.Tx, h Hash) (blkEntry, bool, error) {
	v := tx.Bucket(bucketBlk).Get(h[:])
	if v == nil {
		return blkEntry{}, false, nil
	}
	e, err := decodeBlk(v)
	return e, err == nil, err
}

// missingBlocks reports a block that records still reference but no pack
// holds, once a replay is over.
func missingBlocks(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlk).ForEach(func(k, v []byte) error {
			e, err := decodeBlk(v)
			if err != nil {
				return err
			}
			if e.Loc.Vol == volMissing {
				return fmt.Errorf("%w: records reference block %x, which no pack holds", ErrCorrupt, k)
			}
			return nil
		})
	})
}
