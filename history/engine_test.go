package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/intent"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// Unit tests for the rules of issue 2 that store_test.go, model_test.go and
// crash_test.go do not cover. No assertion depends on timing: transactions
// are placed with the fake clock.

// ---- helpers ----

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

func TestDedupSameDataStoredOnce(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	data := randData(1, 1<<20)
	n := int64(len(data) / ChunkSize) // distinct chunks
	perBlock := int64(ChunkSize + pack.HdrLen)

	b0 := packBytes(t, s)
	a := newFile(t, s, RootID, "a")
	write(t, s, a, data, 0)
	clk.add(time.Second)
	commit(t, s)
	b1 := packBytes(t, s)
	if got, want := b1-b0, n*perBlock; got != want {
		t.Fatalf("first copy stored %d bytes, want %d (%d blocks)", got, want, n)
	}

	// The same bytes in another file: nothing new is stored.
	b := newFile(t, s, RootID, "b")
	write(t, s, b, data, 0)
	clk.add(time.Second)
	commit(t, s)
	if b2 := packBytes(t, s); b2 != b1 {
		t.Fatalf("a copy in a second file stored %d more bytes", b2-b1)
	}
	// Twice in one file (at another chunk-aligned offset): nothing new.
	write(t, s, a, data, 1<<20)
	clk.add(time.Second)
	commit(t, s)
	if b3 := packBytes(t, s); b3 != b1 {
		t.Fatalf("a second copy in the same file stored %d more bytes", b3-b1)
	}
	// Two files written with new data inside one transaction: once.
	data2 := randData(2, 1<<20)
	c := newFile(t, s, RootID, "c")
	d := newFile(t, s, RootID, "d")
	write(t, s, c, data2, 0)
	write(t, s, d, data2, 0)
	clk.add(time.Second)
	commit(t, s)
	if got, want := packBytes(t, s)-b1, n*perBlock; got != want {
		t.Fatalf("new data written to two files in one transaction stored %d bytes, want %d", got, want)
	}

	if !bytes.Equal(readAll(t, s, a, Live), append(append([]byte(nil), data...), data...)) {
		t.Fatal("a reads back wrong")
	}
	if !bytes.Equal(readAll(t, s, b, Live), data) || !bytes.Equal(readAll(t, s, c, Live), data2) ||
		!bytes.Equal(readAll(t, s, d, Live), data2) {
		t.Fatal("a deduplicated file reads back wrong")
	}
	// Reference accounting: the first chunk of data is referenced by three
	// records (a@0, b@0, a@1MiB), added in three transactions; that of
	// data2 by two (c@0, d@0), new in one transaction.
	err := s.index.View(func(tx *bolt.Tx) error {
		for _, c := range []struct {
			name  string
			chunk []byte
			refs  uint64
		}{{"data", data[:ChunkSize], 3}, {"data2", data2[:ChunkSize], 2}} {
			e, ok, err := index.GetBlk(tx, HashOf(c.chunk))
			if err != nil || !ok {
				return fmt.Errorf("block of chunk 0 of %s not indexed: %v", c.name, err)
			}
			if e.Refs != c.refs {
				return fmt.Errorf("block of chunk 0 of %s has %d references, want %d", c.name, e.Refs, c.refs)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSmallDataInlineLargeDataInBlocks(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	cases := []struct {
		size   int
		inline bool
	}{{100, true}, {InlineMax, true}, {InlineMax + 1, false}, {ChunkSize, false}}
	for i, c := range cases {
		before := packBytes(t, s)
		id := newFile(t, s, RootID, fmt.Sprintf("f%d", i))
		data := randData(uint64(10+i), c.size)
		write(t, s, id, data, 0)
		clk.add(time.Second)
		tid := commit(t, s)
		grew := packBytes(t, s) - before
		ops := dataCreates(txnOf(t, s, tid), id)
		if len(ops) != 1 {
			t.Fatalf("%d bytes: %d data records, want 1", c.size, len(ops))
		}
		ref, err := record.DecodeChunk(ops[0].Payload)
		if err != nil {
			t.Fatal(err)
		}
		if c.inline {
			if grew != 0 || ref.Block || !bytes.Equal(ref.Inline, data) {
				t.Fatalf("%d bytes: want inline and no pack bytes; got block=%v, %d pack bytes", c.size, ref.Block, grew)
			}
		} else {
			if !ref.Block || grew != int64(c.size+pack.HdrLen) || ref.Hash != HashOf(data) {
				t.Fatalf("%d bytes: want one block of %d bytes; got block=%v, %d pack bytes", c.size, c.size+pack.HdrLen, ref.Block, grew)
			}
		}
		if !bytes.Equal(readAll(t, s, id, tid), data) {
			t.Fatalf("%d bytes: read back differs", c.size)
		}
	}
}

func TestSparseFilesStoreNothingForHoles(t *testing.T) {
	clk := epoch()
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	defer s.Close()

	// One byte at 1 GiB.
	before := packBytes(t, s)
	id := newFile(t, s, RootID, "sparse")
	write(t, s, id, []byte{0x7f}, 1<<30)
	clk.add(time.Second)
	tid := commit(t, s)
	if grew := packBytes(t, s) - before; grew != 0 {
		t.Fatalf("one byte at 1 GiB stored %d pack bytes", grew)
	}
	x := txnOf(t, s, tid)
	ops := dataCreates(x, id)
	if len(ops) != 1 || ops[0].Key != record.ChunkKey(1<<30/ChunkSize) {
		t.Fatalf("data records %+v, want one for chunk %d", ops, 1<<30/ChunkSize)
	}
	if n := len(x.Encode()); n > 1024 {
		t.Fatalf("the transaction frame is %d bytes: a hole is stored", n)
	}
	ino, err := s.Inode(id, tid)
	if err != nil || ino.Size != 1<<30+1 {
		t.Fatalf("size %d, %v; want %d", ino.Size, err, 1<<30+1)
	}
	for _, off := range []int64{0, 12345, 1 << 29, 1<<30 - ChunkSize - 10} {
		if got := readRange(t, s, id, off, ChunkSize+7, tid); !allZero(got) || len(got) != ChunkSize+7 {
			t.Fatalf("hole at %d does not read as zeros", off)
		}
	}
	got := readRange(t, s, id, 1<<30-5, 100, tid)
	if want := append(make([]byte, 5), 0x7f); !bytes.Equal(got, want) {
		t.Fatalf("end of the sparse file reads %v, want %v", got, want)
	}

	// A chunk of zeros stores nothing, and zeros over data end its record.
	z := newFile(t, s, RootID, "zeros")
	write(t, s, z, make([]byte, 2*ChunkSize), 0)
	clk.add(time.Second)
	before = packBytes(t, s)
	tz := commit(t, s)
	if len(dataCreates(txnOf(t, s, tz), z)) != 0 || packBytes(t, s) != before {
		t.Fatal("a file of zeros stored data records or blocks")
	}
	if got := readAll(t, s, z, tz); len(got) != 2*ChunkSize || !allZero(got) {
		t.Fatal("a file of zeros does not read as zeros")
	}
	data := randData(3, ChunkSize)
	write(t, s, z, data, ChunkSize)
	clk.add(time.Second)
	t1 := commit(t, s)
	write(t, s, z, make([]byte, ChunkSize), ChunkSize)
	clk.add(time.Second)
	t2 := commit(t, s)
	x2 := txnOf(t, s, t2)
	if len(dataCreates(x2, z)) != 0 {
		t.Fatal("zeros over data created a data record")
	}
	ended := 0
	for _, op := range x2.Ops {
		if op.Kind == OpEnd && op.Obj == z && op.Key == record.ChunkKey(1) && op.Create == t1 {
			ended++
		}
	}
	if ended != 1 {
		t.Fatalf("zeros over data did not end the chunk's record: %+v", x2.Ops)
	}
	if got := readRange(t, s, z, ChunkSize, ChunkSize, t1); !bytes.Equal(got, data) {
		t.Fatal("history lost the data the zeros replaced")
	}
	if got := readRange(t, s, z, ChunkSize, ChunkSize, t2); !allZero(got) {
		t.Fatal("zeros over data do not read as zeros")
	}
}

func TestLargeSequentialWriteBecomesFewRecords(t *testing.T) {
	const total, piece = 8 << 20, 4 << 10
	data := randData(4, total)
	for _, mode := range []string{"one-update", "update-per-write"} {
		t.Run(mode, func(t *testing.T) {
			clk := epoch()
			s := openTest(t, t.TempDir(), clk)
			defer s.Close()
			id := newFile(t, s, RootID, "big")
			since := commit(t, s)
			if mode == "one-update" {
				mustUpdate(t, s, func(tx *Tx) error {
					for off := 0; off < total; off += piece {
						if err := tx.WriteAt(id, data[off:off+piece], int64(off)); err != nil {
							return err
						}
					}
					return nil
				})
			} else {
				for off := 0; off < total; off += piece {
					write(t, s, id, data[off:off+piece], int64(off))
				}
			}
			clk.add(time.Second)
			tid := commit(t, s)
			xs := txns(t, s, since)
			if len(xs) != 1 || xs[0].TID != tid {
				t.Fatalf("%d transactions for one flush, want 1", len(xs))
			}
			n := len(dataCreates(xs[0], id))
			if want := total / ChunkSize; n != want {
				t.Fatalf("8 MiB in 4 KiB writes made %d data records, want %d", n, want)
			}
			if v, _ := s.Versions(id); len(v) != 2 {
				t.Fatalf("versions %v: want created + one write", v)
			}
			if !bytes.Equal(readAll(t, s, id, tid), data) {
				t.Fatal("read back differs")
			}
		})
	}
}

func TestPartialOverwriteMakesNewBlockKeepsOld(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	old := randData(5, 2*ChunkSize)
	write(t, s, id, old, 0)
	clk.add(time.Second)
	t1 := commit(t, s)
	b1 := packBytes(t, s)

	patch := []byte("a partial overwrite inside chunk 0")
	write(t, s, id, patch, 1000)
	clk.add(time.Second)
	t2 := commit(t, s)
	if grew := packBytes(t, s) - b1; grew != ChunkSize+pack.HdrLen {
		t.Fatalf("a partial overwrite stored %d bytes, want one new block (%d)", grew, ChunkSize+pack.HdrLen)
	}
	newer := append([]byte(nil), old...)
	copy(newer[1000:], patch)
	x := txnOf(t, s, t2)
	var ends, creates int
	for _, op := range x.Ops {
		if op.Obj != id || !strings.HasPrefix(op.Key, record.PrefixData) {
			continue
		}
		if op.Key != record.ChunkKey(0) {
			t.Fatalf("the overwrite touched chunk key %q", op.Key)
		}
		if op.Kind == OpEnd {
			ends++
			if op.Create != t1 {
				t.Fatalf("ended the record of %s, want the one of %s", op.Create, t1)
			}
		} else {
			creates++
			ref, err := record.DecodeChunk(op.Payload)
			if err != nil || !ref.Block || ref.Hash != HashOf(newer[:ChunkSize]) {
				t.Fatalf("new chunk record %+v, %v", ref, err)
			}
		}
	}
	if ends != 1 || creates != 1 {
		t.Fatalf("%d ends and %d creates of chunk 0, want 1 and 1", ends, creates)
	}
	if !bytes.Equal(readAll(t, s, id, t1), old) {
		t.Fatal("the old moment lost its block")
	}
	if !bytes.Equal(readAll(t, s, id, t2), newer) {
		t.Fatal("the new moment reads wrong")
	}
	if err := s.index.View(func(tx *bolt.Tx) error {
		for _, h := range []Hash{HashOf(old[:ChunkSize]), HashOf(newer[:ChunkSize])} {
			if _, ok, err := index.GetBlk(tx, h); err != nil || !ok {
				return fmt.Errorf("block %s not indexed: %v", h, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// ---- version listings and the change stream ----

func TestVersionsListOneObjectsChanges(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	step := func() TID { clk.add(time.Minute); return commit(t, s) }

	a := newFile(t, s, RootID, "a")
	other := newFile(t, s, RootID, "other")
	t1 := step()
	write(t, s, a, []byte("hello"), 0)
	t2 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		ino, err := tx.Inode(a)
		if err != nil {
			return err
		}
		ino.Mode = 0o600
		return tx.PutInode(a, ino)
	})
	t3 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "a"); err != nil {
			return err
		}
		if err := tx.SetDirent(RootID, "renamed", a, KindFile); err != nil {
			return err
		}
		return tx.Note(a, ChangeRenamed)
	})
	t4 := step()
	write(t, s, other, []byte("only the other object"), 0)
	t5 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(a, "user.k", []byte("v")) })
	t6 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "renamed"); err != nil {
			return err
		}
		return tx.EndObject(a)
	})
	t7 := step()

	vs, err := s.Versions(a)
	if err != nil {
		t.Fatal(err)
	}
	want := []Version{
		{t1, ChangeCreated, 0},
		{t2, ChangeWritten, 5},
		{t3, ChangeAttr, 5},
		{t4, ChangeRenamed, 5},
		{t6, ChangeXattr, 5},
		{t7, ChangeDeleted, 0},
	}
	if len(vs) != len(want) {
		t.Fatalf("versions %v, want %v", vs, want)
	}
	for i := range want {
		w, g := want[i], vs[i]
		if g.TID != w.TID || g.Change != w.Change || (w.Change != ChangeDeleted && g.Size != w.Size) {
			t.Fatalf("version %d: %+v (%s), want %+v (%s)", i, g, g.Change, w, w.Change)
		}
	}
	ov, err := s.Versions(other)
	if err != nil {
		t.Fatal(err)
	}
	if len(ov) != 2 || ov[0].TID != t1 || ov[1].TID != t5 || ov[1].Size != 21 {
		t.Fatalf("versions of the other object %v, want created at %s and written at %s", ov, t1, t5)
	}
	if v, ok, err := s.VersionAt(a, t3+1); err != nil || !ok || v.TID != t3 {
		t.Fatalf("version of a at t3+1: %+v %v %v", v, ok, err)
	}
	if v, ok, err := s.VersionAt(a, t5); err != nil || !ok || v.TID != t4 {
		t.Fatalf("version of a at t5 (only the other object changed): %+v %v %v", v, ok, err)
	}
	if _, ok, _ := s.VersionAt(a, t1-1); ok {
		t.Fatal("a version before the object existed")
	}
	if vs, _ := s.Versions(999999); len(vs) != 0 {
		t.Fatalf("versions of an unknown object: %v", vs)
	}
}

func TestChangesStreamInOrderAfterSince(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	root := s.LastTID()
	step := func() TID { clk.add(time.Second); return commit(t, s) }
	a := newFile(t, s, RootID, "a")
	write(t, s, a, []byte("v1"), 0)
	t1 := step()
	write(t, s, a, []byte("v2"), 0)
	t2 := step()
	b := newFile(t, s, RootID, "b")
	t3 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "a"); err != nil {
			return err
		}
		return tx.EndObject(a)
	})
	t4 := step()
	write(t, s, b, []byte("pending, not committed"), 0)

	tids := func(xs []*Txn) []TID {
		var out []TID
		for _, x := range xs {
			out = append(out, x.TID)
		}
		return out
	}
	all := txns(t, s, 0)
	if got, want := fmt.Sprint(tids(all)), fmt.Sprint([]TID{root, t1, t2, t3, t4}); got != want {
		t.Fatalf("changes since 0: %s, want %s", got, want)
	}
	// t1 creates a's records; t2 ends its data record and creates a new one.
	has := func(x *Txn, end bool, obj ObjID, key string, create TID) bool {
		for _, op := range x.Ops {
			if (op.Kind == OpEnd) == end && op.Obj == obj && op.Key == key && op.Create == create {
				return true
			}
		}
		return false
	}
	if !has(all[1], false, a, record.KeyInode, t1) || !has(all[1], false, a, record.ChunkKey(0), t1) ||
		!has(all[1], false, RootID, record.DirentKey("a"), t1) {
		t.Fatalf("t1 lacks the creates of a: %+v", all[1].Ops)
	}
	if !has(all[2], true, a, record.ChunkKey(0), t1) || !has(all[2], false, a, record.ChunkKey(0), t2) {
		t.Fatalf("t2 lacks the end and create of a's data: %+v", all[2].Ops)
	}
	if !has(all[4], true, a, record.KeyInode, t1) || !has(all[4], true, a, record.ChunkKey(0), t2) ||
		!has(all[4], true, RootID, record.DirentKey("a"), t1) {
		t.Fatalf("t4 does not end a's records: %+v", all[4].Ops)
	}
	for _, x := range all {
		for _, op := range x.Ops {
			if op.Kind == OpCreate && op.Create != x.TID {
				t.Fatalf("transaction %s creates a record stamped %s", x.TID, op.Create)
			}
			if op.Kind == OpEnd && op.Create >= x.TID {
				t.Fatalf("transaction %s ends a record created at %s", x.TID, op.Create)
			}
		}
	}
	for _, c := range []struct {
		since TID
		want  []TID
	}{
		{t2, []TID{t3, t4}},
		{t2 - 1, []TID{t2, t3, t4}},
		{t2 + 1, []TID{t3, t4}},
		{t4 - 1, []TID{t4}},
		{t4, nil},
		{t4 + 1, nil},
	} {
		if got := tids(txns(t, s, c.since)); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Fatalf("changes since %s: %v, want %v", c.since, got, c.want)
		}
	}
	// A stopping reader gets its error back.
	stop := errors.New("enough")
	n := 0
	if err := s.Changes(0, func(*Txn) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("a reader that stops: %v after %d", err, n)
	}
}

