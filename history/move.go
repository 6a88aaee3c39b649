package history

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/volume"
	bolt "go.etcd.io/bbolt"
)

// Moving a pack from one volume to another (placing a sealed pack, a
// drain) is the cleaner's rewrite without the rewriting, in steps that a
// kill at any point leaves recoverable:
//
//  1. meta/move records (pack, from, to, copying) in the index;
//  2. the pack is copied whole to the target (Put: durable and checked);
//  3. one index transaction points every block of the pack at the target
//     and sets the record to switched;
//  4. the old copy is deleted, then the record cleared.
//
// finishMove, at open and before every pass, completes what a record
// says: while copying, the target's copy (whole or not) is deleted, and the
// pack stays where the index says; once switched, the old copy is deleted.
// A pack's volume is therefore in the index only, not in the log: a
// rebuild finds every pack by listing and reading the volumes (Locate),
// as it always found blocks by reading the packs, and a copy left on two
// volumes holds the same bytes, so either serves. Packs no block of the
// index is on (left by a crash before a record could say) are removed by
// the sweep the first pass after open makes, and every drain.

var (
	metaMove     = []byte("move")
	metaPackHigh = []byte("packhigh") // the highest pack number moved: never used again
)

type moveRec struct {
	seq      uint32
	from, to uint16
	switched bool
}

func (r moveRec) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, r.seq)
	b = binary.BigEndian.AppendUint16(b, r.from)
	b = binary.BigEndian.AppendUint16(b, r.to)
	if r.switched {
		return append(b, 1)
	}
	return append(b, 0)
}

func (s *Store) readMove() (moveRec, bool, error) {
	var r moveRec
	var ok bool
	err := s.index.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(index.BucketMeta).Get(metaMove)
		if v == nil {
			return nil
		}
		if len(v) != 9 {
			return fmt.Errorf("%w: index meta/move is %d bytes", ErrCorrupt, len(v))
		}
		r = moveRec{seq: binary.BigEndian.Uint32(v), from: binary.BigEndian.Uint16(v[4:]), to: binary.BigEndian.Uint16(v[6:]), switched: v[8] == 1}
		ok = true
		return nil
	})
	return r, ok, err
}

// moveHook, set by tests, is called after each step of a move; an error
// stops the move there, as a crash would.
var moveHook func(step string) error

func hook(step string) error {
	if moveHook != nil {
		return moveHook(step)
	}
	return nil
}

// movePack moves pack seq from one volume to another. moveMu is held.
func (s *Store) movePack(ctx context.Context, seq uint32, from, to *vol) error {
	s.vmu.Lock()
	fv, tv := from.v, to.v
	s.vmu.Unlock()
	if fv == nil {
		return fmt.Errorf("volume %s is unreachable: %w", from.spec.Name, from.problem)
	}
	if tv == nil {
		return fmt.Errorf("volume %s is unreachable: %w", to.spec.Name, to.problem)
	}
	rec := moveRec{seq: seq, from: from.id, to: to.id}
	if err := s.index.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(index.BucketMeta).Put(metaMove, rec.encode())
	}); err != nil {
		return err
	}
	if err := hook("recorded"); err != nil {
		return err
	}
	t0 := time.Now()
	src, hashes, done, err := s.localCopy(ctx, seq, fv)
	whole := hashes == nil // the pack's blocks are not known: look through the index
	if err == nil {
		err = tv.Put(ctx, seq, src)
		done()
	}
	if err != nil {
		// What landed of the copy goes; the pack stays where it was.
		return errors.Join(err, s.finishMove(ctx))
	}
	if err := hook("copied"); err != nil {
		return err
	}
	rec.switched = true
	t1 := time.Now()
	// No commitMu here: commits go on while the index switches. Records
	// name blocks by hash, never by place; a commit's dedup check needs
	// only that a block's entry exists, which a move never changes; every
	// other change to an entry (a commit's references and new blocks, the
	// cleaner's releases) is a read-modify-write in a bbolt write
	// transaction, and bbolt runs those one at a time, so none is lost;
	// new blocks go only to volume 0's pack being filled, never to one
	// being moved (packFloor); and both copies hold the same bytes until
	// finishMove deletes the old one, after which a reader with the old
	// place in hand finds it gone and asks the index again (readChunk).
	// The block cache and the pack mappings are keyed by hash and by pack
	// number, which a move keeps.
	err = s.index.Update(func(tx *bolt.Tx) error {
		blk := tx.Bucket(index.BucketBlk)
		if whole {
			var err error
			if hashes, err = packBlocks(blk, seq, from.id); err != nil {
				return err
			}
		}
		for _, h := range hashes {
			v := blk.Get(h[:])
			if v == nil {
				continue // released since the copy
			}
			e, err := index.DecodeBlk(v)
			if err != nil {
				return err
			}
			if e.Loc.Pack != seq || e.Loc.Vol != from.id {
				continue // the index uses another copy of the block, in another pack
			}
			e.Loc.Vol = to.id
			if err := blk.Put(h[:], e.Encode()); err != nil {
				return err
			}
		}
		meta := tx.Bucket(index.BucketMeta)
		if v := meta.Get(metaPackHigh); len(v) != 4 || binary.BigEndian.Uint32(v) < seq {
			if err := meta.Put(metaPackHigh, binary.BigEndian.AppendUint32(nil, seq)); err != nil {
				return err
			}
		}
		return meta.Put(metaMove, rec.encode())
	})
	if err != nil {
		return err
	}
	s.log.Debug("history: pack moved", "pack", seq, "from", from.spec.Name, "to", to.spec.Name, "blocks", len(hashes),
		"copy", t1.Sub(t0), "switch", time.Since(t1))
	if err := hook("switched"); err != nil {
		return err
	}
	return s.finishMove(ctx)
}

