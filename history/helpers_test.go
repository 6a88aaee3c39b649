package history

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/intent"
	"github.com/asof/asof/history/internal/record"
	bolt "go.etcd.io/bbolt"
)

func epoch() *fakeClock { return &fakeClock{t: time.Date(2007, 8, 6, 13, 0, 0, 0, time.UTC)} }

// randData is n bytes of seeded pseudo-random data: every 64 KiB chunk of
// it differs from every other, so nothing dedups by accident.
func randData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	p := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		p[i] = byte(r.Uint32())
	}
	return p
}

func packBytes(t *testing.T, s *Store) int64 {
	t.Helper()
	n, err := s.packs.StoredBytes()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// txns returns every committed transaction after since.
func txns(t *testing.T, s *Store, since TID) []*Txn {
	t.Helper()
	var out []*Txn
	if err := s.Changes(since, func(x *Txn) error { out = append(out, x); return nil }); err != nil {
		t.Fatalf("changes since %s: %v", since, err)
	}
	return out
}

// txnOf returns the committed transaction tid.
func txnOf(t *testing.T, s *Store, tid TID) *Txn {
	t.Helper()
	for _, x := range txns(t, s, tid-1) {
		if x.TID == tid {
			return x
		}
	}
	t.Fatalf("transaction %s not in the change stream", tid)
	return nil
}

// dataCreates lists the data records a transaction creates for obj.
func dataCreates(x *Txn, obj ObjID) []Op {
	var out []Op
	for _, op := range x.Ops {
		if op.Kind == OpCreate && op.Obj == obj && strings.HasPrefix(op.Key, record.PrefixData) {
			out = append(out, op)
		}
	}
	return out
}

func readRange(t *testing.T, s *Store, id ObjID, off int64, n int, at TID) []byte {
	t.Helper()
	p := make([]byte, n)
	k, err := s.ReadAt(id, p, off, at)
	if err != nil {
		t.Fatalf("read %d bytes at %d of %d as of %s: %v", n, off, id, at, err)
	}
	return p[:k]
}

func mustUpdate(t *testing.T, s *Store, fn func(tx *Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// intentSynced maps each intent file given (and the current one) to the
// length that is durable on disk.
func intentSynced(s *Store, files ...*intent.File) map[string]int64 {
	m := map[string]int64{}
	for _, f := range append(files, s.ilog.Current()) {
		if st := s.ilog.State(f); !st.Retired {
			m[filepath.Base(f.Name())] = st.Synced
		}
	}
	return m
}

// crashImage copies a store's directory as a power cut at this moment could
// leave it: every file as written so far, except that the intent-log files
// named in synced lose whatever was never fsynced. The caller makes sure no
// commit is half-way (or that the half-way state is the one wanted).
func crashImage(t *testing.T, src string, synced map[string]int64) string {
	t.Helper()
	dst := t.TempDir()
	copyTree(t, src, dst, synced)
	return dst
}

// copyTree copies a store's directory to dst, streaming each file; an
// intent-log file named in synced keeps only its first synced[name] bytes.
// Sockets and the like are skipped.
func copyTree(tb testing.TB, src, dst string, synced map[string]int64) {
	tb.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if !fi.Mode().IsRegular() {
			return nil // the control socket and the like
		}
		n := fi.Size()
		if filepath.Base(filepath.Dir(p)) == "intent" {
			if k, ok := synced[fi.Name()]; ok && k < n {
				n = k
			}
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, n); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func listNames(t *testing.T, s *Store, dir ObjID, after string, at TID, limit int) []string {
	t.Helper()
	var out []string
	err := s.ReadDir(dir, after, at, func(name string, _ ObjID, _ Kind) bool {
		out = append(out, name)
		return limit <= 0 || len(out) < limit
	})
	if err != nil {
		t.Fatalf("readdir %d after %q at %s: %v", dir, after, at, err)
	}
	return out
}

// ---- data: dedup, inline, holes, records per write, partial overwrites ----

// compareIndexes lists the keys of bucket name whose values differ between
// two indexes, as verify does.
func compareIndexes(a, b *bolt.DB, name []byte) (diffs []string, err error) {
	err = a.View(func(tx *bolt.Tx) error {
		diffs, err = compareBucket(tx, b, name)
		return err
	})
	return diffs, err
}
