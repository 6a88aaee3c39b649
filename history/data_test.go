package history

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	bolt "go.etcd.io/bbolt"
)

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
