package history

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// damageStore builds a small store whose every file kind holds real data:
// a symlink whose target is a unique marker, a file of two blocks, several
// transactions.
func damageStore(t *testing.T) (dir string, s *Store, clk *fakeClock, link, file ObjID, data []byte, marker string) {
	t.Helper()
	clk = epoch()
	dir = t.TempDir()
	s = openTest(t, dir, clk)
	marker = "verify-marker-2f8c1e7a9b"
	data = randData(8, 2*ChunkSize)
	file = newFile(t, s, RootID, "file")
	write(t, s, file, data, 0)
	clk.add(time.Second)
	commit(t, s)
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		if link, err = tx.NewObject(Inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1}); err != nil {
			return err
		}
		if err := tx.SetSymlink(link, marker); err != nil {
			return err
		}
		return tx.SetDirent(RootID, "link", link, KindSymlink)
	})
	clk.add(time.Second)
	commit(t, s)
	for i := 0; i < 3; i++ {
		write(t, s, file, []byte(fmt.Sprintf("small change %d", i)), int64(ChunkSize+i))
		clk.add(time.Second)
		commit(t, s)
	}
	return
}

func expectProblem(t *testing.T, s *Store, needles ...string) *Report {
	t.Helper()
	rep, err := s.Verify(nil)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.OK() {
		t.Fatalf("verify found nothing (%d frames, %d records, %d blocks)", rep.Frames, rep.Records, rep.Blocks)
	}
	for _, p := range rep.Problems {
		ok := true
		for _, n := range needles {
			ok = ok && strings.Contains(p, n)
		}
		if ok {
			return rep
		}
	}
	t.Fatalf("no problem names %q: %q", needles, rep.Problems)
	return rep
}

func TestVerifyFindsFlippedByteInLogSegment(t *testing.T) {
	_, s, _, _, _, _, _ := damageStore(t)
	defer s.Close()
	if rep, err := s.Verify(nil); err != nil || !rep.OK() {
		t.Fatalf("verify before the damage: %v %v", err, rep)
	}
	type frame struct{ loc, next txlog.Loc }
	var frames []frame
	if err := txlog.Scan(s.logDir(), txlog.Loc{}, func(_ *Txn, loc, next txlog.Loc) error {
		frames = append(frames, frame{loc, next})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(frames) < 4 {
		t.Fatalf("%d frames", len(frames))
	}
	fr := frames[len(frames)/2] // one in the middle, with good frames after it
	seg := txlog.SegName(s.logDir(), fr.loc.Seg)
	flipByte(t, seg, fr.loc.Off+(fr.next.Off-fr.loc.Off)/2)
	expectProblem(t, s, filepath.Base(seg), fmt.Sprintf("offset %d", fr.loc.Off))
}

func TestVerifyFindsFlippedByteInPack(t *testing.T) {
	dir, s, _, _, file, data, _ := damageStore(t)
	h := HashOf(data[:ChunkSize])
	var e index.BlkEntry
	if err := s.index.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if e, ok, err = index.GetBlk(tx, h); err == nil && !ok {
			err = errors.New("block not indexed")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pack := filepath.Join(dir, "volumes", "0", fmt.Sprintf("%08x.pack", e.Loc.Pack))
	flipByte(t, pack, int64(e.Loc.Off)+int64(e.Loc.Length)/2)
	s = openTest(t, dir, nil)
	defer s.Close()
	p := make([]byte, 100)
	n, err := s.ReadAt(file, p, 10, s.LastTID())
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading the damaged block: %d bytes, err %v; want ErrCorrupt", n, err)
	}
	// A read of whole blocks, which takes them in one run, finds it too.
	whole := make([]byte, len(data))
	if n, err := s.ReadAt(file, whole, 0, s.LastTID()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading the file whole: %d bytes, err %v; want ErrCorrupt", n, err)
	}
	// The other block still reads.
	if got := readRange(t, s, file, 2*ChunkSize-100, 100, s.LastTID()); !bytes.Equal(got, data[2*ChunkSize-100:]) {
		t.Fatal("the undamaged block reads wrong")
	}
	expectProblem(t, s, filepath.Base(pack), h.String())
}

func TestVerifyFindsFlippedByteInIndex(t *testing.T) {
	dir, s, _, link, _, _, marker := damageStore(t)
	at := s.LastTID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "index.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt copies pages on write, so stale copies of the record may sit in
	// free pages: damage every copy of the payload.
	hits := 0
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(marker))
		if i < 0 {
			break
		}
		flipByte(t, path, int64(off+i+len(marker)/2))
		hits++
		off += i + len(marker)
	}
	if hits == 0 {
		t.Fatal("the marker is not in index.db")
	}
	s = openTest(t, dir, nil)
	defer s.Close()
	got, err := s.Readlink(link, at)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading the damaged record: %q, err %v; want ErrCorrupt", got, err)
	}
	expectProblem(t, s, "index", fmt.Sprintf("object %d", link))
}

