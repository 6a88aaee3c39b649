package history

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
// damage it finds rather than stopping at the first. It reads the store as
// committed when it starts; concurrent changes are not checked.
func (s *Store) Verify(progress Progress) (*Report, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	if _, err := s.Commit(); err != nil {
		return nil, err
	}
	// Hold commits back so the log, packs and index stay in step.
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.logMu.RLock()
	defer s.logMu.RUnlock()
	rep := &Report{}

	segs, err := listSegments(s.logDir())
	if err != nil {
		return nil, err
	}
	progress("log", 0, int64(len(segs)))
	for i, seq := range segs {
		if err := verifySegment(segName(s.logDir(), seq), rep); err != nil {
			return nil, err
		}
		progress("log", int64(i+1), int64(len(segs)))
	}
	packs, _ := s.packs.storedBytes()
	var done int64
	err = s.packs.scan(true, func(h Hash, loc blockLoc, err error) error {
		rep.Blocks++
		done += int64(loc.Length) + packHdrLen
		progress("blocks", done, packs)
		if err != nil {
			rep.problem("%v", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	progress("index", 0, 1)
	if err := s.verifyIndex(rep); err != nil {
		return nil, err
	}
	progress("index", 1, 1)
	return rep, nil
}

func verifySegment(path string, rep *Report) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	var off int64
	for {
		t, next, err := readFrame(f, off)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			rep.problem("log %s: damaged frame at offset %d", filepath.Base(path), off)
			// Resynchronise on the next intact frame, if any.
			if _, n, err := readFrameAfter(f, off, st.Size()); err == nil {
				off = n
				continue
			}
			return nil
		}
		_ = t
		rep.Frames++
		off = next
	}
}

// verifyIndex checks every index entry's checksum, bbolt's own structure,
// and that the index says exactly what a rebuild from the log says.
func (s *Store) verifyIndex(rep *Report) error {
	err := s.index.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			rep.problem("index structure: %v", err)
		}
		return tx.Bucket(bucketRec).ForEach(func(k, v []byte) error {
			rep.Records++
			if _, err := decodeRec(k, v); err != nil {
				rep.problem("index: %v", err)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.dir, "verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fresh, err := s.rebuildInto(filepath.Join(tmp, "index.db"))
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			rep.problem("rebuild from the log: %v", err)
			return nil
		}
		return err
	}
	defer fresh.Close()
	for _, b := range [][]byte{bucketRec, bucketVer, bucketTxn, bucketBlk} {
		diffs, err := compareBucket(s.index, fresh, b)
		if err != nil {
			return err
		}
		for _, d := range diffs {
			rep.problem("index bucket %s differs from the log: %s", b, d)
		}
	}
	return nil
}

// compareBucket lists the keys whose values differ between two indexes
// (at most 20).
func compareBucket(a, b *bolt.DB, name []byte) ([]string, error) {
	var diffs []string
	err := a.View(func(ta *bolt.Tx) error {
		return b.View(func(tb *bolt.Tx) error {
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
	if !bytes.Equal(bucket, bucketBlk) {
		return false
	}
	ea, err1 := decodeBlk(a)
	eb, err2 := decodeBlk(b)
	return err1 == nil && err2 == nil && ea.Refs == eb.Refs && ea.Loc.Length == eb.Loc.Length
}
