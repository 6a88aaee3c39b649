package history

import (
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/asof/asof/history/internal/index"
	bolt "go.etcd.io/bbolt"
)

// The cleaner thins history by a retention policy (SPEC section 5), the way
// HAMMER's prune does: the transactions inside each grain collapse into the
// state at the grain's end. A pass
//
//  1. works out the kept moments and the collapsed ranges between them
//     (Policy.plan), from the transaction index alone;
//  2. appends a frame of collapse ops: from then on a read at a moment in
//     [lo, to) reads as of to — before any record goes, so no reader ever
//     sees a half-thinned state;
//  3. appends frames of drop ops for the records no kept moment sees (both
//     ends inside one collapsed range) and of version ops that merge the
//     version entries inside a range into the one the range ends with; each
//     frame is applied to the index like a commit, a few thousand ops at a
//     time, so the live server waits a few milliseconds at most;
//  4. frees the blocks whose last reference went (compactPacks) and
//     rewrites the log segments that hold the dropped records
//     (compactLog), so the space comes back.
//
// Every step is a frame in the log or is derived from one, so a crash at
// any point loses nothing kept: replay applies what was logged, and the
// next pass finds whatever is left to do. Drop ops are idempotent (a
// record already gone is skipped), which is also what lets a rewritten log
// replay cleanly.

// PruneOptions tunes a pass.
type PruneOptions struct {
	// DryRun works out what a pass would remove and changes nothing.
	DryRun bool
	// Progress, if set, is told how far the pass has come.
	Progress Progress
	// Gentle makes the pass rest after each batch as long as the batch
	// took, so a continuous cleaner takes at most half of what the live
	// server would use; an explicit `asof prune` runs flat out.
	Gentle bool
}

// PruneReport says what a pass did (or, dry, would do).
type PruneReport struct {
	DryRun       bool
	Moments      int64 // transactions thinned away by this pass
	Records      int64 // records removed
	Versions     int64 // version entries merged into their grain's
	Blocks       int64 // blocks no longer referenced
	BlockBytes   int64 // their bytes
	Packs        int   // pack files rewritten or removed
	Segments     int   // log segments rewritten
	StoredBefore int64 // bytes on disk before the pass
	StoredAfter  int64 // and after (a dry run estimates)
	Oldest       TID   // the oldest moment that can still be read
}

// pruneBatch is how many ops one cleaner frame carries: small enough that
// applying it holds commits back for milliseconds.
const pruneBatch = 2048

