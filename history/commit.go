package history

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/intent"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// commit turns the pending changes into one transaction: freeze them (new
// changes go on into a fresh overlay and intent file), write new blocks and
// fsync the packs, append the frame to the log and fsync it — the moment it
// is durable — then apply it to the index and drop the frozen overlay. The
// index takes the operations while the build makes them (indexer), in a
// bbolt transaction that commits after the log append.
func (s *Store) commit() error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	err := s.commitPending()
	s.mu.Lock()
	s.ended++
	s.endedErr = err
	s.endedCond.Broadcast()
	s.mu.Unlock()
	return err
}

// awaitCommit waits until a commit ends, the flusher's if it is running
// (it is asked to commit now), and returns that commit's error. A writer
// whose changes would otherwise outgrow memory waits here for the commit
// in flight, which frees its frozen changes. It does not commit itself:
// every other writer over the limit would queue behind that commit on
// commitMu, and writes and commits would take turns instead of
// overlapping.
func (s *Store) awaitCommit() error {
	s.mu.Lock()
	seen := s.ended
	s.mu.Unlock()
	select {
	case <-s.stop:
		// No flusher any more (the store is closing): commit here.
		return s.commit()
	default:
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.ended == seen && !s.closed {
		s.endedCond.Wait()
	}
	if s.ended == seen {
		return ErrClosed
	}
	return s.endedErr
}

// commitPending commits the pending changes as one transaction; the
// caller holds commitMu.
func (s *Store) commitPending() error {
	if err := s.repairIndex(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	if s.pending.empty() {
		s.mu.Unlock()
		return nil
	}
	old, err := s.ilog.Rotate()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	fr := s.pending
	s.pending, s.frozen = newOverlay(), fr
	retained := append(s.retained, old)
	s.retained = nil
	tid := s.nextTID()
	objHigh := s.objHigh
	s.mu.Unlock()

	// Until the index knows this commit's blocks, the cleaner must not
	// rewrite the packs they go to.
	s.packFloor.Store(s.packs.SealedBelow())
	defer s.packFloor.Store(math.MaxUint32)
	ix := s.startIndexer(tid)
	mark := s.packs.Mark()
	b, err := s.build(fr, tid, objHigh, old.Seq(), ix.feed.publish)
	ix.feed.close()
	t := b.t
	if err == nil {
		err = s.packs.Sync()
	}
	if err == nil {
		err = s.packs.LostSince(mark) // a cleaner's failed write may have taken ours with it
	}
	var loc, next txlog.Loc
	if err == nil {
		loc, next, err = s.tlog.Append(t)
	}
	if err != nil {
		ix.abandon()
		// Nothing became durable: the frozen changes go back under the
		// ones made since, and their intent files stay for recovery.
		s.mu.Lock()
		newer := s.pending
		s.pending, s.frozen = fr, nil
		newer.mergeInto(s.pending)
		s.retained = append(retained, s.retained...)
		s.mu.Unlock()
		return fmt.Errorf("history: commit: %w", err)
	}
	if err = ix.finish(t, loc, next); err != nil {
		// The transaction is durable in the log but not in the index (a
		// full disk): the frozen overlay keeps reads right until the next
		// commit, or a restart, brings the index up to the log.
		s.mu.Lock()
		s.broken = fmt.Errorf("history: index update for %s: %w", tid, err)
		s.lastTID = tid
		s.unindexed, s.unindexedIntent = retained, old.Seq()
		s.mu.Unlock()
		return s.broken
	}
	s.indexed(tid, old.Seq(), retained)
	if len(b.ended) > 0 {
		s.dropsPending.Add(1)
		select {
		case s.drops <- b.ended:
		default: // a hint: skipped while the dropper is behind
			s.dropsPending.Done()
		}
	}
	return nil
}

// repairIndex brings the index up to the log after a commit whose frame
// was durable could not update it (its bbolt transaction failed, on a full
// disk say): it applies the frames the index lacks from the log, as Open
// does after a crash, and then finishes that commit. Until it succeeds,
// commits fail with the first error, and reads are served from the frozen
// overlay. The caller holds commitMu.
func (s *Store) repairIndex() error {
	s.mu.RLock()
	broken := s.broken
	s.mu.RUnlock()
	if broken == nil {
		return nil
	}
	if err := s.catchUpIndexOrReserve(); err != nil {
		return fmt.Errorf("%w (bringing the index up to the log: %v)", broken, err)
	}
	s.mu.Lock()
	tid, intentSeq, retained := s.lastTID, s.unindexedIntent, s.unindexed
	s.broken, s.unindexed = nil, nil
	s.mu.Unlock()
	s.indexed(tid, intentSeq, retained)
	s.log.Info("history: index brought up to the log; commits go on")
	return nil
}

// indexed ends a commit once the index has its transaction: the frozen
// overlay goes, and so do the intent files it covered.
func (s *Store) indexed(tid TID, intentSeq uint64, retained []*intent.File) {
	s.mu.Lock()
	s.frozen, s.lastTID, s.lastIntent = nil, tid, intentSeq
	s.mu.Unlock()
	s.commits.Add(1)
	s.ilog.Retire(retained...)
}

// building is one commit's work in progress.
type building struct {
	t      *Txn
	blocks map[Hash]struct{} // blocks this commit stored
	stored []storedBlock     // the same, in the order stored
	// publish hands what the commit made so far to the indexer.
	publish   func(ops []Op, stored []storedBlock)
	published int
	// ended are the blocks of the data records it ends: those no other
	// record refers to are read by history alone from now on (dropper).
	ended []Hash
}

// build makes the records of a transaction from frozen changes: for every
// key that changed, end the live record and create the new one.
//
// publish is given the operations made so far, and the blocks stored, every
// few hundred operations.
func (s *Store) build(fr *overlay, tid TID, objHigh ObjID, intentSeq uint64, publish func([]Op, []storedBlock)) (*building, error) {
	b := &building{t: &Txn{TID: tid, IntentSeq: intentSeq, ObjHigh: objHigh}, blocks: map[Hash]struct{}{}, publish: publish}
	ids := make([]ObjID, 0, len(fr.objs))
	for id := range fr.objs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	hashChunks(fr)
	err := s.index.View(func(btx *bolt.Tx) error {
		for _, id := range ids {
			if err := s.buildObj(btx, b, id, fr.objs[id]); err != nil {
				return err
			}
			b.flush(false)
		}
		b.flush(true)
		return nil
	})
	return b, err
}

// flush publishes the operations made since the last time, if there are
// enough of them to be worth a hand-over (or all is set).
func (b *building) flush(all bool) {
	if n := len(b.t.Ops); n > b.published && (all || n-b.published >= 256) {
		b.publish(b.t.Ops, b.stored)
		b.published = n
	}
}

// An indexer applies a commit's operations to the index while the commit
// builds the rest: a bbolt write transaction beside the build's read
// transaction, which sees the index as it was before the commit, as the
// build must. The write transaction commits only once the transaction is
// in the log, so the index is never ahead of the log; if the commit fails
// before that, it rolls back.
type indexer struct {
	feed opFeed
	end  chan indexEnd // closed: abandon
	done chan error
}

type indexEnd struct {
	t         *Txn
	loc, next txlog.Loc
}

var errCommitAbandoned = errors.New("history: commit abandoned before its log append")

func (s *Store) startIndexer(tid TID) *indexer {
	ix := &indexer{end: make(chan indexEnd, 1), done: make(chan error, 1)}
	ix.feed.cond = sync.NewCond(&ix.feed.mu)
	go func() {
		ix.done <- s.index.Update(func(tx *bolt.Tx) error {
			a := index.NewTxnApply(tx, tid, false)
			var err error
			for from, fromStored := 0, 0; ; {
				ops, stored, ok := ix.feed.next(from, fromStored)
				if !ok {
					break
				}
				for _, sb := range stored {
					a.Stored(sb.hash, sb.loc)
				}
				if err == nil {
					err = a.Ops(ops)
				}
				from, fromStored = from+len(ops), fromStored+len(stored)
			}
			e, ok := <-ix.end
			switch {
			case !ok:
				return errCommitAbandoned
			case err != nil:
				return err
			}
			return a.Finish(e.t, e.loc, e.next, nil)
		})
	}()
	return ix
}

// finish has the indexer record the transaction, now in the log, and
// commit the index.
func (ix *indexer) finish(t *Txn, loc, next txlog.Loc) error {
	ix.end <- indexEnd{t: t, loc: loc, next: next}
	return <-ix.done
}

// abandon rolls the indexer's transaction back.
func (ix *indexer) abandon() {
	close(ix.end)
	<-ix.done
}

// An opFeed hands a commit's operations, and the blocks it stored, from
// the build to the indexer as they are made. The build never waits for the
// indexer: an indexer that waits for bbolt's write lock must not hold up a
// build.
type opFeed struct {
	mu     sync.Mutex
	cond   *sync.Cond
	ops    []Op          // the build's operations so far (only ever appended to)
	stored []storedBlock // the blocks it stored so far (likewise)
	closed bool
}

// A storedBlock is one a commit stored, which the index had no entry for.
type storedBlock struct {
	hash Hash
	loc  pack.Loc
}

func (f *opFeed) publish(ops []Op, stored []storedBlock) {
	f.mu.Lock()
	f.ops, f.stored = ops, stored
	f.mu.Unlock()
	f.cond.Signal()
}

func (f *opFeed) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cond.Signal()
}

// next waits for operations after the first from, and returns them with
// the blocks stored after the first fromStored (all those the operations
// refer to); false once there are none and will be none.
func (f *opFeed) next(from, fromStored int) ([]Op, []storedBlock, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.ops) <= from && !f.closed {
		f.cond.Wait()
	}
	if len(f.ops) <= from {
		return nil, nil, false
	}
	return f.ops[from:], f.stored[fromStored:], true
}

