package history

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// dropPageCache asks the kernel to forget the cached pages of every pack.
// It reads them first: pages still being read in (readahead) would stay.
func dropPageCache(t *testing.T, dir string) {
	t.Helper()
	packs := packFiles(t, dir)
	for _, p := range packs {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, f); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// A read that asks for cached data only says ErrWouldBlock where a block
// is on disk alone, and reads what is in memory.
func TestReadInodeCached(t *testing.T) {
	dir := t.TempDir()
	clk := epoch()
	s := openTest(t, dir, clk)
	id := newFile(t, s, RootID, "f")
	data := randData(7, 8*ChunkSize)
	write(t, s, id, data, 0)
	clk.add(1)
	tid := commit(t, s)
	s.Close()
	dropPageCache(t, dir)

	s = openTest(t, dir, clk) // an empty block cache
	defer s.Close()
	p := make([]byte, 4096)
	if _, _, err := s.ReadInodeCached(id, p, 100, tid); !errors.Is(err, ErrWouldBlock) {
		t.Skipf("a read of a block dropped from the page cache: %v, not ErrWouldBlock (the page cache kept it?)", err)
	}
	// (A read that would block starts the kernel's readahead: drop again.)
	dropPageCache(t, dir)
	whole := make([]byte, len(data))
	if _, _, err := s.ReadInodeCached(id, whole, 0, tid); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("a read of whole blocks (one run) dropped from the page cache: %v, want ErrWouldBlock", err)
	}
	// The blocking read brings them in; then the cached read reads them.
	n, ino, err := s.ReadInode(id, whole, 0, tid)
	if err != nil || n != len(data) || ino.Size != uint64(len(data)) || !bytes.Equal(whole, data) {
		t.Fatalf("ReadInode: %d bytes, size %d, %v", n, ino.Size, err)
	}
	clear(whole)
	if n, _, err := s.ReadInodeCached(id, whole, 0, tid); err != nil || n != len(data) || !bytes.Equal(whole, data) {
		t.Fatalf("ReadInodeCached after ReadInode: %d bytes, %v", n, err)
	}
	// Pending data is in memory by definition.
	write(t, s, id, []byte("pending"), 3)
	if n, _, err := s.ReadInodeCached(id, p[:10], 0, Live); err != nil || n != 10 || string(p[3:10]) != "pending" {
		t.Fatalf("ReadInodeCached of pending data: %d bytes %q, %v", n, p[:10], err)
	}
}
