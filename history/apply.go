package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sort"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// The target side of a mirror (docs/SPEC.md section 6). A mirror appends
// its source's frames to its own log, with the source's transaction ids,
// once the blocks they name are durable in its packs: its newest
// transaction is where the next pull starts, and crash recovery (a torn
// tail cut, the index caught up with the log) resumes it exactly.
//
// Transaction ids. A mirror's own cleaner writes frames too, and they must
// never take an id its source mints later: the log is in id order. A
// source leaves TIDGap ids free after each transaction it mints (nextTID),
// and a mirror's cleaner takes ids in the first half of the gap after the
// newest source transaction it holds (cleanerTID); when that half is used
// up, the pass stops until the source's next transaction arrives.
//
// What the source's cleaner did travels in two ways. Its frames arrive as
// nops: the mirror applies its own retention, not its source's. But
// frames a source thinned lack the records its cleaner dropped, so a
// mirror that receives moments the source had collapsed keeps them
// collapsed as the source did (HAMMER's PASS case): the collapse goes in
// with the first frame of the range the mirror applies. Moments the mirror
// received before the source thinned them stay as they were, and only its
// own policy thins them. Until the frame that ends such a range has
// arrived, reads on the mirror stop at the moment before the range
// (capRead), so a client never sees part of one. A record the mirror holds
// from before the range that the source dropped (its end is gone from the
// source's log with it) is ended with the range's end (Candidates).

// TIDGap is how many transaction ids a store leaves free after each one it
// mints.
const TIDGap = 1024

// ErrMirrorNoRoom stops a mirror's cleaner pass that has used the ids it
// may take before its source's next transaction.
var ErrMirrorNoRoom = errors.New("history: the mirror's cleaner has used the transaction ids free before its source's next transaction; the pass goes on once that arrives")

// openMirror starts what a mirror needs: where its own frames may go.
// The newest moment is the source's (a mirror's own frames are no
// moments), and so a safe base until a pull says better.
func (s *Store) openMirror() error {
	if !s.mirror.Load() {
		return nil
	}
	return s.index.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(index.BucketTxn).Cursor()
		for k, v := c.Last(); len(k) == 8; k, v = c.Prev() {
			_, flags, err := index.DecodeTxnLoc(v)
			if err != nil {
				return err
			}
			if flags&index.TxnPruneOnly == 0 {
				s.mirrorBase.Store(binary.BigEndian.Uint64(k))
				return nil
			}
		}
		return nil
	})
}

// SetMirrorBase records that the source's newest transaction at or before
// the mirror's newest is base (MirrorBatch.Base).
func (s *Store) SetMirrorBase(base TID) {
	for {
		old := s.mirrorBase.Load()
		if uint64(base) <= old || s.mirrorBase.CompareAndSwap(old, uint64(base)) {
			return
		}
	}
}

// cleanerTID is the id of the cleaner's next frame. The caller holds mu.
func (s *Store) cleanerTID() (TID, error) {
	if !s.mirror.Load() {
		return s.nextTID(), nil
	}
	t := s.lastTID + 1
	if t >= TID(s.mirrorBase.Load())+TIDGap/2 {
		return 0, ErrMirrorNoRoom
	}
	return t, nil
}

// capRead moves a read on a mirror that is inside a collapsed range whose
// end has not arrived yet to the moment before that range. The caller
// holds mu.
func (s *Store) capRead(at TID) TID {
	if !s.mirror.Load() {
		return at
	}
	r, ok := s.collapsed().pendingAt(s.lastTID)
	if !ok {
		return at
	}
	if c := r.Lo - 1; at == Live || s.snap(at) > c {
		return c
	}
	return at
}

// An Applier adds one batch of a source's frames to a mirror: Missing
// says which blocks to fetch, PutBlock stores each as it arrives,
// Candidates and Apply finish. While it is open the mirror's cleaner
// waits (a block the mirror has when Missing looks must still be there
// when Apply counts a reference to it), so an Applier lives for one batch.
type Applier struct {
	s       *Store
	release func()
	stored  map[Hash]pack.Loc // blocks put, which the index does not know yet
	mark    uint64
	closed  bool
}