// packBlocks is every block the index places in pack seq of volume vol:
// the switch of a pack whose headers cannot all be read.
func packBlocks(blk *bolt.Bucket, seq uint32, vol uint16) ([]Hash, error) {
	hashes := []Hash{}
	err := blk.ForEach(func(k, v []byte) error {
		e, err := index.DecodeBlk(v)
		if err == nil && e.Loc.Pack == seq && e.Loc.Vol == vol {
			hashes = append(hashes, Hash(k))
		}
		return err
	})
	return hashes, err
}

// localCopy is a local file holding pack seq of v — the pack itself on a
// directory volume, or a checked download of it — and the hashes of the
// blocks in it, sorted, each once: the blocks a move must switch. Every
// block the index places in the pack is among them: the index places a
// block only where a header says it is. A directory volume's pack with a
// damaged header moves as it is, as the kernel copies it, its blocks
// found in the index instead (nil hashes; verify reports the damage); a
// download that does not check fails the move.
func (s *Store) localCopy(ctx context.Context, seq uint32, v volume.Volume) (string, []Hash, func(), error) {
	path, done, err := s.localCopyRaw(ctx, seq, v)
	if err != nil {
		return "", nil, nil, err
	}
	hashes := []Hash{}
	if _, dir := v.(*volume.Dir); dir {
		// The headers only: the kernel copies the data, and every read
		// of it checks its CRC.
		err = pack.ScanHeaders(path, 0, seq, func(h Hash, _ pack.Loc) error {
			hashes = append(hashes, h)
			return nil
		})
		if errors.Is(err, ErrCorrupt) {
			s.log.Warn("history: a pack to move has a damaged block header; the index is searched for its blocks", "pack", seq, "err", err)
			return path, nil, done, nil
		}
	} else {
		// The download is the only copy there will be: every block of it
		// must check before the original goes.
		err = pack.ScanFile(path, 0, seq, 1<<62, false, func(h Hash, _ pack.Loc, berr error) error {
			hashes = append(hashes, h)
			return berr
		})
	}
	if err != nil {
		done()
		return "", nil, nil, fmt.Errorf("history: move pack %d: %w", seq, err)
	}
	// In key order, the switch's lookups walk the index's pages in order.
	slices.SortFunc(hashes, func(a, b Hash) int { return bytes.Compare(a[:], b[:]) })
	return path, slices.Compact(hashes), done, nil
}

// localCopyRaw is localCopy with no check of the download.
func (s *Store) localCopyRaw(ctx context.Context, seq uint32, v volume.Volume) (string, func(), error) {
	if d, ok := v.(*volume.Dir); ok {
		return d.Path(seq), func() {}, nil
	}
	r, err := v.Stream(ctx, seq)
	if err != nil {
		return "", nil, err
	}
	defer r.Close()
	path := filepath.Join(s.dir, "volumes", fmt.Sprintf("move-%08x.tmp", seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("history: move pack %d: %w", seq, err)
	}
	done := func() { os.Remove(path) }
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		done()
		return "", nil, fmt.Errorf("history: move pack %d: %w", seq, err)
	}
	return path, done, nil
}

