// Package index is the store's bbolt index: buckets derived from the
// transaction log and the packs (records by object, key and create tid;
// versions; blocks; transactions; collapsed ranges), the encoding of their
// keys and values, and the application of a committed transaction to them.
// It can be rebuilt from the log and the packs at any time.
package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
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
	BucketRec  = []byte("rec")
	BucketVer  = []byte("ver")
	BucketBlk  = []byte("blk")
	BucketTxn  = []byte("txn")
	BucketGone = []byte("gone")
	BucketPseg = []byte("pseg")
	BucketMeta = []byte("meta")
	MetaState  = []byte("state")
)

// TxnPruneOnly flags a transaction that only thins history: it is no
// moment of its own.
const TxnPruneOnly = 1

type State struct {
	Applied   record.TID
	Next      txlog.Loc // where the frame after Applied starts
	IntentSeq uint64
	ObjHigh   record.ObjID
}

func (m State) Encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(m.Applied))
	b = binary.BigEndian.AppendUint32(b, m.Next.Seg)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Next.Off))
	b = binary.BigEndian.AppendUint64(b, m.IntentSeq)
	return binary.BigEndian.AppendUint64(b, uint64(m.ObjHigh))
}

func decodeState(b []byte) (State, error) {
	if len(b) != 36 {
		return State{}, fmt.Errorf("%w: index state of %d bytes", record.ErrCorrupt, len(b))
	}
	return State{
		Applied:   record.TID(binary.BigEndian.Uint64(b)),
		Next:      txlog.Loc{Seg: binary.BigEndian.Uint32(b[8:]), Off: int64(binary.BigEndian.Uint64(b[12:]))},
		IntentSeq: binary.BigEndian.Uint64(b[20:]),
		ObjHigh:   record.ObjID(binary.BigEndian.Uint64(b[28:])),
	}, nil
}

type BlkEntry struct {
	Loc  pack.Loc
	Refs uint64
}

func (e BlkEntry) Encode() []byte {
	b := binary.BigEndian.AppendUint16(nil, e.Loc.Vol)
	b = binary.BigEndian.AppendUint32(b, e.Loc.Pack)
	b = binary.BigEndian.AppendUint64(b, e.Loc.Off)
	b = binary.BigEndian.AppendUint32(b, e.Loc.Length)
	return binary.BigEndian.AppendUint64(b, e.Refs)
}

