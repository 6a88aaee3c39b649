package history

import (
	"bytes"
	"os"
	"testing"
	"unsafe"

	"github.com/asof/asof/history/internal/pack"
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
// ones go (they are history now), keeps the new ones', and keeps that of
// a block another record still refers to; history still reads the old
// data, from the disk.
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
	const n = 64 * ChunkSize
	v1, v2, v3 := randData(1, n), randData(2, n), randData(3, n)
	f := newFile(t, s, RootID, "f")
	write(t, s, f, v1, 0)
	clk.add(1)
	t1 := commit(t, s)
	packs := packFiles(t, dir)
	if len(packs) != 1 {
		t.Fatalf("packs: %v", packs)
	}
	// Each version's blocks lie back to back, one version after another.
	span := int64(n / ChunkSize * (pack.HdrLen + ChunkSize))
	// The dropper runs beside the commits: wait for it before looking.
	cached := func(v int) (in, all int) {
		s.dropsPending.Wait()
		return residentPages(t, packs[0], int64(v-1)*span, span)
	}
	if in, all := cached(1); in < all-1 {
		t.Skipf("%d of %d pages of blocks just written are cached: this system does not keep them", in, all)
	}

	// v1 moves to a new file g as f takes v2: its blocks are g's now.
	write(t, s, f, v2, 0)
	g := newFile(t, s, RootID, "g")
	write(t, s, g, v1, 0)
	clk.add(1)
	t2 := commit(t, s)
	if in, all := cached(1); in < all-1 {
		t.Errorf("only %d of %d pages cached of blocks a new record refers to", in, all)
	}
	// v2 is overwritten and nothing else refers to it.
	write(t, s, f, v3, 0)
	clk.add(1)
	commit(t, s)
	if in, all := cached(2); in > 2 { // the two it shares with v1 and v3 stay
		t.Errorf("%d of %d pages of the superseded blocks still cached", in, all)
	}
	for v := 1; v <= 3; v += 2 {
		if in, all := cached(v); in < all-1 {
			t.Errorf("only %d of %d pages of the blocks of v%d cached", in, all, v)
		}
	}
	// A copy of f's v3 in h is overwritten: f still reads v3.
	h := newFile(t, s, RootID, "h")
	write(t, s, h, v3, 0)
	clk.add(1)
	commit(t, s)
	write(t, s, h, randData(4, n), 0)
	clk.add(1)
	commit(t, s)
	if in, all := cached(3); in < all-1 {
		t.Errorf("only %d of %d pages cached of the blocks f still refers to", in, all)
	}
	for _, c := range []struct {
		id   ObjID
		at   TID
		want []byte
	}{{f, t1, v1}, {f, t2, v2}, {f, Live, v3}, {g, Live, v1}} {
		if got := readAll(t, s, c.id, c.at); !bytes.Equal(got, c.want) {
			t.Errorf("object %d at %s reads wrong", c.id, c.at)
		}
	}
}
