package history

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// A commit whose log append fails leaves the index as it was: the index
// takes a commit's operations while the commit builds (indexer), and must
// roll them back. The changes stay pending and the next commit makes them
// durable; the store then verifies clean, also after a reopen.
func TestFailedLogAppendLeavesIndexUntouched(t *testing.T) {
	dir := t.TempDir()
	clk := epoch()
	s := openTest(t, dir, clk)
	a := newFile(t, s, RootID, "a")
	v1, v2 := randData(21, 8*ChunkSize), randData(22, 8*ChunkSize)
	write(t, s, a, v1, 0)
	clk.add(time.Second)
	t1 := commit(t, s)
	write(t, s, a, v2, 0)
	b := newFile(t, s, RootID, "b")
	write(t, s, b, v2[:3*ChunkSize], 0) // the same blocks again, in another file

	// The log's file, opened read-only: the append fails.
	restore := readOnlyLog(t, s)
	clk.add(time.Second)
	if _, err := s.Commit(); err == nil {
		t.Fatal("a commit whose log append fails succeeded")
	}
	restore()
	err := s.index.View(func(tx *bolt.Tx) error {
		st, _, err := index.ReadState(tx)
		if err != nil {
			return err
		}
		if st.Applied != t1 {
			return fmt.Errorf("the index has applied %s, want %s", st.Applied, t1)
		}
		if _, ok, err := index.GetBlk(tx, HashOf(v2[:ChunkSize])); err != nil || ok {
			return fmt.Errorf("a block of the failed commit has an entry (%v)", err)
		}
		return tx.Bucket(index.BucketRec).ForEach(func(k, v []byte) error {
			r, err := index.DecodeRec(k, v)
			if err != nil {
				return err
			}
			if r.Create > t1 || r.Delete != 0 && r.Delete > t1 {
				return fmt.Errorf("record %d %q created %s ended %s: the failed commit's", r.Obj, r.Key, r.Create, r.Delete)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, a, Live); !bytes.Equal(got, v2) {
		t.Fatal("after the failed commit a does not read its pending data")
	}

	clk.add(time.Second)
	t2 := commit(t, s)
	check := func() {
		t.Helper()
		if got := readAll(t, s, a, t1); !bytes.Equal(got, v1) {
			t.Fatal("a as of the first commit differs")
		}
		if got := readAll(t, s, a, t2); !bytes.Equal(got, v2) {
			t.Fatal("a as of the second commit differs")
		}
		if got := readAll(t, s, b, t2); !bytes.Equal(got, v2[:3*ChunkSize]) {
			t.Fatal("b as of the second commit differs")
		}
		rep, err := s.Verify(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() {
			t.Fatalf("verify: %v", rep.Problems)
		}
	}
	check()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	check()
}

// readOnlyLog puts a read-only descriptor of the log segment being appended
// to in place of the store's own, so that the next append fails; restore
// puts the store's back.
func readOnlyLog(t *testing.T, s *Store) (restore func()) {
	t.Helper()
	return readOnlyFile(t, txlog.SegName(s.logDir(), s.tlog.End().Seg))
}

// readOnlyFile puts a read-only descriptor of path in place of the one
// this process has open on it, as a full or failing disk would make its
// writes fail; restore puts the original back.
func readOnlyFile(t *testing.T, path string) (restore func()) {
	t.Helper()
	path, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	fd := -1
	for _, e := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == path {
			if fd >= 0 {
				t.Fatalf("two descriptors open on %s", path)
			}
			fd, _ = strconv.Atoi(e.Name())
		}
	}
	if fd < 0 {
		t.Fatalf("no descriptor open on %s", path)
	}
	saved, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := unix.Dup3(int(ro.Fd()), fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := unix.Dup3(saved, fd, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(saved)
	}
}
