package pack

import (
	"bytes"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/asof/asof/history/internal/record"
)

// breakPackWrites makes the current pack's next write fail, as a full or
// failing disk would: its handle is swapped for a read-only one.
func breakPackWrites(t *testing.T, p *Store) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	ro, err := os.Open(p.Name(p.curSeq))
	if err != nil {
		t.Fatal(err)
	}
	p.cur = ro
}

// A failed pack write loses the blocks put before it by every caller (a
// commit and the cleaner put blocks side by side), so each caller's
// lostSince must say so, not only the sync of the caller whose write
// failed. The pack is cut back to what a sync made durable, and removed
// when that is nothing, so that commits retried on a full disk do not
// leave a pack behind at every attempt; the next pack takes a number
// never used before.
func TestFailedPackWrite(t *testing.T) {
	dir := t.TempDir()
	p, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	put := func(seed uint64) (Loc, []byte) {
		t.Helper()
		data := randData(seed, 16<<10)
		loc, err := p.Put(record.HashOf(data), crc32.Checksum(data, record.Castagnoli), data)
		if err != nil {
			t.Fatal(err)
		}
		return loc, data
	}
	packs := func() []uint32 {
		t.Helper()
		seqs, err := p.List()
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}

	// A pack whose first write fails leaves nothing behind, however often.
	for try := 0; try < 3; try++ {
		m := p.Mark()
		put(uint64(try))
		breakPackWrites(t, p)
		if err := p.Sync(); err == nil {
			t.Fatal("sync after a failed write: no error")
		}
		if p.LostSince(m) == nil {
			t.Fatal("lostSince: no loss reported after a failed write")
		}
		if got := packs(); len(got) != 0 {
			t.Fatalf("attempt %d: packs %v left behind, want none", try, got)
		}
	}

	// Blocks a sync made durable stay; what was put after is cut away,
	// and both callers that put it learn it was lost.
	m := p.Mark()
	locA, a := put(10)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := p.LostSince(m); err != nil {
		t.Fatal(err)
	}
	if locA.Pack <= 3 {
		t.Fatalf("the pack after three failed ones is number %d: a number used before", locA.Pack)
	}
	name := p.Name(locA.Pack)
	st, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	cleaner := p.Mark()
	put(11)
	commit := p.Mark()
	put(12)
	breakPackWrites(t, p)
	if err := p.Sync(); err == nil {
		t.Fatal("the commit's sync after a failed write: no error")
	}
	if p.LostSince(commit) == nil || p.LostSince(cleaner) == nil {
		t.Fatal("a caller whose blocks went with another's failed write was not told")
	}
	if got, err := os.Stat(name); err != nil || got.Size() != st.Size() {
		t.Fatalf("pack after the failed write: %v, %v; want it cut back to %d bytes", got, err, st.Size())
	}
	if b, err := p.Get(locA, record.HashOf(a), false); err != nil || !bytes.Equal(b, a) {
		t.Fatalf("the durable block after the failed write: %v", err)
	}
	if got := packs(); len(got) != 1 {
		t.Fatalf("packs %v, want the one", got)
	}
	locB, b := put(13)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if locB.Pack <= locA.Pack {
		t.Fatalf("a new pack after the failed one is number %d, not after %d", locB.Pack, locA.Pack)
	}
	if got, err := p.Get(locB, record.HashOf(b), false); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("a block written after the failure: %v", err)
	}
}

func randData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// ScanHeaders finds every block ScanFile finds, at the same places, from
// the headers alone; it stops at a torn tail as ScanFile does, and a
// damaged header is its error (a caller enumerating a pack must not take
// the blocks before the damage for all of them).
func TestScanHeadersMatchesScanFile(t *testing.T) {
	p, err := Open(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var locs []Loc
	for i := 0; i < 20; i++ {
		data := randData(uint64(i%15), 1000+i*517) // two blocks twice: a pack may hold a block twice
		loc, err := p.Put(record.HashOf(data), crc32.Checksum(data, record.Castagnoli), data)
		if err != nil {
			t.Fatal(err)
		}
		locs = append(locs, loc)
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	seq := locs[0].Pack
	name := p.Name(seq)
	type found struct {
		h   record.Hash
		loc Loc
	}
	scan := func(path string) ([]found, []found, error) {
		t.Helper()
		var full, hdrs []found
		if err := ScanFile(path, 3, seq, 1<<62, true, func(h record.Hash, loc Loc, err error) error {
			full = append(full, found{h, loc})
			return err
		}); err != nil {
			t.Fatalf("ScanFile: %v", err)
		}
		err := ScanHeaders(path, 3, seq, func(h record.Hash, loc Loc) error {
			hdrs = append(hdrs, found{h, loc})
			return nil
		})
		return full, hdrs, err
	}
	full, hdrs, err := scan(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(full) != len(locs) || len(hdrs) != len(full) {
		t.Fatalf("ScanFile found %d blocks, ScanHeaders %d, %d were put", len(full), len(hdrs), len(locs))
	}
	for i := range full {
		if hdrs[i] != full[i] || full[i].loc != locs[i] {
			t.Fatalf("block %d: ScanHeaders %+v, ScanFile %+v, put at %+v", i, hdrs[i], full[i], locs[i])
		}
	}

	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	torn := t.TempDir() + "/torn.pack"
	last := locs[len(locs)-1]
	if err := os.WriteFile(torn, raw[:last.Off+uint64(last.Length)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	full, hdrs, err = scan(torn)
	if err != nil || len(hdrs) != len(locs)-1 || len(full) != len(hdrs) {
		t.Fatalf("torn tail: ScanHeaders found %d blocks (%v), ScanFile %d, want %d", len(hdrs), err, len(full), len(locs)-1)
	}

	bad := t.TempDir() + "/bad.pack"
	mid := locs[7]
	raw[mid.Off-HdrLen+10] ^= 1 // in the hash, which the header's CRC covers
	if err := os.WriteFile(bad, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	var n int
	err = ScanHeaders(bad, 3, seq, func(record.Hash, Loc) error { n++; return nil })
	if !errors.Is(err, record.ErrCorrupt) || n != 7 {
		t.Fatalf("damaged header of block 7: %d blocks then %v; want 7 then ErrCorrupt", n, err)
	}
}