// ---- transaction and object ids ----

func TestTIDsStrictlyIncreaseAndTrackTheClock(t *testing.T) {
	clk := epoch()
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	id := newFile(t, s, RootID, "f")
	if got := s.LastTID(); got != TIDAt(clk.t) {
		t.Fatalf("the root's transaction is %s, want the clock %s", got, TIDAt(clk.t))
	}
	n := 0
	change := func() { n++; write(t, s, id, []byte{byte(n)}, 0) }

	change()
	clk.add(1500 * time.Millisecond)
	t1 := commit(t, s)
	if t1 != TIDAt(clk.t) {
		t.Fatalf("tid %s does not track the clock %s", t1, TIDAt(clk.t))
	}
	change() // the clock did not move
	t2 := commit(t, s)
	if t2 != t1+1 {
		t.Fatalf("tid with a stopped clock %s, want %s", t2, t1+1)
	}
	if again := commit(t, s); again != t2 {
		t.Fatalf("a commit with nothing pending made %s", again)
	}
	clk.add(-time.Hour) // the clock steps backwards
	change()
	t3 := commit(t, s)
	if t3 != t2+1 {
		t.Fatalf("tid after the clock stepped back %s, want %s", t3, t2+1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk) // reopen with the clock still behind
	defer func() { s.Close() }()
	if s.LastTID() != t3 {
		t.Fatalf("reopened at %s, want %s", s.LastTID(), t3)
	}
	change()
	t4 := commit(t, s)
	if t4 <= t3 {
		t.Fatalf("tid %s after a reopen is not after %s", t4, t3)
	}
	clk.add(2 * time.Hour)
	change()
	t5 := commit(t, s)
	if t5 != TIDAt(clk.t) {
		t.Fatalf("once the clock is ahead again tid %s, want %s", t5, TIDAt(clk.t))
	}
	if !t5.Time().Equal(clk.t) {
		t.Fatalf("TID.Time %v, want %v", t5.Time(), clk.t)
	}
	vs, _ := s.Versions(id)
	for i := 1; i < len(vs); i++ {
		if vs[i].TID <= vs[i-1].TID {
			t.Fatalf("versions out of order: %v", vs)
		}
	}
}

func TestObjectIDsNeverReused(t *testing.T) {
	clk := epoch()
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	seen := map[ObjID]string{RootID: "/"}
	var maxID ObjID
	create := func(s *Store, name string) ObjID {
		t.Helper()
		id := newFile(t, s, RootID, name)
		if prev, dup := seen[id]; dup {
			t.Fatalf("object id %d of %q was %q's", id, name, prev)
		}
		seen[id] = name
		maxID = max(maxID, id)
		return id
	}
	// Cross several reservation blocks, with commits in between.
	for i := 0; i < 2*objReserve+100; i++ {
		create(s, fmt.Sprintf("a%d", i))
		if i%700 == 0 {
			clk.add(time.Second)
			commit(t, s)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A crash-free reopen.
	s = openTest(t, dir, clk)
	before := maxID
	for i := 0; i < 10; i++ {
		if id := create(s, fmt.Sprintf("b%d", i)); id <= before {
			t.Fatalf("id %d after a reopen is not above %d, the highest before it", id, before)
		}
	}
	// Objects made durable through the intent log only, then a crash.
	var durable []ObjID
	for i := 0; i < 5; i++ {
		durable = append(durable, create(s, fmt.Sprintf("c%d", i)))
	}
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	// And objects handed out without being made durable: lost in the crash,
	// but their ids must never name a second object.
	for i := 0; i < 3; i++ {
		create(s, fmt.Sprintf("lost%d", i))
	}
	img := crashImage(t, dir, intentSynced(s))
	s.Close()

	s2 := openTest(t, img, clk)
	defer s2.Close()
	for i, want := range durable {
		got, _, err := s2.Lookup(RootID, fmt.Sprintf("c%d", i), Live)
		if err != nil || got != want {
			t.Fatalf("durable object c%d after the crash: %d %v, want %d", i, got, err, want)
		}
	}
	if _, _, err := s2.Lookup(RootID, "lost0", Live); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an object never made durable survived the crash (%v): the crash image is not one", err)
	}
	for i := 0; i < 2*objReserve; i++ {
		create(s2, fmt.Sprintf("d%d", i))
	}
}

// ---- durability under concurrency ----

func TestDurableConcurrentWritersAllSurvive(t *testing.T) {
	dir := t.TempDir()
	// A short flush interval, so commits run among the writers.
	s, err := Open(dir, Options{FlushInterval: 3 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 25
	type acked struct {
		name string
		data []byte
	}
	var mu sync.Mutex
	var done []acked
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				name := fmt.Sprintf("g%02d-%03d", g, i)
				data := randData(uint64(g*1000+i), 1+(g*7919+i*104729)%(2*ChunkSize))
				err := s.Update(func(tx *Tx) error {
					id, err := tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1})
					if err != nil {
						return err
					}
					if err := tx.SetDirent(RootID, name, id, KindFile); err != nil {
						return err
					}
					return tx.WriteAt(id, data, 0)
				})
				if err == nil {
					err = s.Durable()
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d op %d: %w", g, i, err)
					return
				}
				mu.Lock()
				done = append(done, acked{name, data})
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(done) != writers*each {
		t.Fatalf("%d acknowledged writes, want %d", len(done), writers*each)
	}
	check := func(s *Store, what string) {
		t.Helper()
		for _, a := range done {
			id, _, err := s.Lookup(RootID, a.name, Live)
			if err != nil {
				t.Fatalf("%s: %s: %v", what, a.name, err)
			}
			if !bytes.Equal(readAll(t, s, id, Live), a.data) {
				t.Fatalf("%s: %s reads back wrong", what, a.name)
			}
		}
	}
	// A power cut now: hold commits back so none is half-way, and drop what
	// the intent log never fsynced.
	s.commitMu.Lock()
	s.mu.RLock()
	retained := append([]*intent.File(nil), s.retained...)
	s.mu.RUnlock()
	img := crashImage(t, dir, intentSynced(s, retained...))
	s.commitMu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c := openTest(t, img, nil)
	check(c, "after a power cut")
	c.Close()
	s = openTest(t, dir, nil)
	defer s.Close()
	check(s, "after reopen")
}

// TestDurableCoversChangesOfARunningCommit: Durable must not return while
// a change made before it is neither in an fsynced intent file nor in a
// durable transaction. A commit that has rotated the intent log but not yet
// made its frame durable holds such changes.
func TestDurableCoversChangesOfARunningCommit(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	commit(t, s)
	write(t, s, id, []byte("acknowledged by Durable"), 0) // inline: the commit puts no block
	f1 := s.ilog.Current()                                // the intent file holding the write, not yet fsynced

	// Hold a commit after it froze the changes and rotated the intent log,
	// before its frame is written: it waits on the packs to sync them.
	release := s.packs.Hold()
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	committed := make(chan error, 1)
	go func() { _, err := s.Commit(); committed <- err }()
	for {
		s.mu.RLock()
		frozen := s.frozen != nil
		s.mu.RUnlock()
		if frozen {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// Durable may return at once (the intent entry is fsynced) or wait for
	// the running commit; if it waits, let the commit go on after a while.
	durable := make(chan error, 1)
	go func() { durable <- s.Durable() }()
	var derr error
	select {
	case derr = <-durable:
	case <-time.After(2 * time.Second):
		release()
		held = false
		derr = <-durable
	}
	if derr != nil {
		t.Fatal(derr)
	}
	st := s.ilog.State(f1)
	covered := st.Retired || st.Synced >= st.Written
	synced, written := st.Synced, st.Written
	// A power cut right after Durable returned.
	img := crashImage(t, dir, intentSynced(s, f1))
	if held {
		release()
		held = false
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if !covered {
		t.Errorf("Durable returned while the write was only in intent file %s, fsynced to %d of %d bytes, and its transaction was not yet durable",
			filepath.Base(f1.Name()), synced, written)
	}
	c := openTest(t, img, nil)
	defer c.Close()
	if got := string(readAll(t, c, id, Live)); got != "acknowledged by Durable" {
		t.Fatalf("after a power cut right after Durable returned, the file reads %q", got)
	}
}

// TestObjectIDsNotReusedAfterFailedUpdate: an Update whose function fails
// after NewObject reserved a new block of ids drops the reservation's intent
// entry but keeps the raised in-memory high-water mark, so the next objects
// are handed out without any durable reservation; a crash before the next
// commit then hands their ids out again.
func TestObjectIDsNotReusedAfterFailedUpdate(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	defer s.Close()
	boom := errors.New("the caller changed its mind")
	err := s.Update(func(tx *Tx) error {
		if _, err := tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	handed := newFile(t, s, RootID, "handed-out") // not made durable
	img := crashImage(t, dir, intentSynced(s))
	c := openTest(t, img, nil)
	defer c.Close()
	if _, _, err := c.Lookup(RootID, "handed-out", Live); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the object never made durable survived (%v): the crash image is not one", err)
	}
	for i := 0; i < 4; i++ {
		if id := newFile(t, c, RootID, fmt.Sprintf("new%d", i)); id == handed {
			t.Fatalf("object id %d was handed out before the crash and again after it", id)
		}
	}
}

// ---- truncate, xattrs, symlinks, directories ----

func TestTruncateDownThenExtendReadsZeros(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	data := randData(6, 3*ChunkSize+500)
	cut := int64(ChunkSize + 100) // inside chunk 1
	extended := func() []byte {
		w := make([]byte, len(data)+1000)
		copy(w, data[:cut])
		return w
	}()
	step := func() TID { clk.add(time.Second); return commit(t, s) }

	// Committed between each step.
	a := newFile(t, s, RootID, "a")
	write(t, s, a, data, 0)
	t1 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.Truncate(a, uint64(cut)) })
	t2 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.Truncate(a, uint64(len(extended))) })
	if !bytes.Equal(readAll(t, s, a, Live), extended) {
		t.Fatal("live: the extended region does not read as zeros")
	}
	t3 := step()
	if !bytes.Equal(readAll(t, s, a, t1), data) || !bytes.Equal(readAll(t, s, a, t2), data[:cut]) ||
		!bytes.Equal(readAll(t, s, a, t3), extended) {
		t.Fatal("history of truncate then extend reads wrong")
	}

	// Down and up inside one flush, and extended by a write past the end.
	b := newFile(t, s, RootID, "b")
	write(t, s, b, data, 0)
	t4 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.Truncate(b, uint64(cut)) })
	mustUpdate(t, s, func(tx *Tx) error { return tx.Truncate(b, uint64(len(data))) })
	write(t, s, b, []byte("tail"), int64(len(data)+996))
	want := extended
	copy(want[len(data)+996:], "tail")
	if !bytes.Equal(readAll(t, s, b, Live), want) {
		t.Fatal("live, one flush: the extended region does not read as zeros")
	}
	t5 := step()
	if !bytes.Equal(readAll(t, s, b, t4), data) || !bytes.Equal(readAll(t, s, b, t5), want) {
		t.Fatal("history, one flush: truncate then extend reads wrong")
	}
	// Down to zero and up again in one update.
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.Truncate(b, 0); err != nil {
			return err
		}
		return tx.Truncate(b, 5*ChunkSize)
	})
	t6 := step()
	if got := readAll(t, s, b, t6); len(got) != 5*ChunkSize || !allZero(got) {
		t.Fatal("truncate to 0 then extend does not read as zeros")
	}
	if !bytes.Equal(readAll(t, s, b, t5), want) {
		t.Fatal("history before the truncate to 0 changed")
	}
}