// TestIntentLogDamageIsReported: after a crash, a flipped byte inside an
// intent-log entry that has intact entries after it is damage, not a torn
// tail: the acknowledged writes behind it must not vanish without a word.
func TestIntentLogDamageIsReported(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	a := newFile(t, s, RootID, "a")
	b := newFile(t, s, RootID, "b")
	commit(t, s)
	write(t, s, a, []byte("first acknowledged write"), 0)
	write(t, s, b, []byte("second acknowledged write"), 0)
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	name := s.ilog.Current().Name()
	img := crashImage(t, dir, intentSynced(s))
	s.Close()
	ipath := filepath.Join(img, "intent", filepath.Base(name))
	body, err := os.ReadFile(ipath)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(body, []byte("first acknowledged write"))
	if i < 0 {
		t.Fatal("the write is not in the intent log")
	}
	flipByte(t, ipath, int64(i+3))

	var logged bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := Open(img, Options{FlushInterval: time.Hour, Logger: logger})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: %v", err)
		}
		return // refusing to open with ErrCorrupt reports it
	}
	defer c.Close()
	if !strings.Contains(strings.ToLower(logged.String()), "intent") {
		got := readAll(t, c, b, Live)
		t.Fatalf("a damaged intent-log entry was dropped without any report; the intact write after it now reads %q", got)
	}
}

// Verify checks the store as it stood when it began, and commits go on
// beside it: they only append to the log and the packs. A commit made while
// verify reads the blocks neither waits for it nor shows up in it as damage.
func TestVerifyLetsCommitsThrough(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	write(t, s, f, randData(1, 8*ChunkSize), 0)
	commit(t, s)

	var once sync.Once
	progress := func(stage string, _, _ int64) {
		if stage != "blocks" {
			return
		}
		once.Do(func() {
			committed := make(chan error, 1)
			go func() {
				// New blocks go to the pack verify is reading, a new frame
				// to the log segment it read.
				if err := s.Update(func(tx *Tx) error { return tx.WriteAt(f, randData(2, 8*ChunkSize), 8*ChunkSize) }); err != nil {
					committed <- err
					return
				}
				_, err := s.Commit()
				committed <- err
			}()
			select {
			case err := <-committed:
				if err != nil {
					t.Errorf("commit during verify: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("a commit waited for verify")
			}
		})
	}
	rep, err := s.Verify(progress)
	if err != nil || !rep.OK() {
		t.Fatalf("verify with a commit beside it: %v %+v", err, rep)
	}
	after, err := s.Verify(nil)
	if err != nil || !after.OK() {
		t.Fatalf("verify after: %v %+v", err, after)
	}
	if after.Frames != rep.Frames+1 || after.Blocks != rep.Blocks+8 {
		t.Errorf("verify during the commit saw %d frames and %d blocks, after it %d and %d: want one frame and 8 blocks more",
			rep.Frames, rep.Blocks, after.Frames, after.Blocks)
	}
}

// With no server running, VerifyDir checks a store: a sound one through
// Verify; one with a damaged committed log frame, which opens (open reads
// only the frames its index lacks), through Verify too, naming the frame;
// one that does not open (that log without its index, which opening
// replays) file by file, naming it too; and it leaves a store that is
// open alone.
func TestVerifyDir(t *testing.T) {
	dir, s, _, _, _, _, _ := damageStore(t)
	if _, err := VerifyDir(dir, Options{}, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("VerifyDir of an open store: %v, want ErrLocked", err)
	}
	var frames []txlog.Loc
	if err := txlog.Scan(s.logDir(), txlog.Loc{}, func(_ *Txn, loc, _ txlog.Loc) error {
		frames = append(frames, loc)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyDir(dir, Options{}, nil)
	if err != nil || !rep.OK() || rep.Blocks == 0 || rep.Records == 0 {
		t.Fatalf("VerifyDir of a sound store: %v %+v", err, rep)
	}
	fr := frames[len(frames)/2] // committed, with good frames after it
	seg := txlog.SegName(filepath.Join(dir, "log"), fr.Seg)
	flipByte(t, seg, fr.Off+20)
	report := func(what string, opens bool) {
		t.Helper()
		rep, err := VerifyDir(dir, Options{}, nil)
		if err != nil {
			t.Fatalf("VerifyDir of %s: %v", what, err)
		}
		var refused, names bool
		for _, p := range rep.Problems {
			refused = refused || strings.Contains(p, "does not open")
			names = names || strings.Contains(p, filepath.Base(seg)) && strings.Contains(p, fmt.Sprintf("offset %d", fr.Off))
		}
		if refused == opens || !names || rep.Blocks == 0 {
			t.Fatalf("report of %s: %+v", what, rep)
		}
	}
	report("a damaged committed frame", true)
	if err := os.Remove(filepath.Join(dir, "index.db")); err != nil {
		t.Fatal(err)
	}
	report("a damaged log without its index", false)
	if _, err := VerifyDir(t.TempDir(), Options{}, nil); err == nil {
		t.Fatal("VerifyDir of an empty directory: no error")
	}
}