// Prune runs one pass of the cleaner under policy p now. An empty policy
// keeps everything: the pass changes nothing.
func (s *Store) Prune(p Policy, o PruneOptions) (*PruneReport, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	first := !s.prunedOnce
	rep := &PruneReport{DryRun: o.DryRun}
	// A pass with nothing to do answers from figures up to a few seconds
	// old: the full count costs a scan of the index.
	before, err := s.Stats(5 * time.Second)
	if err != nil {
		return nil, err
	}
	rep.StoredBefore, rep.StoredAfter, rep.Oldest = before.StoredBytes, before.StoredBytes, before.Oldest
	if len(p) == 0 {
		return rep, nil
	}
	txns, err := s.momentTxns()
	if err != nil {
		return nil, err
	}
	old := s.collapsed()
	all, changed := p.plan(txns, old, s.Now())
	for _, t := range txns {
		if old.snap(t) == t && all.snap(t) != t {
			rep.Moments++
		}
	}
	// Records and versions can only become droppable when a range is new
	// or grew. The first pass after Open looks anyway: a pass a crash or
	// a stop cut short may have left some behind.
	if len(changed) == 0 && !first {
		return rep, nil
	}
	if before, err = s.Stats(0); err != nil {
		return nil, err
	}
	rep.StoredBefore, rep.StoredAfter = before.StoredBytes, before.StoredBytes
	if len(changed) > 0 && !o.DryRun {
		ops := make([]Op, len(changed))
		for i, c := range changed {
			ops[i] = Op{Kind: OpCollapse, Create: c.Lo, Payload: binary.BigEndian.AppendUint64(nil, uint64(c.To))}
		}
		if err := s.appendPrune(ops, rep); err != nil {
			return nil, err
		}
	}
	var dryRefs map[Hash]uint64 // references a dry run would remove
	if o.DryRun {
		dryRefs = map[Hash]uint64{}
	}
	emit := func(ops []Op) error {
		if s.stopping() {
			return ErrClosed
		}
		if o.DryRun {
			return s.countDry(ops, dryRefs, rep)
		}
		start := time.Now()
		err := s.appendPrune(ops, rep)
		if o.Gentle {
			time.Sleep(time.Since(start))
		}
		return err
	}
	progress("records", 0, before.Records)
	if err := s.dropRecords(all, emit, func(n int64) { progress("records", n, before.Records) }); err != nil {
		return nil, err
	}
	progress("versions", 0, before.Versions)
	if err := s.mergeVersions(all, emit); err != nil {
		return nil, err
	}
	progress("versions", before.Versions, before.Versions)
	if o.DryRun {
		for h, n := range dryRefs {
			var e index.BlkEntry
			var ok bool
			if err := s.index.View(func(tx *bolt.Tx) error {
				var err error
				e, ok, err = index.GetBlk(tx, h)
				return err
			}); err != nil {
				return nil, err
			}
			if ok && e.Refs <= n {
				rep.Blocks++
				rep.BlockBytes += int64(e.Loc.Length)
			}
		}
		rep.StoredAfter = max(0, before.StoredBytes-rep.BlockBytes)
		if len(all) > 0 && txns != nil && all.snap(txns[0]) != txns[0] {
			rep.Oldest = all.snap(txns[0])
		}
		return rep, nil
	}
	if err := s.compactPacks(rep, progress); err != nil {
		return nil, err
	}
	if err := s.compactLog(rep, progress); err != nil {
		return nil, err
	}
	after, err := s.Stats(0)
	if err != nil {
		return nil, err
	}
	rep.StoredAfter, rep.Oldest = after.StoredBytes, after.Oldest
	s.prunedOnce = true
	return rep, nil
}

// HoldCleaner keeps the cleaner from applying its next batch until the
// function it returns is called. A change that copies a past moment
// (Tx.CopyData) should run under it and be committed before letting go:
// until its commit the copy refers to the moment's blocks by hash, and a
// batch that dropped the moment's last records could free them. (A batch
// that finds such copies pending, their commit having failed, commits them
// first.) Any number of holders go on at once.
func (s *Store) HoldCleaner() (release func()) {
	s.copyMu.RLock()
	return s.copyMu.RUnlock
}

// copiesPending reports whether changes not yet committed copy blocks of a
// past moment by reference.
func (s *Store) copiesPending() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, o := range []*overlay{s.pending, s.frozen} {
		if o == nil {
			continue
		}
		for _, st := range o.objs {
			for _, c := range st.chunks {
				if c.ref != nil && c.ref.Block {
					return true
				}
			}
		}
	}
	return false
}

// collapsed is the current list of collapsed ranges.
func (s *Store) collapsed() collapses {
	if p := s.gone.Load(); p != nil {
		return *p
	}
	return nil
}

// snap maps a past moment to the one whose state it reads.
func (s *Store) snap(at TID) TID {
	if at == Live {
		return at
	}
	return s.collapsed().snap(at)
}

// momentTxns lists the transactions that changed state (not the cleaner's
// own), oldest first.
func (s *Store) momentTxns() ([]TID, error) {
	var out []TID
	err := s.index.View(func(tx *bolt.Tx) error {
		return tx.Bucket(index.BucketTxn).ForEach(func(k, v []byte) error {
			_, flags, err := index.DecodeTxnLoc(v)
			if err != nil {
				return err
			}
			if flags&index.TxnPruneOnly == 0 && len(k) == 8 {
				out = append(out, TID(binary.BigEndian.Uint64(k)))
			}
			return nil
		})
	})
	return out, err
}