func TestXattrsAndSymlinksAsOf(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	step := func() TID { clk.add(time.Second); return commit(t, s) }
	f := newFile(t, s, RootID, "f")
	t0 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.a", []byte("1")) })
	t1 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.SetXattr(f, "user.a", []byte("2")); err != nil {
			return err
		}
		return tx.SetXattr(f, "user.b", bytes.Repeat([]byte("x"), 3000))
	})
	t2 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.RemoveXattr(f, "user.a") })
	t3 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.c", []byte("c")) }) // pending only

	xa := func(name string, at TID) string {
		v, err := s.Xattr(f, name, at)
		if errors.Is(err, ErrNotFound) {
			return "<none>"
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	xs := func(at TID) string {
		names, err := s.Xattrs(f, at)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(names, ",")
	}
	for _, c := range []struct {
		at      TID
		a, list string
	}{
		{t0, "<none>", ""},
		{t1 - 1, "<none>", ""},
		{t1, "1", "user.a"},
		{t2 - 1, "1", "user.a"},
		{t2, "2", "user.a,user.b"},
		{t3, "<none>", "user.b"},
		{Live, "<none>", "user.b,user.c"},
	} {
		if got := xa("user.a", c.at); got != c.a {
			t.Fatalf("user.a as of %s: %q, want %q", c.at, got, c.a)
		}
		if got := xs(c.at); got != c.list {
			t.Fatalf("xattrs as of %s: %q, want %q", c.at, got, c.list)
		}
	}
	if got := xa("user.b", t2); got != strings.Repeat("x", 3000) {
		t.Fatal("user.b reads wrong")
	}
	if got := xa("user.c", Live); got != "c" {
		t.Fatalf("a pending xattr reads %q", got)
	}

	// Symlinks.
	var l ObjID
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		if l, err = tx.NewObject(Inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1}); err != nil {
			return err
		}
		if err := tx.SetSymlink(l, "target/one"); err != nil {
			return err
		}
		return tx.SetDirent(RootID, "link", l, KindSymlink)
	})
	if got, err := s.Readlink(l, Live); err != nil || got != "target/one" {
		t.Fatalf("live readlink before commit: %q %v", got, err)
	}
	s1 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetSymlink(l, "../target/two") })
	s2 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "link"); err != nil {
			return err
		}
		return tx.EndObject(l)
	})
	s3 := step()
	for _, c := range []struct {
		at   TID
		want string
	}{{s1 - 1, "<none>"}, {s1, "target/one"}, {s2 - 1, "target/one"}, {s2, "../target/two"}, {s3, "<none>"}, {Live, "<none>"}} {
		got, err := s.Readlink(l, c.at)
		if errors.Is(err, ErrNotFound) {
			got = "<none>"
		} else if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Fatalf("readlink as of %s: %q, want %q", c.at, got, c.want)
		}
	}
	if child, k, err := s.Lookup(RootID, "link", s2); err != nil || child != l || k != KindSymlink {
		t.Fatalf("lookup of the link at s2: %d %v %v", child, k, err)
	}
	if _, _, err := s.Lookup(RootID, "link", s3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of the removed link: %v", err)
	}
	if ino, err := s.Inode(l, s2); err != nil || ino.Kind != KindSymlink {
		t.Fatalf("inode of the link at s2: %+v %v", ino, err)
	}
}