// NewApplier starts a batch. Only one may be open at a time.
func (s *Store) NewApplier() (*Applier, error) {
	if !s.mirror.Load() {
		return nil, fmt.Errorf("history: %s is not a mirror", s.dir)
	}
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !s.applying.CompareAndSwap(false, true) {
		return nil, errors.New("history: a mirror batch is already being applied")
	}
	a := &Applier{s: s, release: s.HoldCleaner(), stored: map[Hash]pack.Loc{}, mark: s.packs.Mark()}
	// Until the index knows the blocks put, the cleaner must not rewrite
	// the packs they go to.
	s.packFloor.Store(s.packs.SealedBelow())
	return a, nil
}

// Close ends the batch; blocks put and not applied are garbage a later
// pass reclaims.
func (a *Applier) Close() {
	if a.closed {
		return
	}
	a.closed = true
	a.s.packFloor.Store(math.MaxUint32)
	a.release()
	a.s.applying.Store(false)
}

// Missing lists the blocks the frames name that the mirror lacks, once
// each.
func (a *Applier) Missing(frames []*Txn) ([]Hash, error) {
	var out []Hash
	seen := map[Hash]bool{}
	err := a.s.index.View(func(tx *bolt.Tx) error {
		for _, t := range frames {
			var err error
			ferr := blockRefs(t, func(h Hash) {
				if seen[h] || err != nil {
					return
				}
				seen[h] = true
				if _, ok := a.stored[h]; ok {
					return
				}
				var have bool
				_, have, err = index.GetBlk(tx, h)
				if !have {
					out = append(out, h)
				}
			})
			if ferr != nil {
				return ferr
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// PutBlock stores a block that arrived, after checking it is the block h
// names. data must not change afterwards.
func (a *Applier) PutBlock(h Hash, data []byte) error {
	if HashOf(data) != h {
		return fmt.Errorf("%w: a block sent as %s does not match its hash", ErrCorrupt, h)
	}
	if _, ok := a.stored[h]; ok {
		return nil
	}
	loc, err := a.s.packs.Put(h, crc32.Checksum(data, record.Castagnoli), data)
	if err != nil {
		return err
	}
	a.stored[h] = loc
	return nil
}

// A Reconcile is a record the mirror holds from before a range its source
// collapsed: if the source no longer holds it, it ended inside the range,
// and the mirror ends it at To.
type Reconcile struct {
	RecordKey
	To TID
}

// Candidates lists the records the source may have dropped under the
// mirror: for each range the batch completes that the mirror's newest
// transaction lies in, the records created in the range that are still
// live once the batch's frames are applied. Ask the source which of them
// it holds, and give Apply the others.
func (a *Applier) Candidates(b *MirrorBatch) ([]Reconcile, error) {
	if len(b.Frames) == 0 {
		return nil, nil
	}
	x := a.s.LastTID()
	end := b.Frames[len(b.Frames)-1].TID
	var out []Reconcile
	for _, c := range b.Collapses {
		if c.Lo > x || x >= c.To || c.To > end {
			continue
		}
		live := map[RecordKey]bool{}
		var order []RecordKey
		add := func(k RecordKey) {
			if _, ok := live[k]; !ok {
				order = append(order, k)
			}
			live[k] = true
		}
		// The mirror's own records created in the range up to x, still
		// live in its index.
		err := a.s.scanFrames(c.Lo, x, func(t *Txn) {
			for _, op := range t.Ops {
				if op.Kind == OpCreate {
					add(RecordKey{op.Obj, op.Key, t.TID})
				}
			}
		})
		if err != nil {
			return nil, err
		}
		if err := a.s.index.View(func(tx *bolt.Tx) error {
			rec := tx.Bucket(index.BucketRec)
			for _, k := range order {
				v := rec.Get(index.RecKey(k.Obj, k.Key, k.Create))
				if len(v) < 8 || binary.BigEndian.Uint64(v) != 0 {
					live[k] = false
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
		// Those the batch creates before the range's end, and what the
		// batch ends.
		for _, t := range b.Frames {
			if t.TID >= c.To {
				break
			}
			for _, op := range t.Ops {
				switch op.Kind {
				case OpCreate:
					add(RecordKey{op.Obj, op.Key, t.TID})
				case OpEnd:
					live[RecordKey{op.Obj, op.Key, op.Create}] = false
				}
			}
		}
		for _, t := range b.Frames {
			if t.TID == c.To {
				for _, op := range t.Ops {
					if op.Kind == OpEnd {
						live[RecordKey{op.Obj, op.Key, op.Create}] = false
					}
				}
			}
		}
		for _, k := range order {
			if live[k] {
				out = append(out, Reconcile{RecordKey: k, To: c.To})
			}
		}
	}
	return out, nil
}

// scanFrames calls fn with every frame of the log from lo to hi.
func (s *Store) scanFrames(lo, hi TID, fn func(t *Txn)) error {
	s.logMu.RLock()
	defer s.logMu.RUnlock()
	var from txlog.Loc
	found := false
	err := s.index.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(index.BucketTxn).Cursor().Seek(binary.BigEndian.AppendUint64(nil, uint64(lo)))
		if k == nil {
			return nil
		}
		var err error
		from, _, err = index.DecodeTxnLoc(v)
		found = err == nil
		return err
	})
	if err != nil || !found {
		return err
	}
	err = txlog.Scan(s.logDir(), from, func(t *Txn, _, _ txlog.Loc) error {
		if t.TID > hi {
			return errStop
		}
		if t.TID >= lo {
			fn(t)
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return err
}

// Apply appends the batch's frames to the mirror's log, with the ranges
// to keep collapsed and the records to end (gone: the candidates the
// source no longer holds), after the blocks put are durable; then applies
// them to the index in one transaction, so a reader sees all of the batch
// or none of it. It returns the mirror's newest transaction.
func (a *Applier) Apply(b *MirrorBatch, gone []Reconcile) (TID, error) {
	s := a.s
	if len(b.Frames) == 0 {
		return s.LastTID(), nil
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.RLock()
	closed, broken, x := s.closed, s.broken, s.lastTID
	intent, objHigh := s.lastIntent, s.objHigh
	s.mu.RUnlock()
	switch {
	case closed:
		return x, ErrClosed
	case broken != nil:
		return x, broken
	case !s.mirror.Load():
		return x, fmt.Errorf("history: %s is no longer a mirror", s.dir)
	case s.unappliable.Load() != nil:
		return x, *s.unappliable.Load()
	}
	frames := make([]*Txn, 0, len(b.Frames))
	prev := x
	for _, f := range b.Frames {
		if f.TID <= prev {
			return x, fmt.Errorf("history: the source sent transaction %s, not after the mirror's newest %s: "+
				"its transaction ids leave no room for the mirror's own (a source older than this build?)", f.TID, prev)
		}
		prev = f.TID
		t := mirrorFrame(f)
		t.IntentSeq = intent
		t.ObjHigh = max(f.ObjHigh, objHigh)
		frames = append(frames, t)
	}
	s.passCollapses(frames, b.Collapses, x)
	for _, g := range gone {
		i := sort.Search(len(frames), func(i int) bool { return frames[i].TID >= g.To })
		if i == len(frames) || frames[i].TID != g.To {
			return x, fmt.Errorf("history: a record to end at %s, which the batch does not hold", g.To)
		}
		frames[i].Ops = append(frames[i].Ops, Op{Kind: OpEnd, Obj: g.Obj, Key: g.Key, Create: g.Create})
	}
	if err := s.packs.Sync(); err != nil {
		return x, err
	}
	if err := s.packs.LostSince(a.mark); err != nil {
		return x, err
	}
	// The batch's frames go to the log with one sync: a crash before it
	// ends may leave any of them damaged, and the log of a mirror is
	// opened cutting every frame from the first damaged one (Refetchable),
	// which the next pull fetches again.
	locs := make([]txlog.Loc, len(frames))
	nexts := make([]txlog.Loc, len(frames))
	start := s.tlog.End()
	// A rotation may have synced a part of a batch that fails: take it
	// all back, so that the log never holds frames the index and the next
	// pull do not know of. If even that fails, no batch goes after them
	// until the store is opened again, which cuts them.
	takeBack := func(err error) error {
		err = fmt.Errorf("history: mirror: %w", err)
		if cerr := s.tlog.CutTo(start); cerr != nil {
			stuck := fmt.Errorf("history: mirror: a failed batch could not be taken back from the log (%w); "+
				"no batch is applied until the store is opened again, which cuts it", cerr)
			s.unappliable.Store(&stuck)
			return errors.Join(err, stuck)
		}
		return err
	}
	for i, t := range frames {
		var err error
		if locs[i], nexts[i], err = s.tlog.Write(t); err != nil {
			return x, takeBack(err)
		}
	}
	if err := s.tlog.Sync(); err != nil {
		return x, takeBack(err)
	}
	last := frames[len(frames)-1]
	var cs collapses
	err := s.index.Update(func(tx *bolt.Tx) error {
		placed, perr := index.PlaceBlocks(tx, a.stored)
		if perr != nil {
			return perr
		}
		for i, t := range frames {
			if err := index.ApplyTxn(tx, t, locs[i], nexts[i], a.stored, false); err != nil {
				return fmt.Errorf("transaction %s: %w", t.TID, err)
			}
		}
		if err := index.DropUnreferenced(tx, placed); err != nil {
			return err
		}
		var err error
		cs, err = loadCollapses(tx)
		return err
	})
	s.mu.Lock()
	s.lastTID = last.TID
	s.objHigh = max(s.objHigh, last.ObjHigh)
	s.nextObj = max(s.nextObj, s.objHigh)
	if err != nil {
		// The frames are durable: each commit attempt (the flusher's)
		// brings the index up to the log first.
		s.broken = fmt.Errorf("history: index update for mirrored %s: %w", last.TID, err)
		s.unindexed, s.unindexedIntent = nil, s.lastIntent
		err = s.broken
	}
	s.mu.Unlock()
	s.SetMirrorBase(last.TID)
	if err != nil {
		return last.TID, err
	}
	s.gone.Store(&cs)
	s.commits.Add(uint64(len(frames)))
	return last.TID, nil
}

// passCollapses puts into frames the source's collapsed ranges the mirror
// must keep collapsed: the part of each after x (what the mirror held
// before stays as it was), merged with a range of its own the part
// overlaps, in the first frame of the range the batch holds. A range the
// mirror already keeps is left alone, and so is one whose only frame here
// is its end and holds nothing: that frame must stay a moment, and no
// frame of the mirror lies inside the range.
func (s *Store) passCollapses(frames []*Txn, src []Collapse, x TID) {
	have := s.collapsed()
	for _, c := range src {
		if c.To <= x {
			continue
		}
		lo := max(c.Lo, x+1)
		for _, h := range have {
			if h.To > lo && h.Lo < c.To {
				lo = min(lo, h.Lo)
			}
		}
		if r, ok := have.pendingAt(lo); ok && r.To == c.To {
			continue // kept already
		}
		i := sort.Search(len(frames), func(i int) bool { return frames[i].TID >= lo })
		if i == len(frames) || frames[i].TID > c.To {
			continue
		}
		f := frames[i]
		if f.TID == c.To && len(f.Ops) == 0 && len(f.Notes) == 0 {
			continue
		}
		op := Op{Kind: OpCollapse, Create: lo, Payload: binary.BigEndian.AppendUint64(nil, uint64(c.To))}
		f.Ops = append([]Op{op}, f.Ops...)
	}
}
