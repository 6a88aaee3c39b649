package nfs

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// A READ that the reader goroutine would answer but whose data is on disk
// only goes to a goroutine of its own, and reads right: the reader never
// waits for the disk.
func TestReadFromDiskHandedOff(t *testing.T) {
	dir := t.TempDir()
	s, err := history.Open(dir, history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ts := serveFS(t, fs.New(s, fs.Options{Squash: fs.SquashNone}))
	n := mustCreate(t, ts.f, ts.f.Root(), "f", 0o644)
	fh := ts.fh(n)
	c := dialRaw(t, ts.addr)
	data := randBytes(1 << 20)
	if w := c.write(fh, 0, stableUnstable, data); w.status != nfsOK {
		t.Fatalf("WRITE: %+v", w)
	}
	if _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "volumes", "0", "*.pack"))
	for _, p := range packs {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
	}
	var mu sync.Mutex
	tried := map[uint32][]bool{} // xid -> nowait of each attempt
	hook := func(c *sunrpc.Call) {
		if c.Proc == procRead {
			mu.Lock()
			tried[c.Xid] = append(tried[c.Xid], c.NoWait)
			mu.Unlock()
		}
	}
	testHook.Store(&hook)
	t.Cleanup(func() { testHook.Store(nil) })
	for _, off := range []int{0, 300 << 10, 4096, 1<<20 - 4096} {
		r := c.read(fh, uint64(off), 4096)
		if r.status != nfsOK || !bytes.Equal(r.data, data[off:off+4096]) {
			t.Fatalf("READ at %d: status %d, %d bytes, or not the data written", off, r.status, len(r.data))
		}
	}
	r := c.read(fh, 0, 1<<20)
	if !bytes.Equal(r.data, data) {
		t.Fatal("READ of the whole file: not the data written")
	}
	handedOff := 0
	mu.Lock()
	defer mu.Unlock()
	for _, attempts := range tried {
		if len(attempts) == 2 && attempts[0] && !attempts[1] {
			handedOff++
		}
	}
	if handedOff == 0 {
		t.Skipf("no READ was handed off (attempts %v): the page cache kept the packs (fadvise did not drop them?)", tried)
	}
}
