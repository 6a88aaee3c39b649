package history

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// A view read before its pack was removed (the cleaner's work) reads the
// same bytes until it is released: the mapping goes with its last reader.
func TestViewOutlivesItsPack(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, epoch())
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	data := randData(3, 4*ChunkSize+100)
	write(t, s, id, data, 0)
	tid := commit(t, s)
	v, _, err := s.ReadView(id, 10, len(data), tid, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.maps) == 0 {
		t.Fatal("a read of committed blocks holds no mapping")
	}
	seq := s.packs.SealedBelow()
	if err := s.packs.Seal(seq); err != nil { // as the cleaner seals a pack before it removes it
		t.Fatal(err)
	}
	if err := s.packs.Remove(seq); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.packs.Name(seq)); !os.IsNotExist(err) {
		t.Fatalf("pack %d still there: %v", seq, err)
	}
	got := make([]byte, v.N)
	if n, err := v.CopyTo(got); err != nil || n != len(data)-10 || !bytes.Equal(got, data[10:]) {
		t.Fatalf("view after its pack went: %d bytes, %v", n, err)
	}
	v.Release()
	if v.N != 0 || len(v.Segs) != 0 {
		t.Fatal("a released view still holds data")
	}
}

// A pack cut short under the engine (damage, or a location past its end)
// is a read error, as pread's would be, not a crash of the server (SIGBUS).
func TestShortPackIsAnError(t *testing.T) {
	dir := t.TempDir()
	clk := epoch()
	s := openTest(t, dir, clk)
	id := newFile(t, s, RootID, "f")
	data := randData(4, 8*ChunkSize)
	write(t, s, id, data, 0)
	tid := commit(t, s)
	s.Close()
	packs := packFiles(t, dir)
	if len(packs) != 1 {
		t.Fatalf("packs: %v", packs)
	}
	if err := os.Truncate(packs[0], 3*ChunkSize); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	p := make([]byte, ChunkSize)
	if _, err := s.ReadAt(id, p, 0, tid); err != nil || !bytes.Equal(p, data[:ChunkSize]) {
		t.Fatalf("a block before the cut: %v", err)
	}
	for _, off := range []int64{5 * ChunkSize, 6*ChunkSize + 7} {
		if n, err := s.ReadAt(id, p, off, tid); !errors.Is(err, syscall.EIO) {
			t.Fatalf("a block past the pack's end at %d: %d bytes, %v, want EIO", off, n, err)
		}
	}
	whole := make([]byte, len(data))
	if _, err := s.ReadAt(id, whole, 0, tid); err == nil {
		t.Fatal("a read across the pack's end: no error")
	}
}

// However many packs there are, at most maxMaps are mapped at once, and
// reads go on across all of them.
func TestMappedPacksBounded(t *testing.T) {
	defer func(m int, p int64) { pack.MaxMaps, pack.MaxSize = m, p }(pack.MaxMaps, pack.MaxSize)
	pack.MaxMaps, pack.MaxSize = 3, 3*(ChunkSize+pack.HdrLen)
	dir := t.TempDir()
	s := openTest(t, dir, epoch())
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	data := randData(5, 40*ChunkSize)
	write(t, s, id, data, 0)
	tid := commit(t, s)
	if packs := packFiles(t, dir); len(packs) < 10 {
		t.Fatalf("%d packs, want many", len(packs))
	}
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 3*ChunkSize)
	type heldView struct {
		v   View
		off int
	}
	var held []heldView
	for i := 0; i < 200; i++ {
		off := r.IntN(len(data) - len(p))
		v, _, err := s.ReadView(id, int64(off), len(p), tid, false)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := v.CopyTo(p); err != nil || n != len(p) || !bytes.Equal(p, data[off:off+len(p)]) {
			t.Fatalf("read at %d: %d bytes, %v", off, n, err)
		}
		// Some views are held across later reads, whose mappings push
		// theirs out of the table.
		if i%7 == 0 {
			held = append(held, heldView{v, off})
		} else {
			v.Release()
		}
		if mapped := s.packs.Mapped(); mapped > pack.MaxMaps {
			t.Fatalf("%d packs mapped, at most %d allowed", mapped, pack.MaxMaps)
		}
	}
	for _, h := range held {
		got := make([]byte, h.v.N)
		if _, err := h.v.CopyTo(got); err != nil || !bytes.Equal(got, data[h.off:h.off+len(got)]) {
			t.Fatalf("a view held while its mapping left the table: %v", err)
		}
		h.v.Release()
	}
}