// TestEmptyXattrValue: an extended attribute may hold an empty value
// (setfattr -n user.x FILE); it exists, and reads as empty, live, after the
// commit, and after the intent log is replayed.
func TestEmptyXattrValue(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	f := newFile(t, s, RootID, "f")
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.empty", nil) })
	check := func(s *Store, when string) {
		t.Helper()
		names, err := s.Xattrs(f, Live)
		if err != nil || fmt.Sprint(names) != "[user.empty]" {
			t.Errorf("%s: xattrs %v %v, want [user.empty]", when, names, err)
		}
		if v, err := s.Xattr(f, "user.empty", Live); err != nil || len(v) != 0 {
			t.Errorf("%s: the empty xattr reads %q, %v; want an empty value", when, v, err)
		}
	}
	check(s, "pending")
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	img := crashImage(t, dir, intentSynced(s))
	commit(t, s)
	check(s, "committed")
	s.Close()
	c := openTest(t, img, nil)
	defer c.Close()
	check(c, "replayed from the intent log and committed")
}

// TestEndedObjectLiveReadsMatchCommitted: once an object is ended, a live
// read of its keys says the same before and after the flush commits it.
func TestEndedObjectLiveReadsMatchCommitted(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.a", []byte("1")) })
	clk.add(time.Second)
	commit(t, s)
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "f"); err != nil {
			return err
		}
		return tx.EndObject(f)
	})
	probe := func() string {
		_, ierr := s.Inode(f, Live)
		_, xerr := s.Xattr(f, "user.a", Live)
		names, _ := s.Xattrs(f, Live)
		return fmt.Sprintf("inode: %v; xattr: %v; xattrs: %v", ierr, xerr, names)
	}
	before := probe()
	clk.add(time.Second)
	commit(t, s)
	if after := probe(); before != after {
		t.Fatalf("live reads of an ended object change when the flush commits:\n before: %s\n after:  %s", before, after)
	}
}