// finishMove completes the move the index records, if any (see above).
// moveMu is held, or the store is opening.
func (s *Store) finishMove(ctx context.Context) error {
	rec, ok, err := s.readMove()
	if err != nil || !ok {
		return err
	}
	gone := rec.to // the copy that goes
	if rec.switched {
		gone = rec.from
	}
	s.vmu.Lock()
	v := s.vols[gone]
	var vv volume.Volume
	if v != nil {
		vv = v.v
	}
	s.vmu.Unlock()
	if v != nil {
		if vv == nil {
			return fmt.Errorf("history: a move of pack %d waits for volume %s, which is unreachable", rec.seq, v.spec.Name)
		}
		s.packs.Forget(rec.seq)
		if err := vv.Delete(ctx, rec.seq); err != nil {
			return fmt.Errorf("history: finish the move of pack %d: %w", rec.seq, err)
		}
		// A reader may have opened the old copy between the two.
		s.packs.Forget(rec.seq)
	}
	if err := hook("deleted"); err != nil {
		return err
	}
	return s.index.Update(func(tx *bolt.Tx) error { return tx.Bucket(index.BucketMeta).Delete(metaMove) })
}

// packHigh is the highest pack number a move recorded.
func (s *Store) packHigh() (uint32, error) {
	var high uint32
	err := s.index.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(index.BucketMeta).Get(metaPackHigh); len(v) == 4 {
			high = binary.BigEndian.Uint32(v)
		}
		if v := tx.Bucket(index.BucketMeta).Get(metaMove); len(v) == 9 {
			high = max(high, binary.BigEndian.Uint32(v))
		}
		return nil
	})
	return high, err
}

// floorPacks makes new pack numbers higher than any pack on any volume.
func (s *Store) floorPacks() error {
	high, err := s.packHigh()
	if err != nil {
		return err
	}
	for _, v := range s.vols {
		if v.v == nil || v.id == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		l, err := v.v.List(ctx)
		cancel()
		if err == nil && len(l) > 0 {
			high = max(high, l[len(l)-1].Seq)
		}
	}
	s.packs.Floor(high)
	return nil
}

// sweepVolume deletes the packs of v that no block of the index is on,
// but the one a recorded move is about: copies a crash left behind. On
// volume 0 only sealed packs no commit in flight writes to are looked at.
// moveMu is held.
func (s *Store) sweepVolume(ctx context.Context, v *vol, packs map[uint16]map[uint32]bool) error {
	s.mu.RLock()
	broken := s.broken
	s.mu.RUnlock()
	if broken != nil {
		return nil // the index is behind the log: it does not know every block yet
	}
	cur := min(s.packs.SealedBelow(), s.packFloor.Load())
	if packs == nil {
		var err error
		if _, packs, err = s.volumeUsage(); err != nil {
			return err
		}
	}
	rec, moving, err := s.readMove()
	if err != nil {
		return err
	}
	l, err := v.v.List(ctx)
	if err != nil {
		return err
	}
	for _, p := range l {
		if packs[v.id][p.Seq] || (moving && p.Seq == rec.seq) || (v.id == 0 && p.Seq >= cur) {
			continue
		}
		s.packs.Forget(p.Seq)
		if err := v.v.Delete(ctx, p.Seq); err != nil {
			return err
		}
		s.log.Info("history: removed a pack no block is on", "volume", v.spec.Name, "pack", p.Seq)
	}
	return nil
}

// moverInterval is how often the mover looks for sealed packs to place.
var moverInterval = 2 * time.Second

func (s *Store) kickMover() {
	select {
	case s.moverKick <- struct{}{}:
	default:
	}
}

// mover places sealed packs and goes on with drains, until Close.
func (s *Store) mover() {
	defer close(s.moverDone)
	t := time.NewTicker(moverInterval)
	defer t.Stop()
	sweep := true
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.moverKick:
		}
		if s.movePass(sweep) == nil {
			sweep = false
		}
	}
}

