package history

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages counts the pages of the file's bytes [off, off+n) that
// are in the page cache, and all of them.
func residentPages(t *testing.T, path string, off, n int64) (in, all int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pg := int64(os.Getpagesize())
	first, end := off&^(pg-1), (off+n+pg-1)&^(pg-1)
	m, err := unix.Mmap(int(f.Fd()), first, int(end-first), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, len(m)/int(pg))
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in, len(vec)
}

// A commit that overwrites a file's blocks lets the page cache of the old
// ones go (they are history now), keeps the new ones', and history still
// reads the old data, from the disk.
func TestCommitDropsSupersededPages(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("the temporary directory is on tmpfs, whose pages are the data")
	}
	clk := epoch()
	s := openTest(t, dir, clk)
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	const n = 64 * ChunkSize
	old, cur := randData(1, n), randData(2, n)
	write(t, s, id, old, 0)
	clk.add(1)
	before := commit(t, s)
	packs, _ := filepath.Glob(filepath.Join(dir, "volumes", "0", "*.pack"))
	if len(packs) != 1 {
		t.Fatalf("packs: %v", packs)
	}
	oldEnd := int64(n / ChunkSize * (packHdrLen + ChunkSize))
	if in, all := residentPages(t, packs[0], 0, oldEnd); in < all-1 {
		t.Skipf("%d of %d pages of blocks just written are cached: this system does not keep them", in, all)
	}

	write(t, s, id, cur, 0)
	clk.add(1)
	commit(t, s)
	if in, all := residentPages(t, packs[0], 0, oldEnd); in > 1 {
		t.Errorf("%d of %d pages of the superseded blocks still cached", in, all)
	}
	if in, all := residentPages(t, packs[0], oldEnd, oldEnd); in < all-1 {
		t.Errorf("only %d of %d pages of the new blocks cached", in, all)
	}
	if got := readAll(t, s, id, before); !bytes.Equal(got, old) {
		t.Fatal("the old version reads wrong after its pages were dropped")
	}
	if got := readAll(t, s, id, Live); !bytes.Equal(got, cur) {
		t.Fatal("the live version reads wrong")
	}
}
