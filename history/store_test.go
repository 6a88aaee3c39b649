package history

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/record"
)

// fakeClock is a settable clock so tests can place transactions at chosen
// moments.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }

func openTest(t *testing.T, dir string, clk *fakeClock) *Store {
	t.Helper()
	opts := Options{FlushInterval: time.Hour}
	if clk != nil {
		opts.Clock = clk.now
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

// packFiles lists the pack files of the store in dir, in order.
func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(dir, "volumes", "0", "*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	return packs
}

func newFile(t *testing.T, s *Store, dir ObjID, name string) ObjID {
	t.Helper()
	var id ObjID
	err := s.Update(func(tx *Tx) error {
		var err error
		if id, err = tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1}); err != nil {
			return err
		}
		return tx.SetDirent(dir, name, id, KindFile)
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func write(t *testing.T, s *Store, id ObjID, p []byte, off int64) {
	t.Helper()
	if err := s.Update(func(tx *Tx) error { return tx.WriteAt(id, p, off) }); err != nil {
		t.Fatal(err)
	}
}

func commit(t *testing.T, s *Store) TID {
	t.Helper()
	tid, err := s.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return tid
}

func readAll(t *testing.T, s *Store, id ObjID, at TID) []byte {
	t.Helper()
	ino, err := s.Inode(id, at)
	if err != nil {
		t.Fatalf("inode %d at %s: %v", id, at, err)
	}
	p := make([]byte, ino.Size)
	n, err := s.ReadAt(id, p, 0, at)
	if err != nil {
		t.Fatal(err)
	}
	return p[:n]
}

func TestAsOfExactlyAtBeforeAndBetween(t *testing.T) {
	clk := &fakeClock{t: time.Date(2007, 8, 6, 13, 0, 0, 0, time.UTC)}
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	id := newFile(t, s, RootID, "a")
	write(t, s, id, []byte("one"), 0)
	clk.add(time.Minute)
	t1 := commit(t, s)
	write(t, s, id, []byte("two!"), 0)
	clk.add(time.Minute)
	t2 := commit(t, s)

	cases := []struct {
		at   TID
		want string
		err  error
	}{
		{t1 - 1, "", ErrNotFound},
		{t1, "one", nil},
		{t1 + 1, "one", nil},
		{t2 - 1, "one", nil},
		{t2, "two!", nil},
		{t2 + 1000, "two!", nil},
		{Live, "two!", nil},
	}
	for _, c := range cases {
		_, err := s.Inode(id, c.at)
		if !errors.Is(err, c.err) {
			t.Fatalf("at %s: err %v, want %v", c.at, err, c.err)
		}
		if err == nil {
			if got := string(readAll(t, s, id, c.at)); got != c.want {
				t.Fatalf("at %s: %q, want %q", c.at, got, c.want)
			}
		}
	}
	if _, _, err := s.Lookup(RootID, "a", t1-1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup before creation: %v", err)
	}
	if got, _, err := s.Lookup(RootID, "a", t1); err != nil || got != id {
		t.Fatalf("lookup at creation: %v %v", got, err)
	}
}

func TestLiveReadSeesPendingAndReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	id := newFile(t, s, RootID, "f")
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes: blocks and a partial chunk
	write(t, s, id, big, 0)
	if got := readAll(t, s, id, Live); !bytes.Equal(got, big) {
		t.Fatal("live read before commit differs")
	}
	tid := commit(t, s)
	write(t, s, id, []byte("XYZ"), 100000)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, nil)
	defer s.Close()
	if got := readAll(t, s, id, tid); !bytes.Equal(got, big) {
		t.Fatal("past read after reopen differs")
	}
	want := append([]byte(nil), big...)
	copy(want[100000:], "XYZ")
	if got := readAll(t, s, id, Live); !bytes.Equal(got, want) {
		t.Fatal("live read after reopen differs")
	}
}

// Writers hash the chunks they write once their Update lets go of the
// store's lock, so that the commit, one goroutine that writers may wait
// for, does not; the sums must be those of the chunks' data.
func TestWritersHashTheirChunks(t *testing.T) {
	s := openTest(t, t.TempDir(), epoch())
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	data := randData(7, 3*ChunkSize)
	clear(data[ChunkSize : 2*ChunkSize]) // a chunk of zeros: a hole
	write(t, s, f, data, 0)
	write(t, s, f, []byte("a small write merges into a chunk"), ChunkSize/2)
	write(t, s, f, []byte("tiny"), 10*ChunkSize) // inline: no block, no hash

	s.mu.Lock()
	st := s.pending.objs[f]
	var stored int
	for idx, c := range st.chunks {
		p := c.sum.Load()
		if !c.stored() {
			if p != nil {
				t.Errorf("chunk %d (%d bytes, inline) was hashed", idx, len(c.data))
			}
			continue
		}
		stored++
		switch {
		case p == nil:
			t.Errorf("chunk %d: no sum after its Update", idx)
		case allZero(c.data) != p.zero:
			t.Errorf("chunk %d: zero %v, data all zeros %v", idx, p.zero, allZero(c.data))
		case !p.zero && (p.hash != HashOf(c.data) || p.crc != crc32.Checksum(c.data, record.Castagnoli)):
			t.Errorf("chunk %d: the sum is not its data's", idx)
		}
	}
	s.mu.Unlock()
	if stored != 3 {
		t.Fatalf("%d chunks to be stored, want 3", stored)
	}

	tid := commit(t, s)
	want := append([]byte(nil), data...)
	copy(want[ChunkSize/2:], "a small write merges into a chunk")
	want = append(want, make([]byte, 10*ChunkSize-len(want))...)
	want = append(want, "tiny"...)
	if got := readAll(t, s, f, tid); !bytes.Equal(got, want) {
		t.Fatal("the committed file differs from what was written")
	}
}

// Small sequential writes: a writer leaves the chunk it stopped inside to
// the commit, which hashes it once, instead of hashing it at every step;
// the write that completes a chunk hashes it, and a write that does not go
// on from the last one (a random write) hashes what it wrote, as before.
func TestSequentialWritesHashEachChunkOnce(t *testing.T) {
	s := openTest(t, t.TempDir(), epoch())
	defer s.Close()
	f, g := newFile(t, s, RootID, "f"), newFile(t, s, RootID, "g")
	data := randData(8, 2*ChunkSize)
	const step = ChunkSize / 4
	chunkOf := func(id ObjID, off int) *chunkBuf {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.pending.objs[id].chunks[uint64(off/ChunkSize)]
	}
	for off := 0; off < len(data); off += step {
		// g's writes interleave with f's: each object's own last write counts.
		write(t, s, f, data[off:off+step], int64(off))
		write(t, s, g, data[off:off+step], int64(off))
		for _, id := range []ObjID{f, g} {
			c := chunkOf(id, off)
			end := off + step
			want := c.stored() && end%ChunkSize == 0
			if got := c.sum.Load() != nil; got != want {
				t.Fatalf("object %d, write [%d, %d): chunk hashed %v, want %v", id, off, end, got, want)
			}
		}
	}
	write(t, s, f, []byte("random"), ChunkSize+100)
	if chunkOf(f, ChunkSize).sum.Load() == nil {
		t.Fatal("a write that does not go on from the last one left its chunk unhashed")
	}
	write(t, s, g, data[:step], ChunkSize) // sequential? no: g's last write ended at 2*ChunkSize
	if chunkOf(g, ChunkSize).sum.Load() == nil {
		t.Fatal("a rewrite from the chunk's start left the chunk unhashed")
	}
	write(t, s, g, data[step:2*step], ChunkSize+step) // goes on, stops inside
	if chunkOf(g, ChunkSize).sum.Load() != nil {
		t.Fatal("a sequential write that stopped inside its chunk hashed it")
	}

	tid := commit(t, s)
	wantF := append([]byte(nil), data...)
	copy(wantF[ChunkSize+100:], "random")
	if got := readAll(t, s, f, tid); !bytes.Equal(got, wantF) {
		t.Fatal("f differs from what was written")
	}
	wantG := append([]byte(nil), data...)
	copy(wantG[ChunkSize:], data[:2*step])
	if got := readAll(t, s, g, tid); !bytes.Equal(got, wantG) {
		t.Fatal("g differs from what was written")
	}
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify after the commit: %v %+v", err, rep)
	}
}

