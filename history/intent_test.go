package history

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/fileio"
	"github.com/asof/asof/history/internal/intent"
)

// ---- the file format: recovery of one intent file ----

// ---- the store: preallocated files, the spare, bounded disk use ----

// preallocWorks reports whether this system preallocates intent files.
func preallocWorks(t *testing.T) bool {
	f, err := os.Create(filepath.Join(t.TempDir(), "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return fileio.Preallocate(f, 1<<20) == nil
}

func intentFiles(t *testing.T, dir string) []uint64 {
	t.Helper()
	seqs, err := intent.List(filepath.Join(dir, "intent"))
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}

// crashStop leaves s as kill -9 would: nothing more is committed, written,
// synced or removed, and every file is closed as it is (a process crash
// keeps the page cache).
func crashStop(t *testing.T, s *Store) {
	t.Helper()
	close(s.stop)
	<-s.done
	s.commitMu.Lock()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.ilog.Abandon()
	s.tlog.Close()
	s.packs.Close()
	s.index.Close()
	s.lock.Close()
}

// Entries made durable in a preallocated file survive a crash; the file
// keeps its preallocated size (appends inside it change no size, so
// fdatasync suffices), and recovery retires it once its changes commit.
func TestIntentPreallocatedFileRecovers(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	a := newFile(t, s, RootID, "a")
	commit(t, s)
	write(t, s, a, []byte("acknowledged before the crash"), 0)
	b := newFile(t, s, RootID, "b")
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	cur := s.ilog.Current()
	st := s.ilog.State(cur)
	name, dirDone, synced := cur.Name(), st.Prepared, st.Synced
	if !dirDone {
		t.Error("the current file was not prepared ahead: its first sync fsyncs the directory")
	}
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if preallocWorks(t) && fi.Size() != intent.Prealloc {
		t.Errorf("intent file is %d bytes after a sync of %d, want it preallocated to %d", fi.Size(), synced, intent.Prealloc)
	}
	crashStop(t, s)

	before := intentFiles(t, dir)
	s = openTest(t, dir, nil)
	if got := readAll(t, s, a, Live); string(got) != "acknowledged before the crash" {
		t.Fatalf("after the crash a reads %q", got)
	}
	if _, err := s.Inode(b, Live); err != nil {
		t.Fatalf("after the crash b: %v", err)
	}
	// Replay committed the changes: every file from before the crash is
	// gone, and only the current file and the spare are left.
	after := intentFiles(t, dir)
	if len(after) > 2 || after[0] <= before[len(before)-1] {
		t.Errorf("intent files before the crash %x, after recovery %x", before, after)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left := intentFiles(t, dir); len(left) != 0 {
		t.Errorf("intent files left after Close: %x", left)
	}
}

// Each commit rotates to the spare prepared after the previous one, so the
// first Durable after a commit does one fdatasync; the retired file is
// removed, so the directory holds the current file and the spare.
func TestIntentSpareTakenAtRotation(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	defer s.Close()
	a := newFile(t, s, RootID, "a")
	for i := range 20 {
		spare, cur := s.ilog.Spare(), s.ilog.Current()
		if spare == nil || spare.Seq() != cur.Seq()+1 || !s.ilog.State(spare).Prepared {
			t.Fatalf("commit %d: no prepared spare after file %d: %+v", i, cur.Seq(), spare)
		}
		write(t, s, a, []byte{byte(i)}, int64(i))
		commit(t, s)
		took := s.ilog.Current() == spare
		if !took {
			t.Fatalf("commit %d did not rotate to the spare", i)
		}
		if err := s.Durable(); err != nil {
			t.Fatal(err)
		}
		if seqs := intentFiles(t, dir); len(seqs) != 2 {
			t.Fatalf("commit %d: intent files %x, want the current one and the spare", i, seqs)
		}
	}
}

// A process that opens the store and dies, again and again (a crash loop,
// a server that cannot bind its port), must not pile up preallocated files;
// nor may one that dies with acknowledged changes each time.
func TestIntentCrashLoopKeepsDiskBounded(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	a := newFile(t, s, RootID, "a")
	commit(t, s)
	crashStop(t, s)
	for i := range 6 {
		s = openTest(t, dir, nil)
		if i%2 == 1 {
			write(t, s, a, []byte{'0' + byte(i)}, int64(i))
			if err := s.Durable(); err != nil {
				t.Fatal(err)
			}
		}
		crashStop(t, s)
		if seqs := intentFiles(t, dir); len(seqs) > 2 {
			t.Fatalf("round %d: intent files %x", i, seqs)
		}
	}
	s = openTest(t, dir, nil)
	defer s.Close()
	if got := string(readAll(t, s, a, Live)); got != "\x001\x003\x005" {
		t.Fatalf("a reads %q", got)
	}
}

// The spare and an unused current file hold nothing: a store that fails to
// open (here: damage in the intent log) leaves no new files behind, however
// often it is tried.
func TestIntentRefusedOpenLeavesNoFiles(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	a := newFile(t, s, RootID, "a")
	commit(t, s)
	write(t, s, a, []byte("first"), 0)
	write(t, s, a, []byte("second"), 100)
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	name := s.ilog.Current().Name()
	crashStop(t, s)
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, name, int64(bytes.Index(raw, []byte("first"))))
	before := intentFiles(t, dir)
	for range 3 {
		if _, err := Open(dir, Options{FlushInterval: time.Hour}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: %v, want ErrCorrupt", err)
		}
	}
	if after := intentFiles(t, dir); len(after) > len(before) {
		t.Fatalf("intent files before %x, after refused opens %x", before, after)
	}
}

// An intent entry holds a large write's data where the write's chunks have
// it, instead of a copy: written out, each entry decodes to exactly the
// operations made, in order (a later write over the same chunks, in the
// same Tx or the next, changes nothing already appended), and after a
// crash the replay rebuilds the file.
func TestIntentEntryHoldsWriteData(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	a := newFile(t, s, RootID, "a")
	commit(t, s)
	type w struct {
		off  int64
		data []byte
	}
	first := []w{
		{1000, randData(11, 3*ChunkSize+1234)}, // unaligned, over five chunks: held
		{5, []byte("small: copied")},
		{ChunkSize + 77, randData(12, ChunkSize)}, // over the first one's chunks: held
	}
	second := []w{{ChunkSize / 2, randData(13, 2*ChunkSize)}}
	sent := map[int64][]byte{} // what each write sent, by offset
	var model []byte
	for _, ws := range [][]w{first, second} {
		mustUpdate(t, s, func(tx *Tx) error {
			for _, w := range ws {
				if err := tx.WriteAt(a, w.data, w.off); err != nil {
					return err
				}
			}
			return nil
		})
		for _, w := range ws {
			if end := int(w.off) + len(w.data); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[w.off:], w.data)
			sent[w.off] = append([]byte(nil), w.data...)
			// The caller's buffer is its own again (a server reuses it).
			for k := range w.data {
				w.data[k] = 0xee
			}
		}
	}
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	name := s.ilog.Current().Name()
	bodies, err := intent.Read(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 2 {
		t.Fatalf("%d intent entries, want 2", len(bodies))
	}
	for i, ws := range [][]w{first, second} {
		ops, err := decodeIops(bodies[i])
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) != len(ws) {
			t.Fatalf("entry %d: %d operations, want %d", i, len(ops), len(ws))
		}
		for j, op := range ops {
			if op.kind != iopWrite || op.obj != a || op.n != uint64(ws[j].off) || !bytes.Equal(op.data, sent[ws[j].off]) {
				t.Fatalf("entry %d, operation %d: kind %d, object %d, offset %d, %d bytes: not the write made",
					i, j, op.kind, op.obj, op.n, len(op.data))
			}
		}
	}

	crashStop(t, s)
	s = openTest(t, dir, nil)
	defer s.Close()
	if got := readAll(t, s, a, Live); !bytes.Equal(got, model) {
		t.Fatal("after the crash the file differs from what was written")
	}
}

// A mirror writes no intent entries, so its open prepares no intent file;
// promoted, it writes them all the same: the first Durable makes the
// unprepared file and its directory entry durable itself, and a crash then
// keeps the change.
func TestMirrorOpenPreparesNoIntentFileAndPromotedWritesSurviveACrash(t *testing.T) {
	clk := &fakeClock{t: time.Date(2007, 8, 6, 13, 0, 0, 0, time.UTC)}
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	id := newFile(t, src, RootID, "f")
	write(t, src, id, []byte("one"), 0)
	commit(t, src)
	dir := t.TempDir()
	dst := openMirror(t, dir, clk, src.Lineage())
	pull(t, src, dst, 10)
	dst.Close()
	dst = openTest(t, dir, clk)
	if spare, cur := dst.ilog.Spare(), dst.ilog.Current(); spare != nil || dst.ilog.State(cur).Prepared {
		t.Fatalf("a mirror's open prepared intent files: spare %v, current prepared %v", spare, dst.ilog.State(cur).Prepared)
	}
	if seqs := intentFiles(t, dir); len(seqs) != 1 {
		t.Fatalf("a mirror's open left intent files %x, want the current one", seqs)
	}
	if err := dst.Promote(); err != nil {
		t.Fatal(err)
	}
	g := newFile(t, dst, RootID, "g")
	write(t, dst, g, []byte("mine"), 0)
	if err := dst.Durable(); err != nil {
		t.Fatal(err)
	}
	if !dst.ilog.State(dst.ilog.Current()).Prepared {
		t.Fatal("the first Durable left the intent file's directory entry unsynced")
	}
	crashStop(t, dst)
	dst = openTest(t, dir, clk)
	defer dst.Close()
	if got := string(readAll(t, dst, g, Live)); got != "mine" {
		t.Fatalf("after a crash, the promoted store's durable write reads %q", got)
	}
	if got := string(readAll(t, dst, id, Live)); got != "one" {
		t.Fatalf("after a crash, the mirrored file reads %q", got)
	}
}
