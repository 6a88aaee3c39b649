package history

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
)

func readFormatFile(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, formatFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFormatNewStore(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, epoch())
	if s.ChunkSize() != ChunkSize {
		t.Errorf("new store chunk size %d, want %d", s.ChunkSize(), ChunkSize)
	}
	s.Close()
	want := "asof store\nversion 2\nchunk 16384\n"
	if got := readFormatFile(t, dir); got != want {
		t.Errorf("FORMAT = %q, want %q", got, want)
	}
	// Asking for another chunk size does not change an existing store.
	s2, err := Open(dir, Options{FlushInterval: time.Hour, ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.ChunkSize() != ChunkSize {
		t.Errorf("reopened store chunk size %d, want %d", s2.ChunkSize(), ChunkSize)
	}
}

// writeMix writes data whose pieces straddle chunk boundaries of any size,
// overwrites some of it in place, truncates, and commits between steps; it
// returns what the file must read at each step's transaction.
func writeMix(t *testing.T, s *Store, clk *fakeClock, id ObjID) (tids []TID, states [][]byte) {
	t.Helper()
	var model []byte
	step := func() {
		clk.add(time.Second)
		tids = append(tids, commit(t, s))
		states = append(states, append([]byte(nil), model...))
	}
	apply := func(p []byte, off int) {
		write(t, s, id, p, int64(off))
		if end := off + len(p); end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[off:], p)
	}
	apply(randData(1, 300<<10+123), 0)
	step()
	apply(randData(2, 4096), 70<<10-100) // inside one 64 KiB chunk, across 16 KiB ones
	apply(randData(3, 10), 5)
	step()
	apply(randData(4, 50<<10), 400<<10) // past the end: a hole between
	step()
	if err := s.Update(func(tx *Tx) error { return tx.Truncate(id, 100<<10+7) }); err != nil {
		t.Fatal(err)
	}
	model = model[:100<<10+7]
	step()
	return tids, states
}

func checkStates(t *testing.T, s *Store, id ObjID, tids []TID, states [][]byte) {
	t.Helper()
	for i, tid := range tids {
		if got := readAll(t, s, id, tid); !bytes.Equal(got, states[i]) {
			t.Fatalf("chunk %d: step %d reads %d bytes, not the %d written", s.ChunkSize(), i, len(got), len(states[i]))
		}
	}
}

// Each chunk size a store may be made with reads back what was written, at
// every moment, before and after reopening.
func TestFormatChunkSizes(t *testing.T) {
	for _, cs := range []int{4 << 10, 16 << 10, 64 << 10, 1 << 20} {
		dir := t.TempDir()
		clk := epoch()
		s, err := Open(dir, Options{FlushInterval: time.Hour, Clock: clk.now, ChunkSize: cs})
		if err != nil {
			t.Fatal(err)
		}
		if s.ChunkSize() != cs {
			t.Fatalf("chunk size %d, want %d", s.ChunkSize(), cs)
		}
		id := newFile(t, s, RootID, "f")
		tids, states := writeMix(t, s, clk, id)
		checkStates(t, s, id, tids, states)
		s.Close()
		s = openTest(t, dir, clk)
		if s.ChunkSize() != cs {
			t.Fatalf("reopened: chunk size %d, want %d", s.ChunkSize(), cs)
		}
		checkStates(t, s, id, tids, states)
		if rep, err := s.Verify(nil); err != nil || !rep.OK() {
			t.Fatalf("verify: %v %+v", err, rep)
		}
		s.Close()
	}
}

// A store made before FORMAT existed was written with 64 KiB chunks: Open
// must read it so, and say so in the file from then on.
func TestFormatLegacyStore(t *testing.T) {
	dir := t.TempDir()
	clk := epoch()
	s, err := Open(dir, Options{FlushInterval: time.Hour, Clock: clk.now, ChunkSize: legacyChunk})
	if err != nil {
		t.Fatal(err)
	}
	id := newFile(t, s, RootID, "f")
	tids, states := writeMix(t, s, clk, id)
	s.Close()
	if err := os.Remove(filepath.Join(dir, formatFile)); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	if s.ChunkSize() != legacyChunk {
		t.Fatalf("legacy store opened with chunk size %d", s.ChunkSize())
	}
	checkStates(t, s, id, tids, states)
	s.Close()
	if got, want := readFormatFile(t, dir), "asof store\nversion 1\nchunk 65536\n"; got != want {
		t.Errorf("FORMAT = %q, want %q", got, want)
	}
	if err := Rebuild(dir); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	checkStates(t, s, id, tids, states)
}

func TestFormatRefused(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"asof store\nversion 3\nchunk 16384\n", "newer than this asof"},
		{"something else\n", "not an asof store"},
		{"asof store\nversion 2\nchunk 1000\n", "chunk size 1000"},
		{"asof store\nversion 2\nchunk 16384\ncolour blue\n", `unknown setting "colour"`},
		{"asof store\nchunk 16384\n", "no format version"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, formatFile), []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{})
		if err == nil {
			s.Close()
			t.Fatalf("%q: opened", tc.body)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %q, want it to say %q", tc.body, err, tc.want)
		}
	}
	if _, err := Open(t.TempDir(), Options{ChunkSize: 12 << 10}); err == nil || !strings.Contains(err.Error(), "power of two") {
		t.Errorf("chunk size 12 KiB: %v", err)
	}
}