func (s *Store) buildObj(btx *bolt.Tx, b *building, id ObjID, st *objState) error {
	t := b.t
	// end ends the record r, created before this transaction.
	end := func(r Record) {
		t.Ops = append(t.Ops, Op{Kind: OpEnd, Obj: id, Key: r.Key, Create: r.Create})
		b.supersede(r)
	}
	live := func(key string) (Record, bool, error) {
		if st.created {
			return Record{}, false, nil
		}
		return index.Latest(btx, id, key, Live)
	}
	// replace ends the live record of key, if any, and creates one with
	// payload unless payload is nil. An unchanged payload is left alone.
	replace := func(key string, payload []byte) error {
		r, ok, err := live(key)
		if err != nil {
			return err
		}
		if ok {
			if payload != nil && bytes.Equal(r.Payload, payload) {
				return nil
			}
			end(r)
		}
		if payload != nil {
			t.Ops = append(t.Ops, Op{Obj: id, Key: key, Create: t.TID, Payload: payload})
		}
		return nil
	}
	if st.ended {
		if st.created {
			return nil // born and gone within one transaction: never visible
		}
		err := index.Visible(btx, id, "", Live, func(r Record) error {
			end(r)
			return nil
		})
		if err != nil {
			return err
		}
		t.Notes = append(t.Notes, Note{Obj: id, Change: st.change})
		return nil
	}
	if st.inode != nil {
		if err := replace(record.KeyInode, st.inode.encode()); err != nil {
			return err
		}
	}
	keys := make([]string, 0, len(st.kv))
	for k := range st.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := st.kv[k]
		p := c.payload
		if c.del {
			p = nil
		} else if p == nil {
			p = []byte{}
		}
		if err := replace(k, p); err != nil {
			return err
		}
	}
	if st.truncated && !st.created {
		err := index.Visible(btx, id, record.PrefixData, Live, func(r Record) error {
			idx, ok := record.ChunkOfKey(r.Key)
			if ok && idx >= st.dropFrom && st.chunks[idx] == nil {
				end(r)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	idxs := make([]uint64, 0, len(st.chunks))
	for i := range st.chunks {
		idxs = append(idxs, i)
	}
	sort.Slice(idxs, func(i, j int) bool { return idxs[i] < idxs[j] })
	for _, idx := range idxs {
		c := st.chunks[idx]
		var payload []byte
		switch {
		case c.ref != nil:
			payload = record.EncodeChunk(*c.ref)
		case c.hole:
			// A hole: nothing stored (so too for chunks of zeros, below).
		case !c.stored():
			if !allZero(c.data) {
				payload = record.EncodeChunk(record.ChunkRef{Inline: c.data})
			}
		default:
			sum := c.summed()
			if sum.zero {
				break
			}
			ref, err := s.storeBlock(btx, b, sum, c.data)
			if err != nil {
				return err
			}
			payload = record.EncodeChunk(ref)
		}
		if err := replace(record.ChunkKey(idx), payload); err != nil {
			return err
		}
		b.flush(false)
	}
	var size uint64
	if st.inode != nil {
		size = st.inode.Size
	} else if r, ok, err := live(record.KeyInode); err != nil {
		return err
	} else if ok {
		ino, err := decodeInode(r.Payload)
		if err != nil {
			return err
		}
		size = ino.Size
	}
	change := st.change
	if change&(ChangeCreated|ChangeWritten|ChangeRenamed|ChangeDeleted|ChangeXattr) != 0 {
		change &^= ChangeAttr
	}
	if change != 0 {
		t.Notes = append(t.Notes, Note{Obj: id, Change: change, Size: size})
	}
	return nil
}

// supersede notes the block of r, a data record being ended.
func (b *building) supersede(r Record) {
	if !strings.HasPrefix(r.Key, record.PrefixData) {
		return
	}
	if c, err := record.DecodeChunk(r.Payload); err == nil && c.Block {
		b.ended = append(b.ended, c.Hash)
	}
}

// dropper drops the page cache of the blocks that commits superseded:
// those whose data record a commit ended and that no other record refers
// to (a block's count is of every record, ended or not, until the cleaner
// drops one), a new one of the same commit included. Only history reads
// them now, and the pages freed are the ones the next blocks go into
// (pack.Store.DropCached). It runs beside the commits, not in them: the
// lookups would double the commit that deletes a large file.
func (s *Store) dropper() {
	defer close(s.dropsDone)
	for ended := range s.drops {
		// In key order, the lookups walk the index's pages in order.
		sort.Slice(ended, func(i, j int) bool { return bytes.Compare(ended[i][:], ended[j][:]) < 0 })
		var locs []pack.Loc
		err := s.index.View(func(btx *bolt.Tx) error {
			for _, h := range ended {
				e, ok, err := index.GetBlk(btx, h)
				if err != nil {
					return err
				}
				if ok && e.Refs == 1 {
					locs = append(locs, e.Loc)
				}
			}
			return nil
		})
		if err == nil {
			s.packs.DropCached(locs)
		}
		s.dropsPending.Done()
	}
}

// chunkSum is what a commit learns of a chunk before storing it.
type chunkSum struct {
	hash Hash
	crc  uint32
	zero bool
}

// hashChunks hashes, on every core, the chunks to be stored that their
// writers did not hash yet (those of a replayed intent log, or of a writer
// still hashing): SHA-256 is most of a large commit's CPU.
func hashChunks(fr *overlay) {
	var todo []*chunkBuf
	for _, st := range fr.objs {
		for _, c := range st.chunks {
			if c.stored() && c.sum.Load() == nil {
				todo = append(todo, c)
			}
		}
	}
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(todo); i = int(next.Add(1) - 1) {
				todo[i].summed()
			}
		}()
	}
	wg.Wait()
}

// storeBlock puts data in a block, stored once however many records
// refer to it.
func (s *Store) storeBlock(btx *bolt.Tx, b *building, sum chunkSum, data []byte) (record.ChunkRef, error) {
	h := sum.hash
	ref := record.ChunkRef{Block: true, Hash: h, Length: uint32(len(data))}
	if _, ok := b.blocks[h]; ok {
		return ref, nil
	}
	if _, ok, err := index.GetBlk(btx, h); err != nil || ok {
		return ref, err
	}
	loc, err := s.packs.Put(h, sum.crc, data)
	if err != nil {
		return record.ChunkRef{}, err
	}
	b.blocks[h] = struct{}{}
	b.stored = append(b.stored, storedBlock{h, loc})
	return ref, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
