package history

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"

	"github.com/asof/asof/history/internal/fileio"
	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// Space comes back after the cleaner dropped records in two ways: packs
// whose blocks are mostly unreferenced are rewritten (their live blocks
// copied to the current pack) or removed, and log segments that hold
// dropped records are rewritten without them.

// packRewriteBatch bounds how many block moves one index transaction makes.
const packRewriteBatch = 256

// packMinReclaim is the dead space worth sealing the current pack for.
const packMinReclaim = 1 << 20

// deadEnough: a pack is rewritten once a third of it is dead, so the space
// packs take stays within 1.5 times what is referenced.
func deadEnough(live, size int64) bool { return live*3 < size*2 }

// liveBytes sums, per pack, the bytes of the blocks the index references.
func (s *Store) liveBytes() (map[uint32]int64, error) {
	live := map[uint32]int64{}
	err := s.index.View(func(tx *bolt.Tx) error {
		return tx.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
			e, err := index.DecodeBlk(v)
			if err != nil {
				return err
			}
			live[e.Loc.Pack] += int64(e.Loc.Length) + pack.HdrLen
			return nil
		})
	})
	return live, err
}

// compactPacks removes packs no block in the index lives in and rewrites
// packs that are a third dead or more. A crash at any point leaves either
// the old copy referenced or both: the extra copy is unreferenced space a
// later pass reclaims.
func (s *Store) compactPacks(rep *PruneReport, progress Progress) error {
	s.moveMu.Lock() // no pack moves while packs are rewritten
	defer s.moveMu.Unlock()
	// The pack being appended to, if it is mostly dead and big enough to
	// matter, is sealed first so it can be rewritten too.
	live, err := s.liveBytes()
	if err != nil {
		return err
	}
	open := s.packs.SealedBelow()
	if size := fileSize(s.packs.Name(open)); size-live[open] >= packMinReclaim && deadEnough(live[open], size) {
		if err := s.packs.Seal(open); err != nil {
			return err
		}
	}
	// Packs a commit in flight is writing to hold blocks the index does
	// not know yet: never touch them.
	cur := min(s.packs.SealedBelow(), s.packFloor.Load())
	if live, err = s.liveBytes(); err != nil {
		return err
	}
	seqs, err := s.packs.List()
	if err != nil {
		return err
	}
	type onVol struct {
		v   *vol
		seq uint32
	}
	var rewrite []onVol
	for _, seq := range seqs {
		if seq >= cur {
			continue
		}
		size := fileSize(s.packs.Name(seq))
		switch {
		case live[seq] == 0:
			if err := s.packs.Remove(seq); err != nil {
				return err
			}
			rep.Packs++
		case deadEnough(live[seq], size):
			rewrite = append(rewrite, onVol{s.vols[0], seq})
		}
	}
	// Packs on the other volumes: every one is sealed.
	s.vmu.Lock()
	var others []*vol
	for _, id := range s.volIDsLocked() {
		if v := s.vols[id]; id != 0 && v.v != nil {
			others = append(others, v)
		}
	}
	s.vmu.Unlock()
	ctx := context.Background()
	for _, v := range others {
		l, err := v.v.List(ctx)
		if err != nil {
			return err
		}
		for _, p := range l {
			switch {
			case live[p.Seq] == 0:
				s.packs.Forget(p.Seq)
				if err := v.v.Delete(ctx, p.Seq); err != nil {
					return err
				}
				rep.Packs++
			case deadEnough(live[p.Seq], p.Size):
				rewrite = append(rewrite, onVol{v, p.Seq})
			}
		}
	}
	for i, r := range rewrite {
		if s.stopping() {
			return ErrClosed
		}
		progress("packs", int64(i), int64(len(rewrite)))
		if err := s.rewritePack(r.v, r.seq); err != nil {
			return err
		}
		rep.Packs++
	}
	progress("packs", int64(len(rewrite)), int64(len(rewrite)))
	return nil
}