// Reads of any offset and length give the bytes written, whatever mix of
// blocks back to back in a pack (read in one run), blocks from other
// commits or shared with another offset, inline chunks and holes they
// cross.
func TestReadAnyRange(t *testing.T) {
	for _, cs := range []int{4 << 10, 16 << 10, 64 << 10} {
		clk := epoch()
		s, err := Open(t.TempDir(), Options{FlushInterval: time.Hour, Clock: clk.now, ChunkSize: cs})
		if err != nil {
			t.Fatal(err)
		}
		id := newFile(t, s, RootID, "f")
		var model []byte
		put := func(p []byte, off int) {
			write(t, s, id, p, int64(off))
			if end := off + len(p); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[off:], p)
		}
		put(randData(1, 40*cs), 0)
		clk.add(time.Second)
		commit(t, s)
		put(randData(2, 3*cs), 10*cs)        // blocks of another commit inside the run
		put(randData(1, 2*cs), 20*cs)        // the same blocks as at offset 0: stored once
		put(randData(3, 100), 30*cs)         // a partial chunk
		put(randData(4, cs/2), 60*cs+cs/4)   // past a hole, inline
		put(randData(5, 5*cs+77), 70*cs-300) // a tail shorter than a chunk
		clk.add(time.Second)
		tid := commit(t, s)
		r := rand.New(rand.NewPCG(uint64(cs), 9))
		for range 300 {
			off := r.IntN(len(model) + cs)
			n := r.IntN(12 * cs)
			if r.IntN(3) == 0 { // chunk-aligned reads take the run path
				off, n = off/cs*cs, (n/cs+1)*cs
			}
			for _, at := range []TID{tid, Live} {
				p := make([]byte, n)
				for i := range p {
					p[i] = 0xee // must be overwritten, holes too
				}
				got, err := s.ReadAt(id, p, int64(off), at)
				if err != nil {
					t.Fatal(err)
				}
				want := []byte{}
				if off < len(model) {
					want = model[off:min(off+n, len(model))]
				}
				if !bytes.Equal(p[:got], want) {
					t.Fatalf("chunk %d: read %d at %d: %d bytes, differs from the model", cs, n, off, got)
				}
			}
		}
		s.Close()
	}
}

// A remembered block place that is wrong (the cleaner moved the block, and
// may have removed its pack) costs a second look, never wrong data.
func TestStaleBlockPlaces(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	data := randData(3, 6*ChunkSize)
	write(t, s, id, data, 0)
	clk.add(time.Second)
	tid := commit(t, s)
	if got := readAll(t, s, id, tid); !bytes.Equal(got, data) {
		t.Fatal("first read differs")
	}
	var hashes []Hash
	for i := 0; i < 6; i++ {
		hashes = append(hashes, HashOf(data[i*ChunkSize:(i+1)*ChunkSize]))
	}
	for i, h := range hashes {
		loc, ok := s.locs.get(h)
		if !ok {
			t.Fatalf("block %d: no place remembered after a read", i)
		}
		switch i % 3 {
		case 0: // in a pack that is gone
			loc.Pack += 1000
		case 1: // where another block is
			other, _ := s.locs.get(hashes[(i+1)%6])
			loc = other
		case 2: // past the end of the pack
			loc.Off += 1 << 30
		}
		s.locs.put(h, loc)
	}
	s.cache = pack.NewBlockCache(pack.BlockCacheBytes / s.chunk) // no data cached either
	if got := readAll(t, s, id, tid); !bytes.Equal(got, data) {
		t.Fatal("read with wrong remembered places differs")
	}
	for i := 0; i < 6; i++ { // chunk by chunk too (chunkData's path)
		s.locs.put(hashes[i], pack.Loc{Pack: 9999, Off: 48, Length: ChunkSize})
		s.cache = pack.NewBlockCache(pack.BlockCacheBytes / s.chunk)
		b, err := s.chunkData(record.ChunkRef{Block: true, Hash: hashes[i], Length: ChunkSize})
		if err != nil || !bytes.Equal(b, data[i*ChunkSize:(i+1)*ChunkSize]) {
			t.Fatalf("chunk %d with a wrong place: %v", i, err)
		}
	}
	// And a partial write, which reads the chunk it merges into itself.
	want := append([]byte(nil), data...)
	for i := 0; i < 6; i++ {
		s.locs.put(hashes[i], pack.Loc{Pack: 9999, Off: 48, Length: ChunkSize})
		s.cache = pack.NewBlockCache(pack.BlockCacheBytes / s.chunk)
		off := i*ChunkSize + 100
		write(t, s, id, []byte("merged"), int64(off))
		copy(want[off:], "merged")
	}
	clk.add(time.Second)
	if got := readAll(t, s, id, commit(t, s)); !bytes.Equal(got, want) {
		t.Fatal("partial writes over chunks with wrong remembered places differ")
	}
}

// A partial write reads the block it merges into and supersedes it: the
// block does not go into the block cache, where it would push out blocks
// that readers want.
func TestPartialWriteLeavesBlockCacheAlone(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	data := randData(4, 4*ChunkSize)
	write(t, s, id, data, 0)
	clk.add(time.Second)
	commit(t, s)
	want := append([]byte(nil), data...)
	for i := 0; i < 4; i++ {
		off := i*ChunkSize + i*1000
		write(t, s, id, []byte("x"), int64(off))
		want[off] = 'x'
		if b := s.cache.Get(HashOf(data[i*ChunkSize : (i+1)*ChunkSize])); b != nil {
			t.Fatalf("chunk %d: the block a partial write superseded is in the block cache", i)
		}
	}
	clk.add(time.Second)
	if got := readAll(t, s, id, commit(t, s)); !bytes.Equal(got, want) {
		t.Fatal("partial writes differ")
	}
}
