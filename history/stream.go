package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// The source side of a mirror (docs/SPEC.md section 6): the committed
// frames after a transaction, read in bounded batches, and the blocks they
// name. Nothing is kept for any reader: a target asks from the newest
// transaction it holds.

// Collapse is a collapsed range of the cleaner's: the moments from Lo up to
// (not including) To read as the state at To.
type Collapse struct {
	Lo, To TID
}

// MirrorBatch is a run of committed frames, as a mirror receives them.
type MirrorBatch struct {
	// Frames are in order, each durable and committed. Records the cleaner
	// has dropped are left out of them (a log segment the cleaner has not
	// rewritten yet still holds them), and a cleaner frame comes as one
	// nop: the cleaner's own ops are the source's business.
	Frames []*Txn
	// Collapses are the source's collapsed ranges that end after the
	// transaction asked from and start at or before the last frame sent:
	// the target keeps them collapsed where it had not received their
	// moments before (the frames sent lack what the cleaner dropped).
	Collapses []Collapse
	// Base is the newest of the source's transactions at or before the one
	// asked from (0: none): the target holds it, and the source mints
	// nothing within TIDGap after it.
	Base TID
	// Last is the source's newest committed transaction.
	Last TID
}

// RecordKey names one record.
type RecordKey struct {
	Obj    ObjID
	Key    string
	Create TID
}