// rewritePack copies the live blocks of pack seq, on volume v, to the
// current pack, points the index at the copies, and removes the pack.
// moveMu is held.
func (s *Store) rewritePack(on *vol, seq uint32) error {
	type move struct {
		h        Hash
		from, to pack.Loc
	}
	var moves []move
	if err := s.index.View(func(tx *bolt.Tx) error {
		return tx.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
			e, err := index.DecodeBlk(v)
			if err != nil {
				return err
			}
			if e.Loc.Pack == seq && e.Loc.Vol == on.id {
				moves = append(moves, move{h: Hash(k), from: e.Loc})
			}
			return nil
		})
	}); err != nil {
		return err
	}
	for start := 0; start < len(moves); start += packRewriteBatch {
		batch := moves[start:min(start+packRewriteBatch, len(moves))]
		mark := s.packs.Mark()
		for i := range batch {
			data, err := s.packs.Get(batch[i].from, batch[i].h, false)
			if err != nil {
				return fmt.Errorf("history: rewrite pack %d: %w", seq, err)
			}
			if batch[i].to, err = s.packs.Put(batch[i].h, crc32.Checksum(data, record.Castagnoli), data); err != nil {
				return err
			}
		}
		if err := s.packs.Sync(); err != nil {
			return err
		}
		if err := s.packs.LostSince(mark); err != nil {
			return err // a commit's failed write took the copies with it
		}
		// Under commitMu: a commit between its dedup check and its
		// index update must find the block where the index says.
		s.commitMu.Lock()
		err := s.index.Update(func(tx *bolt.Tx) error {
			blk := tx.Bucket(index.BucketBlk)
			for _, m := range batch {
				e, ok, err := index.GetBlk(tx, m.h)
				if err != nil {
					return err
				}
				if !ok || e.Loc != m.from {
					continue // freed or moved meanwhile: the copy is garbage
				}
				e.Loc = m.to
				if err := blk.Put(m.h[:], e.Encode()); err != nil {
					return err
				}
			}
			return nil
		})
		s.commitMu.Unlock()
		if err != nil {
			return err
		}
	}
	if on.id == 0 {
		return s.packs.Remove(seq)
	}
	s.packs.Forget(seq)
	return on.v.Delete(context.Background(), seq)
}

// compactLog rewrites every log segment, but the one being appended to,
// that holds records or ops the cleaner made useless.
func (s *Store) compactLog(rep *PruneReport, progress Progress) error {
	s.commitMu.Lock()
	cur := s.tlog.End().Seg
	s.commitMu.Unlock()
	var segs []uint32
	if err := s.index.View(func(tx *bolt.Tx) error {
		return tx.Bucket(index.BucketPseg).ForEach(func(k, _ []byte) error {
			if seg := binary.BigEndian.Uint32(k); seg < cur {
				segs = append(segs, seg)
			}
			return nil
		})
	}); err != nil {
		return err
	}
	// Oldest first: a drop or version op in one segment undoes records or
	// notes in the same or an earlier one, which must go first.
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	for i, seg := range segs {
		if s.stopping() {
			return ErrClosed
		}
		progress("log", int64(i), int64(len(segs)))
		if err := s.rewriteSegment(seg); err != nil {
			return err
		}
		rep.Segments++
	}
	progress("log", int64(len(segs)), int64(len(segs)))
	return nil
}

var metaCompact = []byte("compact")