func TestReadDirAsOfManyEntriesAndResume(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	var d ObjID
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		if d, err = tx.NewObject(Inode{Kind: KindDir, Mode: 0o755, Nlink: 2}); err != nil {
			return err
		}
		return tx.SetDirent(RootID, "dir", d, KindDir)
	})
	names := map[string]bool{}
	add := func(name string) {
		newFile(t, s, d, name)
		names[name] = true
	}
	remove := func(name string) {
		mustUpdate(t, s, func(tx *Tx) error { return tx.RemoveDirent(d, name) })
		delete(names, name)
	}
	snapshot := func() []string {
		var out []string
		for n := range names {
			out = append(out, n)
		}
		sort.Strings(out)
		return out
	}
	moments := map[TID][]string{}
	for i := 0; i < 600; i++ {
		add(fmt.Sprintf("e%04d", i))
	}
	add("a")
	add("a b")
	add("é-utf8")
	add("z\x01ctl")
	clk.add(time.Second)
	moments[commit(t, s)] = snapshot()
	for i := 0; i < 600; i += 3 {
		remove(fmt.Sprintf("e%04d", i))
	}
	for i := 0; i < 200; i++ {
		add(fmt.Sprintf("e%04d-new", i*5))
	}
	remove("a")
	clk.add(time.Second)
	moments[commit(t, s)] = snapshot()
	// Pending changes on top, for the live listing.
	for i := 1; i < 600; i += 7 {
		if names[fmt.Sprintf("e%04d", i)] {
			remove(fmt.Sprintf("e%04d", i))
		}
	}
	for i := 0; i < 50; i++ {
		add(fmt.Sprintf("e%04d-live", i*11))
	}
	add("a")
	moments[Live] = snapshot()

	for at, want := range moments {
		if got := listNames(t, s, d, "", at, 0); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("listing as of %s: %d names, want %d", at, len(got), len(want))
		}
		// Pages of 37, each resuming after the last name returned.
		var paged []string
		after := ""
		for {
			page := listNames(t, s, d, after, at, 37)
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			after = page[len(page)-1]
		}
		if fmt.Sprint(paged) != fmt.Sprint(want) {
			t.Fatalf("paged listing as of %s: %d names, want %d", at, len(paged), len(want))
		}
		// Resuming after a name that is not in the directory.
		after = "e0300x"
		i := sort.SearchStrings(want, after)
		if i < len(want) && want[i] == after {
			i++
		}
		if got := listNames(t, s, d, after, at, 0); fmt.Sprint(got) != fmt.Sprint(want[i:]) {
			t.Fatalf("listing as of %s after %q: %d names, want %d", at, after, len(got), len(want)-i)
		}
	}
}

