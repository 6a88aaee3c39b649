package pack

import (
	"bytes"
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