// rewriteSegment writes segment seg again with only what the index still
// holds: create and end ops of records that remain, notes of versions that
// remain (with their merged change), the collapse ops in force. Frames left
// empty go, except kept moments (the planner must go on seeing them) and
// each segment's last frame (recovery reads the newest frame's object
// high-water and intent position).
//
// The new segment is written beside the old one and fsynced; then one index
// transaction points the transaction entries at it and records the swap in
// meta; then it is renamed over the old one; then the record is cleared.
// Open finishes or undoes a swap a crash interrupted (finishCompaction).
func (s *Store) rewriteSegment(seg uint32) error {
	path := txlog.SegName(s.logDir(), seg)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("history: compact log: %w", err)
	}
	defer f.Close()
	tmp := path + ".new"
	w, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("history: compact log: %w", err)
	}
	fail := func(err error) error {
		w.Close()
		os.Remove(tmp)
		return err
	}
	type placed struct {
		tid   TID
		off   int64
		flags byte
	}
	var old []TID   // every frame of the old segment
	var at []placed // where the kept ones went
	var woff int64
	cs := s.collapsed()
	// One frame at a time, looking one ahead (a segment's last frame is
	// always kept): memory stays one frame, whatever the segment's size.
	err = s.index.View(func(tx *bolt.Tx) error {
		rec, ver, gone := tx.Bucket(index.BucketRec), tx.Bucket(index.BucketVer), tx.Bucket(index.BucketGone)
		var roff int64
		next := func() (*Txn, error) {
			t, n, err := txlog.ReadFrame(f, roff)
			if err == io.EOF {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("%w: log segment %s at offset %d", ErrCorrupt, path, roff)
			}
			roff = n
			return t, nil
		}
		t, err := next()
		for t != nil && err == nil {
			var after *Txn
			if after, err = next(); err != nil {
				break
			}
			old = append(old, t.TID)
			nt := &Txn{TID: t.TID, IntentSeq: t.IntentSeq, ObjHigh: t.ObjHigh}
			for _, op := range t.Ops {
				keep := false
				switch op.Kind {
				case OpCreate:
					keep = rec.Get(index.RecKey(op.Obj, op.Key, t.TID)) != nil
				case OpEnd, OpDrop:
					keep = rec.Get(index.RecKey(op.Obj, op.Key, op.Create)) != nil
				case OpCollapse:
					v := gone.Get(op.Payload)
					keep = v != nil && TID(binary.BigEndian.Uint64(v)) == op.Create
				}
				if keep {
					nt.Ops = append(nt.Ops, op)
				}
			}
			for _, n := range t.Notes {
				k := binary.BigEndian.AppendUint64(nil, uint64(n.Obj))
				k = binary.BigEndian.AppendUint64(k, uint64(t.TID))
				if v := ver.Get(k); len(v) == 9 {
					nt.Notes = append(nt.Notes, Note{Obj: n.Obj, Change: Change(v[0]), Size: binary.BigEndian.Uint64(v[1:])})
				}
			}
			moment := cs.snap(t.TID) == t.TID && !t.PruneOnly()
			if len(nt.Ops) > 0 || len(nt.Notes) > 0 || moment || after == nil {
				if t.PruneOnly() && len(nt.Ops) == 0 {
					nt.Ops = []Op{{Kind: OpNop}}
				}
				b := nt.Encode()
				if _, err := w.WriteAt(b, woff); err != nil {
					return fmt.Errorf("history: compact log: %w", err)
				}
				var flags byte
				if nt.PruneOnly() {
					flags = index.TxnPruneOnly
				}
				at = append(at, placed{nt.TID, woff, flags})
				woff += int64(len(b))
			}
			t = after
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	if err := w.Sync(); err != nil {
		return fail(fmt.Errorf("history: compact log: %w", err))
	}
	w.Close()

	s.logMu.Lock()
	defer s.logMu.Unlock()
	err = s.index.Update(func(tx *bolt.Tx) error {
		txn := tx.Bucket(index.BucketTxn)
		for _, tid := range old {
			if err := txn.Delete(binary.BigEndian.AppendUint64(nil, uint64(tid))); err != nil {
				return err
			}
		}
		for _, p := range at {
			v := binary.BigEndian.AppendUint32(nil, seg)
			v = binary.BigEndian.AppendUint64(v, uint64(p.off))
			if p.flags != 0 {
				v = append(v, p.flags)
			}
			if err := txn.Put(binary.BigEndian.AppendUint64(nil, uint64(p.tid)), v); err != nil {
				return err
			}
		}
		if err := tx.Bucket(index.BucketPseg).Delete(binary.BigEndian.AppendUint32(nil, seg)); err != nil {
			return err
		}
		return tx.Bucket(index.BucketMeta).Put(metaCompact, binary.BigEndian.AppendUint32(nil, seg))
	})
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return s.finishCompaction()
}

// finishCompaction completes a segment swap the index has recorded, or
// removes a rewritten segment the index never adopted. Open calls it before
// reading the log.
func (s *Store) finishCompaction() error {
	var seg uint32
	var pending bool
	if err := s.index.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(index.BucketMeta).Get(metaCompact); len(v) == 4 {
			seg, pending = binary.BigEndian.Uint32(v), true
		}
		return nil
	}); err != nil {
		return err
	}
	if pending {
		path := txlog.SegName(s.logDir(), seg)
		if err := os.Rename(path+".new", path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("history: compact log: %w", err)
		}
		if err := fileio.SyncDir(s.logDir()); err != nil {
			return err
		}
		if err := s.index.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(index.BucketMeta).Delete(metaCompact)
		}); err != nil {
			return err
		}
	}
	// Rewrites the index never adopted.
	ents, err := os.ReadDir(s.logDir())
	if err != nil {
		return err
	}
	for _, e := range ents {
		if n := e.Name(); len(n) > 4 && n[len(n)-4:] == ".new" {
			os.Remove(s.logDir() + "/" + n)
		}
	}
	return nil
}