// ---- derived index: rebuild ----

func TestIndexRebuildEquivalence(t *testing.T) {
	clk := epoch()
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	w := newWorkload(77)
	rnd := rand.New(rand.NewPCG(77, 1))
	m := model{}
	remembered := map[TID]model{}
	ops := 1200
	if testing.Short() {
		ops = 400
	}
	for i := 0; i < ops; i++ {
		op := w.next()
		if err := applyStore(s, op); err != nil {
			t.Fatal(err)
		}
		m.apply(op)
		if i%97 == 0 { // xattrs and symlinks too
			mustUpdate(t, s, func(tx *Tx) error {
				id, err := tx.NewObject(Inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1})
				if err != nil {
					return err
				}
				if err := tx.SetSymlink(id, fmt.Sprintf("target-%d", i)); err != nil {
					return err
				}
				return tx.SetXattr(RootID, fmt.Sprintf("user.x%d", i%3), []byte(fmt.Sprint(i)))
			})
		}
		if rnd.IntN(8) == 0 {
			clk.add(time.Duration(1+rnd.IntN(600)) * time.Second)
			remembered[commit(t, s)] = m.clone()
		}
	}
	clk.add(time.Second)
	remembered[commit(t, s)] = m.clone()

	fresh, err := s.rebuildInto(filepath.Join(t.TempDir(), "index.db"), s.LastTID())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{index.BucketRec, index.BucketVer, index.BucketTxn, index.BucketBlk, index.BucketMeta} {
		diffs, err := compareIndexes(s.index, fresh, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) > 0 {
			t.Errorf("bucket %s differs after a rebuild: %v", b, diffs)
		}
	}
	var n int
	fresh.View(func(tx *bolt.Tx) error { n = tx.Bucket(index.BucketRec).Stats().KeyN; return nil })
	fresh.Close()
	if n < 100 {
		t.Fatalf("the rebuilt index has %d records: the workload made too few", n)
	}

	// Rebuild the store's own index; every moment reads the same, and so
	// does every object's version list.
	versions := map[ObjID]string{}
	for id := RootID; id < s.nextObj; id++ {
		vs, err := s.Versions(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) > 0 {
			versions[id] = fmt.Sprint(vs)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Rebuild(dir); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	for tid, mm := range remembered {
		if err := checkAt(s, tid, mm); err != nil {
			t.Fatalf("after Rebuild: %v", err)
		}
	}
	for id, want := range versions {
		vs, _ := s.Versions(id)
		if fmt.Sprint(vs) != want {
			t.Fatalf("versions of %d after Rebuild: %v, want %s", id, vs, want)
		}
	}
}

// ---- verify, damage and torn tails ----

// damageStore builds a small store whose every file kind holds real data:
// a symlink whose target is a unique marker, a file of two blocks, several
// transactions.
func damageStore(t *testing.T) (dir string, s *Store, clk *fakeClock, link, file ObjID, data []byte, marker string) {
	t.Helper()
	clk = epoch()
	dir = t.TempDir()
	s = openTest(t, dir, clk)
	marker = "verify-marker-2f8c1e7a9b"
	data = randData(8, 2*ChunkSize)
	file = newFile(t, s, RootID, "file")
	write(t, s, file, data, 0)
	clk.add(time.Second)
	commit(t, s)
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		if link, err = tx.NewObject(Inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1}); err != nil {
			return err
		}
		if err := tx.SetSymlink(link, marker); err != nil {
			return err
		}
		return tx.SetDirent(RootID, "link", link, KindSymlink)
	})
	clk.add(time.Second)
	commit(t, s)
	for i := 0; i < 3; i++ {
		write(t, s, file, []byte(fmt.Sprintf("small change %d", i)), int64(ChunkSize+i))
		clk.add(time.Second)
		commit(t, s)
	}
	return
}

func expectProblem(t *testing.T, s *Store, needles ...string) *Report {
	t.Helper()
	rep, err := s.Verify(nil)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.OK() {
		t.Fatalf("verify found nothing (%d frames, %d records, %d blocks)", rep.Frames, rep.Records, rep.Blocks)
	}
	for _, p := range rep.Problems {
		ok := true
		for _, n := range needles {
			ok = ok && strings.Contains(p, n)
		}
		if ok {
			return rep
		}
	}
	t.Fatalf("no problem names %q: %q", needles, rep.Problems)
	return rep
}