// chunkRecords, one cursor walking a run of chunks, finds what latest
// finds chunk by chunk: across many versions, holes, truncation and
// neighbouring objects, at every moment.
func TestChunkRecordsIsLatest(t *testing.T) {
	s := openTest(t, t.TempDir(), epoch())
	defer s.Close()
	r := rand.New(rand.NewPCG(7, 8))
	ids := []ObjID{newFile(t, s, RootID, "a"), newFile(t, s, RootID, "b"), newFile(t, s, RootID, "c")}
	var tids []TID
	for round := 0; round < 40; round++ {
		for n := r.IntN(6); n >= 0; n-- {
			id := ids[r.IntN(len(ids))]
			switch op := r.IntN(10); {
			case op == 0:
				if err := s.Update(func(tx *Tx) error { return tx.Truncate(id, uint64(r.IntN(12*ChunkSize))) }); err != nil {
					t.Fatal(err)
				}
			case op < 3: // small: inline data
				write(t, s, id, randData(r.Uint64(), 1+r.IntN(200)), int64(r.IntN(12))*ChunkSize)
			default:
				write(t, s, id, randData(r.Uint64(), 1+r.IntN(3*ChunkSize)), int64(r.IntN(12*ChunkSize)))
			}
		}
		tids = append(tids, commit(t, s))
	}
	for _, at := range append(tids, tids[0]-1) {
		for _, id := range ids {
			for first := uint64(0); first < 14; first += 3 {
				count := 1 + r.IntN(14)
				var got []string
				err := s.index.View(func(tx *bolt.Tx) error {
					got = make([]string, count)
					return index.ChunkRecords(tx, id, first, count, at, func(i int, payload []byte) error {
						got[i] = string(payload)
						return nil
					})
				})
				if err != nil {
					t.Fatal(err)
				}
				s.index.View(func(tx *bolt.Tx) error {
					for i := range count {
						rec, ok, err := index.Latest(tx, id, record.ChunkKey(first+uint64(i)), at)
						if err != nil {
							t.Fatal(err)
						}
						if want := string(rec.Payload); !ok && got[i] != "" || ok && got[i] != want {
							t.Fatalf("object %d chunk %d at %s: chunkRecords %x, latest %x (found %v)", id, first+uint64(i), at, got[i], want, ok)
						}
					}
					return nil
				})
			}
		}
	}
}

// Reads go on while the cleaner rewrites and removes the packs under
// them: every view reads the live data, also one held across a pass.
func TestViewsDuringPrune(t *testing.T) {
	defer func(s, p int64) { txlog.SegmentSize, pack.MaxSize = s, p }(txlog.SegmentSize, pack.MaxSize)
	txlog.SegmentSize, pack.MaxSize = 16<<10, 4*(ChunkSize+pack.HdrLen)
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	// Versions an hour apart, each half new: the cleaner frees the old
	// halves and rewrites the packs that keep live blocks beside them.
	live := randData(20, 16*ChunkSize)
	write(t, s, id, live, 0)
	for v := 0; v < 12; v++ {
		clk.add(time.Hour)
		fresh := randData(uint64(21+v), 8*ChunkSize)
		off := (v % 2) * 8 * ChunkSize
		copy(live[off:], fresh)
		write(t, s, id, fresh, int64(off))
		commit(t, s)
	}
	held, _, err := s.ReadView(id, 0, len(live), Live, false)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for g := 0; g < 2; g++ {
		go func(g int) {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			p := make([]byte, 3*ChunkSize)
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				off := r.IntN(len(live) - len(p))
				v, _, err := s.ReadView(id, int64(off), len(p), Live, false)
				if err == nil {
					_, err = v.CopyTo(p)
					v.Release()
				}
				if err == nil && !bytes.Equal(p, live[off:off+len(p)]) {
					err = fmt.Errorf("read at %d during the pass: wrong data", off)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	clk.add(time.Hour)
	rep, err := s.Prune(Policy{{Keep: time.Second, For: time.Minute}}, PruneOptions{})
	close(stop)
	for range 2 {
		if e := <-errs; e != nil {
			t.Fatal(e)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pass: %+v", rep)
	if rep.Blocks == 0 || rep.Packs == 0 {
		t.Fatalf("the pass freed no blocks or rewrote no packs: %+v", rep)
	}
	got := make([]byte, held.N)
	if _, err := held.CopyTo(got); err != nil || !bytes.Equal(got, live) {
		t.Fatalf("a view held across the pass: %v", err)
	}
	held.Release()
}