func DecodeBlk(b []byte) (BlkEntry, error) {
	if len(b) != 26 {
		return BlkEntry{}, fmt.Errorf("%w: block index entry of %d bytes", record.ErrCorrupt, len(b))
	}
	return BlkEntry{
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

// Open opens the index at path, making its buckets if it has none.
//
// The free page list is written only by Close, not by each commit
// (NoFreelistSync). Measured on an index of 100,000 files of 1 KiB
// (BenchmarkOpenBigIndex, BenchmarkCommitBigIndex, 2026-12-07): a bbolt that
// rebuilds the list at open walks every page, and the store's Open and
// Close took 187-227 ms; with the list written, 1.6-2.1 ms. Written by
// every commit instead, it cost a commit of 100 files 11.3-11.7 ms against
// 10.2-10.4 with a few hundred free pages, and it grows with them (a page
// per 512, all sorted at each commit), which the cleaner can free by the
// thousand. Written once at Close it costs commits nothing. A process that
// stops without Close leaves the list unwritten, and the next open
// rebuilds it, as every open did before.
func Open(path string, noSync bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o644, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: indexMapSize})
	if err != nil {
		return nil, fmt.Errorf("history: open index %s: %w", path, err)
	}
	db.NoSync = noSync
	buckets := [][]byte{BucketRec, BucketVer, BucketBlk, BucketTxn, BucketGone, BucketPseg, BucketMeta}
	missing := false
	db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			missing = missing || tx.Bucket(b) == nil
		}
		return nil
	})
	// Only a write commits (and fsyncs, and leaves the free page list
	// unwritten): an index that has its buckets opens without one.
	if !missing {
		return db, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
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

// Close writes the free page list, if a commit since Open left it
// unwritten, so that the next Open reads it instead of walking every page;
// then it closes db. The list is only a shortcut: when it cannot be
// written, the next Open rebuilds it, so that failure is not an error.
func Close(db *bolt.DB) error {
	if st := db.Stats(); st.TxStats.GetWrite() > 0 {
		db.NoFreelistSync = false
		db.Update(func(*bolt.Tx) error { return nil })
	}
	return db.Close()
}

func ReadState(tx *bolt.Tx) (State, bool, error) {
	v := tx.Bucket(BucketMeta).Get(MetaState)
	if v == nil {
		return State{}, false, nil
	}
	st, err := decodeState(v)
	return st, err == nil, err
}

// latest finds the version of (obj, key) visible as of at: the one with the
// largest create tid <= at, if it was not yet deleted at at. One seek: the
// cost is O(log n) in all records, however many versions the key has.
func Latest(tx *bolt.Tx, obj record.ObjID, key string, at record.TID) (record.Record, bool, error) {
	r, ok, err := Newest(tx, obj, key, at)
	if err != nil || !ok || !r.Visible(at) {
		return record.Record{}, false, err
	}
	r.Payload = append([]byte(nil), r.Payload...)
	return r, true, nil
}

// newest finds the newest record of obj's key created at or before at,
// whether or not it has ended since: one seek and a step back. Its payload
// is valid only during tx.
func Newest(tx *bolt.Tx, obj record.ObjID, key string, at record.TID) (record.Record, bool, error) {
	c := tx.Bucket(BucketRec).Cursor()
	want := RecKey(obj, key, at)
	prefix := want[:len(want)-8]
	k, v := c.Seek(want)
	if k == nil || !bytes.Equal(k, want) {
		k, v = c.Prev()
	}
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(want) {
		return record.Record{}, false, nil
	}
	r, err := DecodeRec(k, v)
	if err != nil {
		return record.Record{}, false, err
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
func ChunkRecords(tx *bolt.Tx, obj record.ObjID, first uint64, count int, at record.TID, fn func(i int, payload []byte) error) error {
	c := tx.Bucket(BucketRec).Cursor()
	want := RecKey(obj, record.ChunkKey(first), at)
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
			return fmt.Errorf("%w: index value of %d bytes for object %d chunk %d", record.ErrCorrupt, len(v), obj, first+uint64(i))
		}
		create, del := record.TID(binary.BigEndian.Uint64(k[len(k)-8:])), record.TID(binary.BigEndian.Uint64(v))
		if record.Checksum(obj, create, del, k[8:len(k)-9], v[12:]) != binary.BigEndian.Uint32(v[8:]) {
			return fmt.Errorf("%w: record object %d chunk %d created %s", record.ErrCorrupt, obj, first+uint64(i), create)
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
func Visible(tx *bolt.Tx, obj record.ObjID, keyPrefix string, at record.TID, fn func(r record.Record) error) error {
	return VisibleFrom(tx, obj, keyPrefix, "", at, fn)
}

// visibleFrom is visible for the keys after prefix+after ("" for all).
func VisibleFrom(tx *bolt.Tx, obj record.ObjID, prefix, after string, at record.TID, fn func(r record.Record) error) error {
	c := tx.Bucket(BucketRec).Cursor()
	pfx := RecPrefix(obj, prefix)
	start := pfx
	if after != "" {
		// Past every version of prefix+after: its key ends in NUL + tid,
		// and 0x01 sorts after that NUL.
		start = append(RecPrefix(obj, prefix+after), 1)
	}
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
		_, _, create, err := ParseRecKey(k)
		if err != nil {
			return err
		}
		if create > at {
			continue
		}
		if d := record.TID(binary.BigEndian.Uint64(v)); d != 0 && d <= at {
			continue
		}
		r, err := DecodeRec(k, v)
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
func ApplyTxn(tx *bolt.Tx, t *txlog.Txn, loc, next txlog.Loc, blocks map[record.Hash]pack.Loc, replay bool) error {
	a := NewTxnApply(tx, t.TID, replay)
	if err := a.Ops(t.Ops); err != nil {
		return err
	}
	return a.Finish(t, loc, next, blocks)
}

// A TxnApply adds one transaction to the index: its operations, in one or
// more batches (a commit hands them over while it builds the rest), then
// what needs all of them.
type TxnApply struct {
	tx       *bolt.Tx
	rec, blk *bolt.Bucket
	tid      record.TID
	replay   bool
	// stored are blocks the transaction stored that the index has no
	// entry for: the first record created that refers to one puts its
	// entry, with no lookup.
	stored map[record.Hash]pack.Loc
	refs   []record.Hash // the other blocks of the records created, counted by finish
}

func NewTxnApply(tx *bolt.Tx, tid record.TID, replay bool) *TxnApply {
	return &TxnApply{tx: tx, rec: tx.Bucket(BucketRec), blk: tx.Bucket(BucketBlk), tid: tid, replay: replay,
		stored: map[record.Hash]pack.Loc{}}
}

func (a *TxnApply) Ops(ops []txlog.Op) error {
	for _, op := range ops {
		switch op.Kind {
		case txlog.OpCreate:
			r := record.Record{Obj: op.Obj, Key: op.Key, Create: a.tid, Payload: op.Payload}
			if err := a.rec.Put(RecKey(op.Obj, op.Key, a.tid), RecValue(&r)); err != nil {
				return err
			}
			if strings.HasPrefix(op.Key, record.PrefixData) {
				c, err := record.DecodeChunk(op.Payload)
				if err != nil {
					return err
				}
				if loc, ok := a.stored[c.Hash]; ok && c.Block {
					delete(a.stored, c.Hash) // a second reference finds the entry
					if err := a.blk.Put(c.Hash[:], BlkEntry{Loc: loc, Refs: 1}.Encode()); err != nil {
						return err
					}
				} else if c.Block {
					a.refs = append(a.refs, c.Hash)
				}
			}
		case txlog.OpEnd:
			k := RecKey(op.Obj, op.Key, op.Create)
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
					record.ErrCorrupt, a.tid, op.Obj, op.Key, op.Create)
			}
			r, err := DecodeRec(k, v)
			if err != nil {
				return err
			}
			r.Delete = a.tid
			if err := a.rec.Put(k, RecValue(&r)); err != nil {
				return err
			}
		case txlog.OpDrop, txlog.OpVersion:
			// Transactions of the cleaner create no records, so no
			// reference waits to be counted before a drop.
			if err := ApplyPruneOp(a.tx, op); err != nil {
				return err
			}
			// The segments holding what this op undoes can now shrink.
			if err := markSegment(a.tx, op.Create); err != nil {
				return err
			}
		case txlog.OpCollapse:
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
func (a *TxnApply) Finish(t *txlog.Txn, loc, next txlog.Loc, blocks map[record.Hash]pack.Loc) error {
	for _, h := range a.refs {
		if err := addRef(a.blk, h, blocks, a.replay); err != nil {
			return err
		}
	}
	ver := a.tx.Bucket(BucketVer)
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
	if t.PruneOnly() {
		lv = append(lv, TxnPruneOnly)
		if err := a.tx.Bucket(BucketPseg).Put(binary.BigEndian.AppendUint32(nil, loc.Seg), nil); err != nil {
			return err
		}
	}
	if err := a.tx.Bucket(BucketTxn).Put(binary.BigEndian.AppendUint64(nil, uint64(t.TID)), lv); err != nil {
		return err
	}
	st := State{Applied: t.TID, Next: next, IntentSeq: t.IntentSeq, ObjHigh: t.ObjHigh}
	return a.tx.Bucket(BucketMeta).Put(MetaState, st.Encode())
}

// decodeTxnLoc reads a transaction index value.
func DecodeTxnLoc(v []byte) (txlog.Loc, byte, error) {
	if len(v) != 12 && len(v) != 13 {
		return txlog.Loc{}, 0, fmt.Errorf("%w: transaction index entry of %d bytes", record.ErrCorrupt, len(v))
	}
	var flags byte
	if len(v) == 13 {
		flags = v[12]
	}
	return txlog.Loc{Seg: binary.BigEndian.Uint32(v), Off: int64(binary.BigEndian.Uint64(v[4:]))}, flags, nil
}

// volMissing marks the placeholder entry of a block no pack holds.
const volMissing = 0xffff

func addRef(blk *bolt.Bucket, h record.Hash, blocks map[record.Hash]pack.Loc, replay bool) error {
	var e BlkEntry
	if v := blk.Get(h[:]); v != nil {
		var err error
		if e, err = DecodeBlk(v); err != nil {
			return err
		}
	} else if loc, ok := blocks[h]; ok {
		e.Loc = loc
	} else if replay {
		e.Loc = pack.Loc{Vol: volMissing}
	} else {
		return fmt.Errorf("%w: a record references block %s, which no pack holds", record.ErrCorrupt, h)
	}
	e.Refs++
	return blk.Put(h[:], e.Encode())
}

// PlaceBlocks gives each block of stored that the index lacks an entry
// with no reference yet, in key order, and returns their hashes, sorted:
// the frames applied next count their references up from there, and
// DropUnreferenced removes those still at zero. Entered in the frames'
// order, a batch's new blocks would cost more: bbolt splits a node only
// when the transaction commits, so every key new to a leaf's range is
// inserted into one growing node, moving the keys after it, and a batch
// of n new blocks in random (hash) order moves about n²/4 of them (a
// mirror's first pull of a 1 GiB file, 65,536 blocks: 40 % of its CPU).
// Sorted, each goes at the end of what is there, and the references
// that follow replace values in place.
func PlaceBlocks(tx *bolt.Tx, stored map[record.Hash]pack.Loc) ([]record.Hash, error) {
	blk := tx.Bucket(BucketBlk)
	hashes := make([]record.Hash, 0, len(stored))
	for h := range stored {
		hashes = append(hashes, h)
	}
	slices.SortFunc(hashes, func(x, y record.Hash) int { return bytes.Compare(x[:], y[:]) })
	placed := hashes[:0]
	for _, h := range hashes {
		if blk.Get(h[:]) != nil {
			continue
		}
		if err := blk.Put(h[:], BlkEntry{Loc: stored[h]}.Encode()); err != nil {
			return nil, err
		}
		placed = append(placed, h)
	}
	return placed, nil
}

// DropUnreferenced removes the entries of hashes that no record refers
// to: blocks PlaceBlocks entered that the frames did not use after all.
func DropUnreferenced(tx *bolt.Tx, hashes []record.Hash) error {
	blk := tx.Bucket(BucketBlk)
	for _, h := range hashes {
		v := blk.Get(h[:])
		if v == nil {
			continue
		}
		e, err := DecodeBlk(v)
		if err != nil {
			return err
		}
		if e.Refs == 0 {
			if err := blk.Delete(h[:]); err != nil {
				return err
			}
		}
	}
	return nil
}

func GetBlk(tx *bolt.Tx, h record.Hash) (BlkEntry, bool, error) {
	v := tx.Bucket(BucketBlk).Get(h[:])
	if v == nil {
		return BlkEntry{}, false, nil
	}
	e, err := DecodeBlk(v)
	return e, err == nil, err
}

// missingBlocks reports a block that records still reference but no pack
// holds, once a replay is over.
func MissingBlocks(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(BucketBlk).ForEach(func(k, v []byte) error {
			e, err := DecodeBlk(v)
			if err != nil {
				return err
			}
			if e.Loc.Vol == volMissing {
				return fmt.Errorf("%w: records reference block %x, which no pack holds", record.ErrCorrupt, k)
			}
			return nil
		})
	})
}

// Index keys: obj(8) | key | 0x00 | create tid(8).
func RecKey(obj record.ObjID, key string, create record.TID) []byte {
	b := make([]byte, 0, 8+len(key)+1+8)
	b = binary.BigEndian.AppendUint64(b, uint64(obj))
	b = append(b, key...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(create))
}

func RecPrefix(obj record.ObjID, keyPrefix string) []byte {
	b := make([]byte, 0, 8+len(keyPrefix))
	b = binary.BigEndian.AppendUint64(b, uint64(obj))
	return append(b, keyPrefix...)
}

func ParseRecKey(k []byte) (record.ObjID, string, record.TID, error) {
	if len(k) < 8+1+8 || k[len(k)-9] != 0 {
		return 0, "", 0, fmt.Errorf("%w: index key %x", record.ErrCorrupt, k)
	}
	return record.ObjID(binary.BigEndian.Uint64(k)), string(k[8 : len(k)-9]),
		record.TID(binary.BigEndian.Uint64(k[len(k)-8:])), nil
}

// Index values: delete tid(8) | checksum(4) | payload.
func RecValue(r *record.Record) []byte {
	b := make([]byte, 12, 12+len(r.Payload))
	binary.BigEndian.PutUint64(b, uint64(r.Delete))
	binary.BigEndian.PutUint32(b[8:], r.Checksum())
	return append(b, r.Payload...)
}

// decodeRec rebuilds a record from an index entry and checks its checksum.
// The payload aliases v, which is only valid inside the bbolt transaction.
func DecodeRec(k, v []byte) (record.Record, error) {
	obj, key, create, err := ParseRecKey(k)
	if err != nil {
		return record.Record{}, err
	}
	if len(v) < 12 {
		return record.Record{}, fmt.Errorf("%w: index value of %d bytes for object %d key %q", record.ErrCorrupt, len(v), obj, key)
	}
	r := record.Record{Obj: obj, Key: key, Create: create, Delete: record.TID(binary.BigEndian.Uint64(v)), Payload: v[12:]}
	if r.Checksum() != binary.BigEndian.Uint32(v[8:]) {
		return record.Record{}, fmt.Errorf("%w: record object %d key %q created %s", record.ErrCorrupt, obj, key, create)
	}
	return r, nil
}

// applyPruneOp applies a drop or version op to the index. A record already
// gone is skipped: a rewritten log replays drops whose records it no longer
// holds.
func ApplyPruneOp(tx *bolt.Tx, op txlog.Op) error {
	switch op.Kind {
	case txlog.OpDrop:
		rec := tx.Bucket(BucketRec)
		k := RecKey(op.Obj, op.Key, op.Create)
		v := rec.Get(k)
		if v == nil {
			return nil
		}
		// The segment of the end op can shrink too (that of the create
		// op is marked by the caller).
		if d := record.TID(binary.BigEndian.Uint64(v)); d != 0 {
			if err := markSegment(tx, d); err != nil {
				return err
			}
		}
		h, ok, err := RecordBlock(tx, op)
		if err != nil {
			return err
		}
		if ok {
			if err := decRef(tx.Bucket(BucketBlk), h); err != nil {
				return err
			}
		}
		return rec.Delete(k)
	case txlog.OpVersion:
		k := binary.BigEndian.AppendUint64(nil, uint64(op.Obj))
		k = binary.BigEndian.AppendUint64(k, uint64(op.Create))
		ver := tx.Bucket(BucketVer)
		if len(op.Payload) == 0 {
			return ver.Delete(k)
		}
		if len(op.Payload) != 9 {
			return fmt.Errorf("%w: version op of %d bytes", record.ErrCorrupt, len(op.Payload))
		}
		return ver.Put(k, op.Payload)
	}
	return nil
}

// decRef removes one reference to a block; the last one removes its entry,
// and the block's space is reclaimed by compactPacks.
func decRef(blk *bolt.Bucket, h record.Hash) error {
	v := blk.Get(h[:])
	if v == nil {
		return fmt.Errorf("%w: a dropped record references block %s, which the index lacks", record.ErrCorrupt, h)
	}
	e, err := DecodeBlk(v)
	if err != nil {
		return err
	}
	if e.Refs <= 1 {
		return blk.Delete(h[:])
	}
	e.Refs--
	return blk.Put(h[:], e.Encode())
}

// markSegment notes that the log segment of transaction tid holds something
// a cleaner op undid, so compactLog rewrites it.
func markSegment(tx *bolt.Tx, tid record.TID) error {
	v := tx.Bucket(BucketTxn).Get(binary.BigEndian.AppendUint64(nil, uint64(tid)))
	if v == nil {
		return nil
	}
	loc, _, err := DecodeTxnLoc(v)
	if err != nil {
		return err
	}
	return tx.Bucket(BucketPseg).Put(binary.BigEndian.AppendUint32(nil, loc.Seg), nil)
}

// applyCollapse records a collapsed range, replacing the ranges it
// swallowed.
func applyCollapse(tx *bolt.Tx, op txlog.Op) error {
	if len(op.Payload) != 8 {
		return fmt.Errorf("%w: collapse op of %d bytes", record.ErrCorrupt, len(op.Payload))
	}
	lo, to := op.Create, record.TID(binary.BigEndian.Uint64(op.Payload))
	if lo >= to {
		return fmt.Errorf("%w: collapse range %s..%s", record.ErrCorrupt, lo, to)
	}
	b := tx.Bucket(BucketGone)
	c := b.Cursor()
	var del [][]byte
	start := binary.BigEndian.AppendUint64(nil, uint64(lo))
	end := binary.BigEndian.AppendUint64(nil, uint64(to))
	for k, _ := c.Seek(start); k != nil && bytes.Compare(k, end) < 0; k, _ = c.Next() {
		del = append(del, append([]byte(nil), k...))
	}
	for _, k := range del {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return b.Put(end, start)
}

// RecordBlock is the block a data record names, if any.
func RecordBlock(tx *bolt.Tx, op txlog.Op) (record.Hash, bool, error) {
	if !strings.HasPrefix(op.Key, record.PrefixData) {
		return record.Hash{}, false, nil
	}
	k := RecKey(op.Obj, op.Key, op.Create)
	v := tx.Bucket(BucketRec).Get(k)
	if v == nil {
		return record.Hash{}, false, nil
	}
	r, err := DecodeRec(k, v)
	if err != nil {
		return record.Hash{}, false, err
	}
	c, err := record.DecodeChunk(r.Payload)
	if err != nil || !c.Block {
		return record.Hash{}, false, err
	}
	return c.Hash, true, nil
}

// Stored tells a that the transaction stored block h at loc, where the
// index has no entry for it: the first record created that refers to it
// puts one.
func (a *TxnApply) Stored(h record.Hash, loc pack.Loc) { a.stored[h] = loc }
