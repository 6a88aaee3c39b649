package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/txlog"
	"github.com/asof/asof/history/internal/volume"
	bolt "go.etcd.io/bbolt"
)

// Report is what Verify found.
type Report struct {
	Frames   int      // transactions read from the log
	Records  int      // index records checked
	Blocks   int      // blocks read and hashed
	Problems []string // every damage found; empty means the store is sound
}

// OK reports whether nothing was damaged.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Progress is told how far a long operation has come: done of total units.
type Progress func(stage string, done, total int64)

// Verify checks every log frame, every block and every index entry against
// its checksum, and the index against a rebuild from the log, reporting all
// damage it finds rather than stopping at the first. It checks the store as
// committed when it starts: the log up to its end then, each pack up to its
// size then, and the index as of then (one read transaction). Commits go on
// beside it, since they only append; the cleaner, which rewrites, waits.
//
// Packs on other volumes are checked too: those of directory volumes
// block by block, as the data directory's; those of S3 volumes cheaply
// (each exists, as large as the index says), or read whole and every
// block checked with VerifyDeep.
func (s *Store) Verify(progress Progress) (*Report, error) { return s.verify(false, progress) }

// VerifyDeep is Verify reading every pack of every volume.
func (s *Store) VerifyDeep(progress Progress) (*Report, error) { return s.verify(true, progress) }