func TestVerifyFindsFlippedByteInLogSegment(t *testing.T) {
	_, s, _, _, _, _, _ := damageStore(t)
	defer s.Close()
	if rep, err := s.Verify(nil); err != nil || !rep.OK() {
		t.Fatalf("verify before the damage: %v %v", err, rep)
	}
	type frame struct{ loc, next txlog.Loc }
	var frames []frame
	if err := txlog.Scan(s.logDir(), txlog.Loc{}, func(_ *Txn, loc, next txlog.Loc) error {
		frames = append(frames, frame{loc, next})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(frames) < 4 {
		t.Fatalf("%d frames", len(frames))
	}
	fr := frames[len(frames)/2] // one in the middle, with good frames after it
	seg := txlog.SegName(s.logDir(), fr.loc.Seg)
	flipByte(t, seg, fr.loc.Off+(fr.next.Off-fr.loc.Off)/2)
	expectProblem(t, s, filepath.Base(seg), fmt.Sprintf("offset %d", fr.loc.Off))
}

func TestVerifyFindsFlippedByteInPack(t *testing.T) {
	dir, s, _, _, file, data, _ := damageStore(t)
	h := HashOf(data[:ChunkSize])
	var e index.BlkEntry
	if err := s.index.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if e, ok, err = index.GetBlk(tx, h); err == nil && !ok {
			err = errors.New("block not indexed")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pack := filepath.Join(dir, "volumes", "0", fmt.Sprintf("%08x.pack", e.Loc.Pack))
	flipByte(t, pack, int64(e.Loc.Off)+int64(e.Loc.Length)/2)
	s = openTest(t, dir, nil)
	defer s.Close()
	p := make([]byte, 100)
	n, err := s.ReadAt(file, p, 10, s.LastTID())
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading the damaged block: %d bytes, err %v; want ErrCorrupt", n, err)
	}
	// A read of whole blocks, which takes them in one run, finds it too.
	whole := make([]byte, len(data))
	if n, err := s.ReadAt(file, whole, 0, s.LastTID()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading the file whole: %d bytes, err %v; want ErrCorrupt", n, err)
	}
	// The other block still reads.
	if got := readRange(t, s, file, 2*ChunkSize-100, 100, s.LastTID()); !bytes.Equal(got, data[2*ChunkSize-100:]) {
		t.Fatal("the undamaged block reads wrong")
	}
	expectProblem(t, s, filepath.Base(pack), h.String())
}

func TestVerifyFindsFlippedByteInIndex(t *testing.T) {
	dir, s, _, link, _, _, marker := damageStore(t)
	at := s.LastTID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "index.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt copies pages on write, so stale copies of the record may sit in
	// free pages: damage every copy of the payload.
	hits := 0
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(marker))
		if i < 0 {
			break
		}
		flipByte(t, path, int64(off+i+len(marker)/2))
		hits++
		off += i + len(marker)
	}
	if hits == 0 {
		t.Fatal("the marker is not in index.db")
	}
	s = openTest(t, dir, nil)
	defer s.Close()
	got, err := s.Readlink(link, at)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading the damaged record: %q, err %v; want ErrCorrupt", got, err)
	}
	expectProblem(t, s, "index", fmt.Sprintf("object %d", link))
}

// TestIntentLogDamageIsReported: after a crash, a flipped byte inside an
// intent-log entry that has intact entries after it is damage, not a torn
// tail: the acknowledged writes behind it must not vanish without a word.
func TestIntentLogDamageIsReported(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	a := newFile(t, s, RootID, "a")
	b := newFile(t, s, RootID, "b")
	commit(t, s)
	write(t, s, a, []byte("first acknowledged write"), 0)
	write(t, s, b, []byte("second acknowledged write"), 0)
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	name := s.ilog.Current().Name()
	img := crashImage(t, dir, intentSynced(s))
	s.Close()
	ipath := filepath.Join(img, "intent", filepath.Base(name))
	body, err := os.ReadFile(ipath)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(body, []byte("first acknowledged write"))
	if i < 0 {
		t.Fatal("the write is not in the intent log")
	}
	flipByte(t, ipath, int64(i+3))

	var logged bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := Open(img, Options{FlushInterval: time.Hour, Logger: logger})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: %v", err)
		}
		return // refusing to open with ErrCorrupt reports it
	}
	defer c.Close()
	if !strings.Contains(strings.ToLower(logged.String()), "intent") {
		got := readAll(t, c, b, Live)
		t.Fatalf("a damaged intent-log entry was dropped without any report; the intact write after it now reads %q", got)
	}
}

// TestReopenDoesNotCutACommittedFrame: a flipped byte in the last frame of
// the log looks like a torn tail, but the index shows that frame was
// committed (the index is updated only after the frame is durable). Open
// must report it, not cut it.
func TestReopenDoesNotCutACommittedFrame(t *testing.T) {
	dir, s, _, _, _, _, _ := damageStore(t)
	var last txlog.Loc
	var lastNext txlog.Loc
	if err := txlog.Scan(s.logDir(), txlog.Loc{}, func(_ *Txn, loc, next txlog.Loc) error {
		last, lastNext = loc, next
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := txlog.SegName(filepath.Join(dir, "log"), last.Seg)
	flipByte(t, seg, last.Off+(lastNext.Off-last.Off)/2)
	c, err := Open(dir, Options{FlushInterval: time.Hour})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return
		}
		t.Fatalf("open: %v", err)
	}
	defer c.Close()
	st, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < lastNext.Off {
		t.Fatalf("Open cut the committed last frame (segment %d -> %d bytes) as if it were torn", lastNext.Off, st.Size())
	}
}

func TestTornLogTailOpensCleanly(t *testing.T) {
	for _, where := range []string{"mid-body", "mid-header"} {
		t.Run(where, func(t *testing.T) {
			clk := epoch()
			dir := t.TempDir()
			s := openTest(t, dir, clk)
			id := newFile(t, s, RootID, "f")
			data := randData(9, ChunkSize+10)
			write(t, s, id, data, 0)
			clk.add(time.Second)
			t1 := commit(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// The index as it stood at t1: a crash during the next commit's
			// log append leaves it there, since it is updated only after.
			idx := filepath.Join(dir, "index.db")
			saved, err := os.ReadFile(idx)
			if err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, clk)
			write(t, s, id, []byte("never durable"), 5)
			clk.add(time.Second)
			t2 := commit(t, s)
			var loc, next txlog.Loc
			txlog.Scan(s.logDir(), txlog.Loc{}, func(x *Txn, l, n txlog.Loc) error {
				if x.TID == t2 {
					loc, next = l, n
				}
				return nil
			})
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if next.Off == 0 {
				t.Fatal("the second frame is not in the log")
			}
			if err := os.WriteFile(idx, saved, 0o644); err != nil {
				t.Fatal(err)
			}
			seg := txlog.SegName(filepath.Join(dir, "log"), loc.Seg)
			cut := loc.Off + (next.Off-loc.Off)/2
			if where == "mid-header" {
				cut = loc.Off + 7
			}
			if err := os.Truncate(seg, cut); err != nil {
				t.Fatal(err)
			}

			s = openTest(t, dir, clk)
			if got := s.LastTID(); got != t1 {
				t.Fatalf("after a torn tail the last transaction is %s, want %s", got, t1)
			}
			if st, _ := os.Stat(seg); st.Size() != loc.Off {
				t.Fatalf("the torn frame was not cut: segment is %d bytes, want %d", st.Size(), loc.Off)
			}
			if !bytes.Equal(readAll(t, s, id, Live), data) || !bytes.Equal(readAll(t, s, id, t1), data) {
				t.Fatal("after a torn tail the file reads wrong")
			}
			rep, err := s.Verify(nil)
			if err != nil || !rep.OK() {
				t.Fatalf("verify after a torn tail: %v %+v", err, rep)
			}
			write(t, s, id, []byte("after"), 0)
			clk.add(time.Second)
			t3 := commit(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, clk)
			defer s.Close()
			if got := readRange(t, s, id, 0, 5, t3); string(got) != "after" {
				t.Fatalf("a commit after the torn tail reads %q", got)
			}
			if got := readAll(t, s, id, t1); !bytes.Equal(got, data) {
				t.Fatal("the moment before the torn tail changed")
			}
		})
	}
}