// movePass opens volumes that were unreachable, finishes a recorded move,
// sweeps (when asked), drains the draining volumes and places the sealed
// packs of volume 0. It skips its turn while a drain runs.
func (s *Store) movePass(sweep bool) error {
	if !s.moveMu.TryLock() {
		return errors.New("busy")
	}
	defer s.moveMu.Unlock()
	s.vmu.Lock()
	if len(s.vols) == 1 {
		// Nothing to place, and no move can have left a copy behind:
		// volume 0 alone is as it always was (the cleaner reclaims its
		// dead packs).
		s.vmu.Unlock()
		return nil
	}
	var vols []*vol
	for _, id := range s.volIDsLocked() {
		vols = append(vols, s.vols[id])
	}
	s.vmu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for _, v := range vols {
		s.vmu.Lock()
		retry := v.unchecked || v.v == nil && time.Now().After(v.retryAt)
		s.vmu.Unlock()
		if retry {
			s.reopenLocked(v)
		}
	}
	if err := s.finishMove(ctx); err != nil {
		return err
	}
	if sweep {
		_, packs, err := s.volumeUsage()
		if err != nil {
			return err
		}
		for _, v := range vols {
			if v.v != nil {
				if err := s.sweepVolume(ctx, v, packs); err != nil {
					return err
				}
			}
		}
	}
	var firstErr error
	for _, v := range vols {
		if !v.draining || v.v == nil {
			continue
		}
		if err := s.drainPacks(ctx, v, func(string, int64, int64) {}); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	seqs, err := s.packs.List()
	if err != nil {
		return err
	}
	cur := min(s.packs.SealedBelow(), s.packFloor.Load())
	for _, seq := range seqs {
		if seq >= cur || s.stopping() {
			break
		}
		to := s.placeFor(0)
		if to == nil || to.id == 0 {
			break
		}
		if err := s.movePack(ctx, seq, s.vols[0], to); err != nil {
			s.putFailed(to, seq, err)
			return err
		}
	}
	return firstErr
}

// reopenLocked is reopen for the mover, which holds moveMu.
func (s *Store) reopenLocked(v *vol) {
	s.vmu.Lock()
	spec := v.spec
	s.vmu.Unlock()
	probe := &vol{id: v.id, spec: spec, problem: v.problem, v: v.v, unchecked: v.unchecked}
	s.reopen(probe) // opens and checks outside vmu: it may wait for the network
	s.vmu.Lock()
	v.v, v.problem, v.retryAt, v.unchecked = probe.v, probe.problem, probe.retryAt, probe.unchecked
	s.vmu.Unlock()
}

// putFailedPause is how long a volume a copy to failed takes no pack.
const putFailedPause = 30 * time.Second

// putFailed keeps packs off a volume a copy to failed, for half a minute:
// they wait in the data directory and go once it answers again.
func (s *Store) putFailed(v *vol, seq uint32, err error) {
	s.vmu.Lock()
	v.failAt, v.failErr = time.Now().Add(putFailedPause), err
	s.vmu.Unlock()
	if !errors.Is(err, volume.ErrUnavailable) { // an S3 volume logs its own outages
		s.log.Error("history: cannot move a sealed pack; it waits in the data directory", "pack", seq, "volume", v.spec.Name, "err", err)
	}
}

// drainPacks moves every movable pack of v elsewhere. moveMu is held.
func (s *Store) drainPacks(ctx context.Context, v *vol, progress Progress) error {
	seqs, sizes, err := s.packsOn(v.id)
	if err != nil {
		return err
	}
	var total, done int64
	for _, n := range sizes {
		total += n
	}
	progress("drain", 0, total)
	for _, seq := range seqs {
		if s.stopping() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		to := s.placeFor(v.id)
		if to == nil {
			return s.noPlaceFor(v)
		}
		if err := s.movePack(ctx, seq, v, to); err != nil {
			s.putFailed(to, seq, err)
			return fmt.Errorf("drain %s: pack %d to %s: %w", v.spec.Name, seq, to.spec.Name, err)
		}
		done += sizes[seq]
		progress("drain", done, total)
	}
	return nil
}

// locate maps every intact block to where it is, the first copy found
// winning: the packs of volume 0, then, unless dataOnly, those of every
// other volume in order of id. The packs of remote volumes are downloaded
// and read whole, unless known (an index being verified against) says
// where their blocks are: verify's cheap check does not read the bucket.
func (s *Store) locate(known *bolt.Tx, dataOnly bool) (map[Hash]pack.Loc, error) {
	m, err := s.packs.Locate()
	if err != nil || dataOnly {
		return m, err
	}
	s.vmu.Lock()
	var vols []*vol
	for _, id := range s.volIDsLocked() {
		if id != 0 {
			vols = append(vols, s.vols[id])
		}
	}
	s.vmu.Unlock()
	add := func(h Hash, loc pack.Loc, err error) error {
		if _, seen := m[h]; err == nil && !seen {
			m[h] = loc
		}
		return nil
	}
	ctx := context.Background()
	for _, v := range vols {
		if v.v == nil {
			return nil, fmt.Errorf("history: volume %s is unreachable, so its blocks cannot be located: %w", v.spec.Name, v.problem)
		}
		if _, dir := v.v.(*volume.Dir); !dir && known != nil {
			err := known.Bucket(index.BucketBlk).ForEach(func(k, val []byte) error {
				e, err := index.DecodeBlk(val)
				if err == nil && e.Loc.Vol == v.id {
					add(Hash(k), e.Loc, nil)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
			continue
		}
		l, err := v.v.List(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range l {
			path, done, err := s.localCopyRaw(ctx, p.Seq, v.v)
			if err != nil {
				return nil, err
			}
			err = pack.ScanFile(path, v.id, p.Seq, 1<<62, false, add)
			done()
			if err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
