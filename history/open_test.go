package history

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/txlog"
)

// TestReopenDoesNotCutACommittedFrame: a flipped byte in the last frame of
// the log looks like a torn tail, but the index shows that frame was
// committed (the index is updated only after the frame is durable). Open
// must report it, not cut it.
func TestReopenDoesNotCutACommittedFrame(t *testing.T) {
	dir, s, _, _, _, _, _ := damageStore(t)
	var last txlog.Loc
	var lastNext txlog.Loc
	if err := txlog.Scan(s.logDir(), txlog.Loc{}, func(_ *Txn, loc, next txlog.Loc) error {
		last, lastNext = loc, next
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := txlog.SegName(filepath.Join(dir, "log"), last.Seg)
	flipByte(t, seg, last.Off+(lastNext.Off-last.Off)/2)
	c, err := Open(dir, Options{FlushInterval: time.Hour})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return
		}
		t.Fatalf("open: %v", err)
	}
	defer c.Close()
	st, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < lastNext.Off {
		t.Fatalf("Open cut the committed last frame (segment %d -> %d bytes) as if it were torn", lastNext.Off, st.Size())
	}
}

func TestTornLogTailOpensCleanly(t *testing.T) {
	for _, where := range []string{"mid-body", "mid-header"} {
		t.Run(where, func(t *testing.T) {
			clk := epoch()
			dir := t.TempDir()
			s := openTest(t, dir, clk)
			id := newFile(t, s, RootID, "f")
			data := randData(9, ChunkSize+10)
			write(t, s, id, data, 0)
			clk.add(time.Second)
			t1 := commit(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// The index as it stood at t1: a crash during the next commit's
			// log append leaves it there, since it is updated only after.
			idx := filepath.Join(dir, "index.db")
			saved, err := os.ReadFile(idx)
			if err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, clk)
			write(t, s, id, []byte("never durable"), 5)
			clk.add(time.Second)
			t2 := commit(t, s)
			var loc, next txlog.Loc
			txlog.Scan(s.logDir(), txlog.Loc{}, func(x *Txn, l, n txlog.Loc) error {
				if x.TID == t2 {
					loc, next = l, n
				}
				return nil
			})
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if next.Off == 0 {
				t.Fatal("the second frame is not in the log")
			}
			if err := os.WriteFile(idx, saved, 0o644); err != nil {
				t.Fatal(err)
			}
			seg := txlog.SegName(filepath.Join(dir, "log"), loc.Seg)
			cut := loc.Off + (next.Off-loc.Off)/2
			if where == "mid-header" {
				cut = loc.Off + 7
			}
			if err := os.Truncate(seg, cut); err != nil {
				t.Fatal(err)
			}

			s = openTest(t, dir, clk)
			if got := s.LastTID(); got != t1 {
				t.Fatalf("after a torn tail the last transaction is %s, want %s", got, t1)
			}
			if st, _ := os.Stat(seg); st.Size() != loc.Off {
				t.Fatalf("the torn frame was not cut: segment is %d bytes, want %d", st.Size(), loc.Off)
			}
			if !bytes.Equal(readAll(t, s, id, Live), data) || !bytes.Equal(readAll(t, s, id, t1), data) {
				t.Fatal("after a torn tail the file reads wrong")
			}
			rep, err := s.Verify(nil)
			if err != nil || !rep.OK() {
				t.Fatalf("verify after a torn tail: %v %+v", err, rep)
			}
			write(t, s, id, []byte("after"), 0)
			clk.add(time.Second)
			t3 := commit(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, clk)
			defer s.Close()
			if got := readRange(t, s, id, 0, 5, t3); string(got) != "after" {
				t.Fatalf("a commit after the torn tail reads %q", got)
			}
			if got := readAll(t, s, id, t1); !bytes.Equal(got, data) {
				t.Fatal("the moment before the torn tail changed")
			}
		})
	}
}

func TestOpenTwiceFailsWithErrLocked(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	for _, d := range []string{dir, dir + "/.", filepath.Join(dir, "..", filepath.Base(dir))} {
		s2, err := Open(d, Options{})
		if !errors.Is(err, ErrLocked) {
			if err == nil {
				s2.Close()
			}
			t.Fatalf("second open of %s: %v, want ErrLocked", d, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, nil)
	s.Close()
}