func TestOpenTwiceFailsWithErrLocked(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	for _, d := range []string{dir, dir + "/.", filepath.Join(dir, "..", filepath.Base(dir))} {
		s2, err := Open(d, Options{})
		if !errors.Is(err, ErrLocked) {
			if err == nil {
				s2.Close()
			}
			t.Fatalf("second open of %s: %v, want ErrLocked", d, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, nil)
	s.Close()
}

// TestReservationSyncsEarlierEntries: a change that reserves object ids
// fsyncs its intent entry at once; everything before it must become
// durable with it — the entries of a commit still in flight too — or a
// crash could keep the later change and lose the earlier ones it depends
// on (found by the kill -9 prune test: the store then refused to open).
func TestReservationSyncsEarlierEntries(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	defer s.Close()
	newFile(t, s, RootID, "first") // reserves a block of ids
	commit(t, s)
	f := newFile(t, s, RootID, "f") // E1: no reservation needed
	a := s.ilog.Current()           // E1's intent file, not fsynced
	// Hold a commit after it froze E1, before its frame is durable.
	release := s.packs.Hold()
	committed := make(chan error, 1)
	go func() { _, err := s.Commit(); committed <- err }()
	for {
		s.mu.RLock()
		frozen := s.frozen != nil
		s.mu.RUnlock()
		if frozen {
			break
		}
		time.Sleep(time.Millisecond)
	}
	write(t, s, f, []byte("E2"), 0)
	s.mu.Lock()
	s.nextObj = s.objHigh // the next new object reserves a new block
	s.mu.Unlock()
	g := newFile(t, s, RootID, "g") // E3: reserves, so it is fsynced
	img := crashImage(t, dir, intentSynced(s, a))
	release()
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	c, err := Open(img, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatalf("the crash image does not open: %v", err)
	}
	defer c.Close()
	for name, id := range map[string]ObjID{"f": f, "g": g} {
		if got, _, err := c.Lookup(RootID, name, Live); err != nil || got != id {
			t.Fatalf("after the crash %s is %d, %v; want %d", name, got, err, id)
		}
	}
	if got := readAll(t, c, f, Live); string(got) != "E2" {
		t.Fatalf("after the crash f holds %q", got)
	}
}

// compareIndexes lists the keys of bucket name whose values differ between
// two indexes, as verify does.
func compareIndexes(a, b *bolt.DB, name []byte) (diffs []string, err error) {
	err = a.View(func(tx *bolt.Tx) error {
		diffs, err = compareBucket(tx, b, name)
		return err
	})
	return diffs, err
}

// Verify checks the store as it stood when it began, and commits go on
// beside it: they only append to the log and the packs. A commit made while
// verify reads the blocks neither waits for it nor shows up in it as damage.
func TestVerifyLetsCommitsThrough(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	write(t, s, f, randData(1, 8*ChunkSize), 0)
	commit(t, s)

	var once sync.Once
	progress := func(stage string, _, _ int64) {
		if stage != "blocks" {
			return
		}
		once.Do(func() {
			committed := make(chan error, 1)
			go func() {
				// New blocks go to the pack verify is reading, a new frame
				// to the log segment it read.
				if err := s.Update(func(tx *Tx) error { return tx.WriteAt(f, randData(2, 8*ChunkSize), 8*ChunkSize) }); err != nil {
					committed <- err
					return
				}
				_, err := s.Commit()
				committed <- err
			}()
			select {
			case err := <-committed:
				if err != nil {
					t.Errorf("commit during verify: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("a commit waited for verify")
			}
		})
	}
	rep, err := s.Verify(progress)
	if err != nil || !rep.OK() {
		t.Fatalf("verify with a commit beside it: %v %+v", err, rep)
	}
	after, err := s.Verify(nil)
	if err != nil || !after.OK() {
		t.Fatalf("verify after: %v %+v", err, after)
	}
	if after.Frames != rep.Frames+1 || after.Blocks != rep.Blocks+8 {
		t.Errorf("verify during the commit saw %d frames and %d blocks, after it %d and %d: want one frame and 8 blocks more",
			rep.Frames, rep.Blocks, after.Frames, after.Blocks)
	}
}

// With no server running, VerifyDir checks a store: a sound one through
// Verify; one whose log is damaged, so that it does not open, file by file,
// naming the damaged segment; and it leaves a store that is open alone.
func TestVerifyDir(t *testing.T) {
	dir, s, _, _, _, _, _ := damageStore(t)
	if _, err := VerifyDir(dir, Options{}, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("VerifyDir of an open store: %v, want ErrLocked", err)
	}
	var frames []txlog.Loc
	if err := txlog.Scan(s.logDir(), txlog.Loc{}, func(_ *Txn, loc, _ txlog.Loc) error {
		frames = append(frames, loc)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyDir(dir, Options{}, nil)
	if err != nil || !rep.OK() || rep.Blocks == 0 || rep.Records == 0 {
		t.Fatalf("VerifyDir of a sound store: %v %+v", err, rep)
	}
	fr := frames[len(frames)/2] // committed, with good frames after it
	seg := txlog.SegName(filepath.Join(dir, "log"), fr.Seg)
	flipByte(t, seg, fr.Off+20)
	rep, err = VerifyDir(dir, Options{}, nil)
	if err != nil {
		t.Fatalf("VerifyDir of a store that does not open: %v", err)
	}
	var opens, names bool
	for _, p := range rep.Problems {
		opens = opens || strings.Contains(p, "does not open")
		names = names || strings.Contains(p, filepath.Base(seg)) && strings.Contains(p, fmt.Sprintf("offset %d", fr.Off))
	}
	if !opens || !names || rep.Blocks == 0 {
		t.Fatalf("report of a damaged log: %+v", rep)
	}
	if _, err := VerifyDir(t.TempDir(), Options{}, nil); err == nil {
		t.Fatal("VerifyDir of an empty directory: no error")
	}
}