func (s *Store) verify(deep bool, progress Progress) (*Report, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	if _, err := s.Commit(); err != nil {
		return nil, err
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	s.moveMu.Lock() // packs stay where the index says
	defer s.moveMu.Unlock()
	rep := &Report{}
	ext, err := s.verifyExtent(rep)
	if err != nil {
		return nil, err
	}
	defer ext.index.Rollback()
	defer s.logMu.RUnlock()

	if err := checkFiles(s.logDir(), s.packs, ext, rep, progress, s.stopping); err != nil {
		return nil, err
	}
	if err := s.checkVolumes(ext, deep, rep, progress); err != nil {
		return nil, err
	}
	progress("index", 0, 1)
	if err := s.verifyIndex(rep, ext, deep); err != nil {
		return nil, err
	}
	progress("index", 1, 1)
	return rep, nil
}

// checkFiles checks every frame of the extent's log segments and every
// block of its packs against their checksums, each file up to where the
// extent ends. It gives up with ErrClosed once stop says so.
func checkFiles(logDir string, packs *pack.Store, ext *extent, rep *Report, progress Progress, stop func() bool) error {
	progress("log", 0, int64(len(ext.segs)))
	for i, seq := range ext.segs {
		limit := int64(math.MaxInt64)
		if seq == ext.log.Seg {
			limit = ext.log.Off
		}
		if err := verifySegment(txlog.SegName(logDir, seq), limit, rep); err != nil {
			return err
		}
		progress("log", int64(i+1), int64(len(ext.segs)))
		if stop() {
			return ErrClosed
		}
	}
	var total, done int64
	for _, n := range ext.packs {
		total += n
	}
	for _, seq := range slices.Sorted(maps.Keys(ext.packs)) {
		err := packs.ScanPack(seq, ext.packs[seq], true, func(h Hash, loc pack.Loc, err error) error {
			rep.Blocks++
			done += int64(loc.Length) + pack.HdrLen
			progress("blocks", done, total)
			if err != nil {
				rep.problem("%v", err)
			}
			if stop() {
				return ErrClosed
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// extent is what a verify checks: the store between two commits.
type extent struct {
	log   txlog.Loc        // the log's end
	segs  []uint32         // its segments up to the end
	packs map[uint32]int64 // each pack's size
	last  TID              // the newest transaction
	index *bolt.Tx         // the index, read-only
}

// verifyExtent fixes the extent between two commits and checks the index's
// structure there: bbolt's check reads the free page list, which only a
// writer changes, without a lock. It holds logMu (read) for the caller,
// who releases it and the index transaction.
func (s *Store) verifyExtent(rep *Report) (*extent, error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.logMu.RLock()
	e := &extent{log: s.tlog.End(), last: s.LastTID()}
	segs, err := txlog.ListSegments(s.logDir())
	if err == nil {
		e.segs = slices.DeleteFunc(segs, func(seq uint32) bool { return seq > e.log.Seg })
		e.packs, err = s.packs.Sizes()
	}
	if err == nil {
		e.index, err = s.index.Begin(false)
	}
	if err != nil {
		s.logMu.RUnlock()
		return nil, err
	}
	for err := range e.index.Check() {
		rep.problem("index structure: %v", err)
	}
	return e, nil
}

// verifySegment checks the frames of one log segment up to limit.
func verifySegment(path string, limit int64, rep *Report) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := min(st.Size(), limit)
	var off int64
	for off < size {
		t, next, err := txlog.ReadFrame(f, off)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			rep.problem("log %s: damaged frame at offset %d", filepath.Base(path), off)
			// Resynchronise on the next intact frame, if any.
			if _, n, err := txlog.ReadFrameAfter(f, off, size); err == nil {
				off = n
				continue
			}
			return nil
		}
		_ = t
		rep.Frames++
		off = next
	}
	return nil
}

// verifyIndex checks every index entry's checksum, bbolt's own structure,
// and that the index says exactly what a rebuild from the log says.
func (s *Store) verifyIndex(rep *Report, ext *extent, deep bool) error {
	tx := ext.index
	err := tx.Bucket(index.BucketRec).ForEach(func(k, v []byte) error {
		rep.Records++
		if _, err := index.DecodeRec(k, v); err != nil {
			rep.problem("index: %v", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The rebuild is scratch, about the index's size: in the data
	// directory, or where temporary files go when that disk has no room
	// (a verify is how one checks a store after its disk filled up).
	var fresh *bolt.DB
	for _, dir := range []string{s.dir, os.TempDir()} {
		known := tx // a cheap verify takes the index's word for where S3 volumes' blocks are
		if deep {
			known = nil
		}
		fresh, err = s.rebuildScratch(dir, ext.last, known)
		if !noRoom(err) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			rep.problem("rebuild from the log: %v", err)
			return nil
		}
		if noRoom(err) {
			return fmt.Errorf("history: verify: no room to rebuild the index to compare (%s or %s): %w", s.dir, os.TempDir(), err)
		}
		return err
	}
	defer fresh.Close()
	for _, b := range [][]byte{index.BucketRec, index.BucketVer, index.BucketTxn, index.BucketBlk} {
		diffs, err := compareBucket(tx, fresh, b)
		if err != nil {
			return err
		}
		for _, d := range diffs {
			rep.problem("index bucket %s differs from the log: %s", b, d)
		}
	}
	return nil
}

// rebuildScratch rebuilds the index up to upTo in a new directory inside
// dir, removed when the index is closed.
func (s *Store) rebuildScratch(dir string, upTo TID, known *bolt.Tx) (*bolt.DB, error) {
	tmp, err := os.MkdirTemp(dir, "asof-verify-")
	if err != nil {
		return nil, err
	}
	db, err := s.rebuildInto(filepath.Join(tmp, "index.db"), upTo, known)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	// Unlinked while open: the file goes with the handle, whatever ends
	// the verify.
	if err := os.RemoveAll(tmp); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// compareBucket lists the keys whose values differ between two indexes
// (at most 20).
func compareBucket(ta *bolt.Tx, b *bolt.DB, name []byte) ([]string, error) {
	var diffs []string
	err := b.View(func(tb *bolt.Tx) error {
		ca, cb := ta.Bucket(name).Cursor(), tb.Bucket(name).Cursor()
		ka, va := ca.First()
		kb, vb := cb.First()
		for (ka != nil || kb != nil) && len(diffs) < 20 {
			switch c := compareKeys(ka, kb); {
			case c < 0:
				diffs = append(diffs, fmt.Sprintf("key %x only in the index", ka))
				ka, va = ca.Next()
			case c > 0:
				diffs = append(diffs, fmt.Sprintf("key %x missing from the index", kb))
				kb, vb = cb.Next()
			default:
				if !bytes.Equal(va, vb) && !sameBlockEntry(name, va, vb) {
					diffs = append(diffs, fmt.Sprintf("key %x has a different value", ka))
				}
				ka, va = ca.Next()
				kb, vb = cb.Next()
			}
		}
		return nil
	})
	return diffs, err
}

func compareKeys(a, b []byte) int {
	switch {
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// sameBlockEntry: a block written twice (once by a commit a crash cut
// short) may be found at either copy; only its reference count must agree.
func sameBlockEntry(bucket, a, b []byte) bool {
	if !bytes.Equal(bucket, index.BucketBlk) {
		return false
	}
	ea, err1 := index.DecodeBlk(a)
	eb, err2 := index.DecodeBlk(b)
	return err1 == nil && err2 == nil && ea.Refs == eb.Refs && ea.Loc.Length == eb.Loc.Length
}

// VerifyDir checks the store in dir with no server running (asof verify
// --offline): it opens the store and runs Verify. A store that does not
// open (a damaged log, say) still has its log segments and packs checked,
// file by file, so that the report says what is damaged and where.
func VerifyDir(dir string, opts Options, progress Progress) (*Report, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	if _, err := os.Stat(filepath.Join(dir, "log")); err != nil {
		return nil, fmt.Errorf("history: no store in %s: %w", dir, err)
	}
	s, err := Open(dir, opts)
	if errors.Is(err, ErrLocked) {
		return nil, err
	}
	if err == nil {
		rep, err := s.Verify(progress)
		return rep, errors.Join(err, s.Close())
	}
	rep := &Report{}
	rep.problem("the store does not open: %v", err)
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	logDir := filepath.Join(dir, "log")
	segs, err := txlog.ListSegments(logDir)
	if err != nil {
		return nil, err
	}
	packs, err := pack.Open(filepath.Join(dir, "volumes", "0"), 0)
	if err != nil {
		return nil, err
	}
	defer packs.Close()
	// Everything there is: nothing appends to a store no process has open.
	ext := &extent{log: txlog.Loc{Off: math.MaxInt64}, segs: segs}
	if len(segs) > 0 {
		ext.log.Seg = segs[len(segs)-1]
	}
	if ext.packs, err = packs.Sizes(); err != nil {
		return nil, err
	}
	err = checkFiles(logDir, packs, ext, rep, progress, func() bool { return false })
	return rep, err
}

// checkVolumes checks the packs the index places on volumes other than
// the data directory: every block of a directory volume's packs; for an
// S3 volume, that each pack is there and as long as its furthest block,
// or (deep) every block, read whole.
func (s *Store) checkVolumes(ext *extent, deep bool, rep *Report, progress Progress) error {
	ends := map[uint16]map[uint32]int64{} // per volume, per pack: where its last block ends
	err := ext.index.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
		e, err := index.DecodeBlk(v)
		if err != nil || e.Loc.Vol == 0 || e.Loc.Vol == volMissingID {
			return err
		}
		if ends[e.Loc.Vol] == nil {
			ends[e.Loc.Vol] = map[uint32]int64{}
		}
		ends[e.Loc.Vol][e.Loc.Pack] = max(ends[e.Loc.Vol][e.Loc.Pack], int64(e.Loc.Off)+int64(e.Loc.Length))
		return nil
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	for _, id := range slices.Sorted(maps.Keys(ends)) {
		s.vmu.Lock()
		v := s.vols[id]
		s.vmu.Unlock()
		packs := ends[id]
		if v == nil {
			rep.problem("%d packs are on volume %d, which the store does not have", len(packs), id)
			continue
		}
		if v.v == nil {
			rep.problem("volume %s is unreachable (%v): its %d packs were not checked", v.spec.Name, v.problem, len(packs))
			continue
		}
		l, err := v.v.List(ctx)
		if err != nil {
			rep.problem("volume %s: cannot list its packs: %v", v.spec.Name, err)
			continue
		}
		sizes := map[uint32]int64{}
		for _, p := range l {
			sizes[p.Seq] = p.Size
		}
		_, dir := v.v.(*volume.Dir)
		var done int64
		for _, seq := range slices.Sorted(maps.Keys(packs)) {
			size, ok := sizes[seq]
			switch {
			case !ok:
				rep.problem("volume %s: pack %d is missing", v.spec.Name, seq)
				continue
			case size < packs[seq]:
				rep.problem("volume %s: pack %d is %d bytes, but the index has a block ending at %d", v.spec.Name, seq, size, packs[seq])
				continue
			}
			if !dir && !deep {
				continue
			}
			path, cleanup, err := s.localCopyRaw(ctx, seq, v.v)
			if err != nil {
				rep.problem("volume %s: pack %d: %v", v.spec.Name, seq, err)
				continue
			}
			err = pack.ScanFile(path, id, seq, size, true, func(h Hash, loc pack.Loc, err error) error {
				rep.Blocks++
				if err != nil {
					rep.problem("volume %s: %v", v.spec.Name, err)
				}
				if s.stopping() {
					return ErrClosed
				}
				return nil
			})
			cleanup()
			if err != nil {
				return err
			}
			done += size
			progress("volume "+v.spec.Name, done, 0)
		}
	}
	return nil
}