// Writers that outrun the commits wait for the commit in flight, so that
// pending changes stay bounded, and go on once it has ended; none of them
// hangs, also when the store closes under them.
func TestWritersOverTheLimitWaitForACommit(t *testing.T) {
	const (
		maxPending = 256 << 10
		writers    = 4
		writes     = 40
		size       = 64 << 10
	)
	s, err := Open(t.TempDir(), Options{FlushInterval: time.Hour, MaxPending: maxPending})
	if err != nil {
		t.Fatal(err)
	}
	files := make([]ObjID, writers)
	for i := range files {
		files[i] = newFile(t, s, RootID, fmt.Sprintf("f%d", i))
	}
	var (
		mu         sync.Mutex
		mostHeld   int64
		errs       = make(chan error, writers)
		wg         sync.WaitGroup
		data       = randData(11, writers*writes*size)
		piece      = func(w, i int) []byte { return data[(w*writes+i)*size:][:size] }
		writeFiles = func(from, to int) {
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := from; i < to; i++ {
						if err := s.Update(func(tx *Tx) error { return tx.WriteAt(files[w], piece(w, i), int64(i)*size) }); err != nil {
							errs <- err
							return
						}
						s.mu.RLock()
						held := s.pending.bytes
						s.mu.RUnlock()
						mu.Lock()
						mostHeld = max(mostHeld, held)
						mu.Unlock()
					}
				}()
			}
		}
	)
	writeFiles(0, writes/2)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Over the limit a writer waits, after adding at most one write of
	// its own; so each writer adds one at most beyond it.
	if bound := int64(2*maxPending + writers*(size+2*objOverhead)); mostHeld > bound {
		t.Errorf("pending changes reached %d bytes, want at most %d", mostHeld, bound)
	}
	if n := s.Commits(); n < writers*writes/2*size/(2*maxPending+writers*size) {
		t.Errorf("%d commits for %d MiB written with MaxPending %d KiB", n, writers*writes/2*size>>20, maxPending>>10)
	}
	tid := commit(t, s)
	for w, f := range files {
		want := data[w*writes*size:][:writes/2*size]
		if got := readAll(t, s, f, tid); !bytes.Equal(got, want) {
			t.Fatalf("file %d differs from what was written", w)
		}
	}

	// The rest while the store closes: every writer returns, with nil or
	// ErrClosed, and Close does too.
	errs = make(chan error, writers*writes)
	writeFiles(writes/2, writes)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("writers still waiting a minute after Close")
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("a write while the store closed: %v", err)
		}
	}
}