// dropRecords emits, a batch at a time, a drop op for every ended record
// that lies wholly inside one collapsed range. Each batch is emitted (and,
// for real, applied) before the scan goes on past it.
func (s *Store) dropRecords(cs collapses, emit func([]Op) error, progress func(int64)) error {
	var after []byte
	var scanned int64
	for {
		var ops []Op
		done := true
		err := s.index.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(index.BucketRec).Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(append(after, 0))
			}
			for ; k != nil; k, v = c.Next() {
				scanned++
				if len(v) < 12 {
					return fmt.Errorf("%w: index record value of %d bytes", ErrCorrupt, len(v))
				}
				d := TID(binary.BigEndian.Uint64(v))
				if d == 0 || len(k) < 17 {
					continue
				}
				create := TID(binary.BigEndian.Uint64(k[len(k)-8:]))
				if !cs.covers(create, d) {
					continue
				}
				obj, key, _, err := index.ParseRecKey(k)
				if err != nil {
					return err
				}
				ops = append(ops, Op{Kind: OpDrop, Obj: obj, Key: key, Create: create})
				if len(ops) == pruneBatch {
					after, done = append([]byte(nil), k...), false
					return nil
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		progress(scanned)
		if len(ops) > 0 {
			if err := emit(ops); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
}

// mergeVersions emits version ops so that, inside each collapsed range,
// an object keeps one version entry: the one the range's end reads (its
// own entry at the end, if it changed then, or its newest inside the
// range), carrying the union of the changes merged into it. An object born
// and gone inside one range was never seen by a kept moment: all its
// entries go.
func (s *Store) mergeVersions(cs collapses, emit func([]Op) error) error {
	type entry struct {
		tid    TID
		change Change
		size   uint64
	}
	var ops []Op
	flushObj := func(obj ObjID, vs []entry) {
		for i := 0; i < len(vs); {
			to := cs.snap(vs[i].tid)
			if to == vs[i].tid {
				i++
				continue
			}
			// vs[i:j] lie in the range ending at to; vs[j] may be at to.
			j := i
			var merged Change
			for j < len(vs) && vs[j].tid < to {
				merged |= vs[j].change
				j++
			}
			keep := j - 1
			if j < len(vs) && vs[j].tid == to {
				keep = j
			}
			merged |= vs[keep].change
			gone := merged&ChangeCreated != 0 && merged&ChangeDeleted != 0
			for k := i; k < j; k++ {
				if k != keep || gone {
					ops = append(ops, Op{Kind: OpVersion, Obj: obj, Create: vs[k].tid})
				}
			}
			if keep == j && gone {
				ops = append(ops, Op{Kind: OpVersion, Obj: obj, Create: vs[keep].tid})
			} else if !gone && merged != vs[keep].change {
				p := append([]byte{byte(merged)}, binary.BigEndian.AppendUint64(nil, vs[keep].size)...)
				ops = append(ops, Op{Kind: OpVersion, Obj: obj, Create: vs[keep].tid, Payload: p})
			}
			i = j
			if keep == j {
				i = j + 1
			}
		}
	}
	var after []byte // the next object to scan from
	for {
		done := true
		err := s.index.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(index.BucketVer).Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(after)
			}
			var cur ObjID
			var vs []entry
			for ; k != nil; k, v = c.Next() {
				if len(k) != 16 || len(v) != 9 {
					return fmt.Errorf("%w: version entry", ErrCorrupt)
				}
				obj := ObjID(binary.BigEndian.Uint64(k))
				if obj != cur && vs != nil {
					flushObj(cur, vs)
					vs = vs[:0]
					if len(ops) >= pruneBatch {
						after, done = append([]byte(nil), k[:8]...), false
						return nil
					}
				}
				cur = obj
				vs = append(vs, entry{tid: TID(binary.BigEndian.Uint64(k[8:])), change: Change(v[0]), size: binary.BigEndian.Uint64(v[1:])})
			}
			if vs != nil {
				flushObj(cur, vs)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(ops) > 0 {
			if err := emit(ops); err != nil {
				return err
			}
			ops = nil
		}
		if done {
			return nil
		}
	}
}

// countDry tallies what ops would remove.
func (s *Store) countDry(ops []Op, refs map[Hash]uint64, rep *PruneReport) error {
	return s.index.View(func(tx *bolt.Tx) error {
		for _, op := range ops {
			switch op.Kind {
			case OpDrop:
				rep.Records++
				if h, ok, err := index.RecordBlock(tx, op); err != nil {
					return err
				} else if ok {
					refs[h]++
				}
			case OpVersion:
				if len(op.Payload) == 0 {
					rep.Versions++
				}
			}
		}
		return nil
	})
}

// appendPrune logs one frame of cleaner ops and applies it, like a commit:
// one at a time with commits, durable in the log before the index changes.
func (s *Store) appendPrune(ops []Op, rep *PruneReport) error {
	s.copyMu.Lock()
	defer s.copyMu.Unlock()
	if s.copiesPending() {
		// A copy of a past moment refers to its blocks by hash until it
		// is committed: a drop before then could free them under it.
		if err := s.commit(); err != nil {
			return fmt.Errorf("history: prune waits for copies of past moments to be committed: %w", err)
		}
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	if s.closed || s.broken != nil {
		s.mu.Unlock()
		if s.broken != nil {
			return s.broken
		}
		return ErrClosed
	}
	tid, err := s.cleanerTID()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	t := &Txn{TID: tid, IntentSeq: s.lastIntent, ObjHigh: s.objHigh, Ops: ops}
	s.mu.Unlock()
	loc, next, err := s.tlog.Append(t)
	if err != nil {
		return fmt.Errorf("history: prune: %w", err)
	}
	collapsing := false
	var cs collapses
	err = s.index.Update(func(tx *bolt.Tx) error {
		// Count before applying: the references the drops remove.
		seen := map[Hash]uint64{}
		for _, op := range ops {
			switch op.Kind {
			case OpDrop:
				if tx.Bucket(index.BucketRec).Get(index.RecKey(op.Obj, op.Key, op.Create)) == nil {
					continue
				}
				rep.Records++
				h, ok, err := index.RecordBlock(tx, op)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				seen[h]++
				if e, ok, err := index.GetBlk(tx, h); err != nil {
					return err
				} else if ok && e.Refs == seen[h] {
					rep.Blocks++
					rep.BlockBytes += int64(e.Loc.Length)
				}
			case OpVersion:
				if len(op.Payload) == 0 {
					rep.Versions++
				}
			case OpCollapse:
				collapsing = true
			}
		}
		if err := index.ApplyTxn(tx, t, loc, next, nil, false); err != nil {
			return err
		}
		if collapsing {
			var err error
			cs, err = loadCollapses(tx)
			return err
		}
		return nil
	})
	s.mu.Lock()
	s.lastTID = t.TID
	if err != nil {
		s.broken = fmt.Errorf("history: index update for %s: %w", t.TID, err)
		s.unindexed, s.unindexedIntent = nil, s.lastIntent
		err = s.broken
	}
	s.mu.Unlock()
	if err == nil && collapsing {
		s.gone.Store(&cs)
	}
	return err
}

// loadCollapses reads the collapsed ranges from the index.
func loadCollapses(tx *bolt.Tx) (collapses, error) {
	var cs collapses
	err := tx.Bucket(index.BucketGone).ForEach(func(k, v []byte) error {
		if len(k) != 8 || len(v) != 8 {
			return fmt.Errorf("%w: collapsed range entry", ErrCorrupt)
		}
		cs = append(cs, collapse{Lo: TID(binary.BigEndian.Uint64(v)), To: TID(binary.BigEndian.Uint64(k))})
		return nil
	})
	sort.Slice(cs, func(i, j int) bool { return cs[i].To < cs[j].To })
	return cs, err
}