// MirrorRead reads the frames committed after since, as many as maxFrames
// and about maxBytes (at least one), holding the log lock only while it
// reads them: the caller sends them without it, so a slow target holds up
// nothing but itself.
func (s *Store) MirrorRead(since TID, maxFrames, maxBytes int) (*MirrorBatch, error) {
	s.mu.RLock()
	closed := s.closed
	b := &MirrorBatch{Last: s.lastTID}
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	// The cleaner rewrites old segments and their index entries under
	// logMu: hold it from the lookup to the end of the read.
	s.logMu.RLock()
	defer s.logMu.RUnlock()
	err := s.index.View(func(tx *bolt.Tx) error {
		txns := tx.Bucket(index.BucketTxn)
		want := binary.BigEndian.AppendUint64(nil, uint64(since)+1)
		c := txns.Cursor()
		bk, _ := c.Seek(want)
		if bk == nil {
			bk, _ = c.Last()
		} else {
			bk, _ = c.Prev()
		}
		if len(bk) == 8 {
			b.Base = TID(binary.BigEndian.Uint64(bk))
		}
		if b.Last <= since {
			return nil
		}
		k, v := txns.Cursor().Seek(want)
		if k == nil {
			return nil
		}
		from, _, err := index.DecodeTxnLoc(v)
		if err != nil {
			return err
		}
		cs, err := loadCollapses(tx)
		if err != nil {
			return err
		}
		rec := tx.Bucket(index.BucketRec)
		size := 0
		err = txlog.Scan(s.logDir(), from, func(t *Txn, _, _ txlog.Loc) error {
			// A frame being appended behind the newest committed one may
			// be incomplete.
			if t.TID > b.Last {
				return errStop
			}
			if t.TID <= since {
				return nil
			}
			f := mirrorFrame(t)
			if cs.thinned(t.TID) {
				f.Ops = keptOps(rec, f)
			}
			b.Frames = append(b.Frames, f)
			size += frameSize(f)
			if t.TID == b.Last || len(b.Frames) >= maxFrames || size >= maxBytes {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		if n := len(b.Frames); n > 0 {
			end := b.Frames[n-1].TID
			for _, c := range cs {
				if c.To > since && c.Lo <= end {
					b.Collapses = append(b.Collapses, Collapse(c))
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: read frames after %s: %w", since, err)
	}
	return b, nil
}

// mirrorFrame is a frame as a mirror stores it: its records' creates and
// ends and its notes. A frame of the cleaner's keeps one nop, so that it
// stays no moment; an empty frame that is a moment stays one.
func mirrorFrame(t *Txn) *Txn {
	f := &Txn{TID: t.TID, IntentSeq: t.IntentSeq, ObjHigh: t.ObjHigh, Notes: t.Notes}
	for _, op := range t.Ops {
		if op.Kind == OpCreate || op.Kind == OpEnd {
			f.Ops = append(f.Ops, op)
		}
	}
	if len(f.Ops) == 0 && t.PruneOnly() {
		f.Ops = []Op{{Kind: OpNop}}
	}
	return f
}

// keptOps leaves out of a frame's ops the records the cleaner dropped,
// as a rewrite of its segment would.
func keptOps(rec *bolt.Bucket, f *Txn) []Op {
	ops := f.Ops[:0:0]
	for _, op := range f.Ops {
		switch op.Kind {
		case OpCreate:
			if rec.Get(index.RecKey(op.Obj, op.Key, f.TID)) == nil {
				continue
			}
		case OpEnd:
			if rec.Get(index.RecKey(op.Obj, op.Key, op.Create)) == nil {
				continue
			}
		}
		ops = append(ops, op)
	}
	return ops
}

// thinned reports whether the cleaner may have dropped records a frame at
// tid created or ended: it lies in a collapsed range, or ends one (a
// record ended at a range's end was seen by no kept moment).
func (cs collapses) thinned(tid TID) bool {
	i := sort.Search(len(cs), func(i int) bool { return cs[i].To >= tid })
	return i < len(cs) && cs[i].Lo <= tid
}

// pendingAt is the collapsed range that holds at, if its end is after at.
func (cs collapses) pendingAt(at TID) (collapse, bool) {
	i := sort.Search(len(cs), func(i int) bool { return cs[i].To > at })
	if i < len(cs) && cs[i].Lo <= at {
		return cs[i], true
	}
	return collapse{}, false
}

func frameSize(t *Txn) int {
	n := 48 + 17*len(t.Notes)
	for _, op := range t.Ops {
		n += 27 + len(op.Key) + len(op.Payload)
	}
	return n
}

// ReadBlock returns the data of block h, checked against its CRC (the
// receiver checks the SHA-256). ErrNotFound: the store holds no such block
// (the cleaner may have freed it since the frame naming it was read).
func (s *Store) ReadBlock(h Hash) ([]byte, error) {
	var prev pack.Loc
	for try := 0; ; try++ {
		var e index.BlkEntry
		var ok bool
		err := s.index.View(func(tx *bolt.Tx) error {
			var err error
			e, ok, err = index.GetBlk(tx, h)
			return err
		})
		if err != nil {
			return nil, err
		}
		if !ok || e.Loc.Vol == volMissingID {
			return nil, fmt.Errorf("%w: block %s", ErrNotFound, h)
		}
		data, err := s.packs.Get(e.Loc, h, false)
		if err == nil {
			return data, nil
		}
		// The cleaner may have moved the block between the lookup and the
		// read: look again, once it says so.
		if try > 0 && e.Loc == prev || try > 3 {
			return nil, err
		}
		prev = e.Loc
	}
}

// HasRecords reports, for each key, whether the store holds that record.
func (s *Store) HasRecords(keys []RecordKey) ([]bool, error) {
	out := make([]bool, len(keys))
	err := s.index.View(func(tx *bolt.Tx) error {
		rec := tx.Bucket(index.BucketRec)
		for i, k := range keys {
			out[i] = rec.Get(index.RecKey(k.Obj, k.Key, k.Create)) != nil
		}
		return nil
	})
	return out, err
}

// EncodeFrame is the frame of t as the log holds it: checksummed, so a
// copy sent over a network is checked as the log's own are.
func EncodeFrame(t *Txn) []byte { return t.Encode() }

// DecodeFrame checks and decodes one frame that EncodeFrame made.
func DecodeFrame(b []byte) (*Txn, error) { return txlog.Decode(b) }

// blockRefs lists the blocks a frame's new records name.
func blockRefs(t *Txn, fn func(h Hash)) error {
	for _, op := range t.Ops {
		if op.Kind != OpCreate || !strings.HasPrefix(op.Key, record.PrefixData) {
			continue
		}
		c, err := record.DecodeChunk(op.Payload)
		if err != nil {
			return err
		}
		if c.Block {
			fn(c.Hash)
		}
	}
	return nil
}
