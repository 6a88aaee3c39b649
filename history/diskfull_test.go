//go:build linux

package history

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/pack"
)

// A store on a disk that fills up: writes made durable (as an NFS
// FILE_SYNC WRITE or a 9P fsync is) before the disk was full stay
// readable while commits fail, also after a restart on the full disk; a
// write that finds no room fails with ENOSPC; the failing commits leave
// no pack files behind; a change made durable once there is room again
// survives a crash; and the next commit takes everything, which a
// reopened store still has and verifies clean. Needs root, for a small
// tmpfs.
func TestFullDisk(t *testing.T) {
	mnt := smallDisk(t, "6m")
	dir := filepath.Join(mnt, "store")
	clk := epoch()
	s := openTest(t, dir, clk)

	var files []ObjID
	var data [][]byte
	var full error
	for i := 0; i < 64 && full == nil; i++ {
		d := randData(uint64(100+i), 256<<10)
		id, err := createFile(s, fmt.Sprintf("f%d", i), d)
		if err == nil {
			err = s.Durable()
		}
		if err != nil {
			full = err
			break
		}
		files, data = append(files, id), append(data, d)
		clk.add(100 * time.Millisecond)
		if i%4 == 3 {
			s.Commit() // fails once the packs find no room; the intent log keeps the data
		}
	}
	if full == nil {
		t.Fatal("16 MiB went onto a 6 MiB disk")
	}
	if !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("the write that found no room: %v, want ENOSPC", full)
	}
	if len(files) == 0 {
		t.Fatal("nothing fitted before the disk was full")
	}
	before := len(packFiles(t, dir))
	for try := 0; try < 5; try++ {
		if _, err := s.Commit(); err == nil {
			t.Fatal("a commit on a full disk succeeded")
		}
	}
	if after := len(packFiles(t, dir)); after > before {
		t.Fatalf("failed commits left %d more pack files", after-before)
	}
	check := func(s *Store, when string) {
		t.Helper()
		for i, id := range files {
			if got := readAll(t, s, id, Live); !bytes.Equal(got, data[i]) {
				t.Fatalf("%s: file %d of %d differs", when, i, len(files))
			}
		}
	}
	check(s, "on the full disk")
	// A restart on the full disk: the replayed changes cannot be committed,
	// but the store opens and serves them.
	crash(t, s)
	s = openTest(t, dir, clk)
	check(s, "reopened on the full disk")
	// The failed commits started a new intent file; one more change that
	// finds no room there may leave a hole in it.
	if _, err := createFile(s, "late", randData(98, 256<<10)); err == nil && s.Durable() == nil {
		t.Fatal("a change was made durable on a full disk")
	}

	resizeDisk(t, mnt, "64m")
	// The intent log write that failed may have left a hole in its file:
	// a change made now must not be called durable there (behind the
	// hole, a replay would never reach it). Either its sync fails, or the
	// change survives a crash.
	after := randData(99, 64<<10)
	afterID, err := createFile(s, "after", after)
	if err != nil {
		t.Fatal(err)
	}
	promised := s.Durable() == nil
	crash(t, s)
	s = openTest(t, dir, clk) // commits the replayed changes, now that there is room
	check(s, "after a crash")
	if promised {
		if got := readAll(t, s, afterID, Live); !bytes.Equal(got, after) {
			t.Fatal("a change made durable after the disk had been full was lost in a crash")
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	check(s, "reopened")
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// crash stops s as a crash would: no commit, buffered intent entries lost.
func crash(t *testing.T, s *Store) {
	t.Helper()
	close(s.stop)
	<-s.done
	s.closeFiles()
}

// A Close whose commit fails (the packs cannot be written) still makes
// the changes it has buffered durable in the intent log, and says so; the
// next start replays them.
func TestCloseKeepsChangesWhenCommitFails(t *testing.T) {
	dir := t.TempDir()
	clk := epoch()
	s := openTest(t, dir, clk)
	a := newFile(t, s, RootID, "a")
	da := randData(31, 4*ChunkSize)
	write(t, s, a, da, 0)
	clk.add(time.Second)
	commit(t, s)
	b := newFile(t, s, RootID, "b")
	db := randData(32, 16*ChunkSize)
	write(t, s, b, db, 0)                                // buffered, like an UNSTABLE write: not made durable
	readOnlyFile(t, s.packs.Name(s.packs.SealedBelow())) // the next pack write fails
	err := s.Close()
	if err == nil {
		t.Fatal("Close with a failing commit: no error")
	}
	if !strings.Contains(err.Error(), "intent log") {
		t.Errorf("Close's error does not say where the changes are: %v", err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	if got := readAll(t, s, a, Live); !bytes.Equal(got, da) {
		t.Fatal("a, committed before, differs")
	}
	if got := readAll(t, s, b, Live); !bytes.Equal(got, db) {
		t.Fatal("b, buffered when Close's commit failed, differs")
	}
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// A commit that keeps failing (a full disk) is tried at every flush
// interval, and the log says so once (then once a minute), not at every
// attempt; it says when commits work again.
func TestFailingCommitsLogOnce(t *testing.T) {
	mnt := smallDisk(t, "6m")
	var logs lockedBuffer
	s, err := Open(filepath.Join(mnt, "store"), Options{FlushInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	i := 0
	fill := func() {
		for ; ; i++ {
			_, err := createFile(s, fmt.Sprintf("f%d", i), randData(uint64(i), 256<<10))
			if err == nil {
				err = s.Durable()
			}
			if errors.Is(err, syscall.ENOSPC) {
				i++
				return
			}
			if err != nil || i == 128 {
				t.Fatalf("filling the disk: %v after %d writes", err, i)
			}
		}
	}
	// The intent log may find no room first while what it held still fits
	// in a pack, and then the commit goes through (and frees the log's
	// room): fill on until a commit fails.
	fill()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "commit failed"); {
		if time.Now().After(deadline) {
			t.Fatalf("no commit failed on the full disk:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
		if s.Commits() > 0 && !strings.Contains(logs.String(), "commit failed") {
			fill()
		}
	}
	time.Sleep(500 * time.Millisecond) // tens of failed attempts
	if n := strings.Count(logs.String(), "commit failed"); n != 1 {
		t.Fatalf("%d lines say a commit failed, want 1:\n%s", n, logs.String())
	}
	resizeDisk(t, mnt, "64m")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "commit works again") {
		if time.Now().After(deadline) {
			t.Fatalf("no line says commits work again:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// smallDisk mounts a tmpfs of size (mount(8)'s size=) for the test, which
// it skips unless it may (root).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	return mnt
}

// resizeDisk gives smallDisk's tmpfs a new size: room again.
func resizeDisk(t *testing.T, mnt, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, "size="+size); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
}

// Pruning is the way out of a full disk that history filled: a pass under
// a policy that lets old versions go frees their blocks, though the disk
// has no room when it starts, and the commit that could not be made then
// goes through.
func TestPruneOnFullDisk(t *testing.T) {
	mnt := smallDisk(t, "12m")
	defer func(old int64) { pack.MaxSize = old }(pack.MaxSize)
	pack.MaxSize = 1 << 20 // old versions' packs can go whole
	clk := epoch()
	s := openTest(t, filepath.Join(mnt, "store"), clk)
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	var last []byte
	var full error
	for i := 0; i < 64 && full == nil; i++ {
		d := randData(uint64(200+i), 1<<20)
		if err := s.Update(func(tx *Tx) error { return tx.WriteAt(f, d, 0) }); err != nil {
			t.Fatalf("version %d: %v", i, err)
		}
		last = d
		clk.add(time.Hour)
		_, full = s.Commit()
	}
	if !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("64 MiB of versions on a 12 MiB disk: %v, want ENOSPC", full)
	}
	rep, err := s.Prune(Policy{{Keep: time.Hour, For: 3 * time.Hour}}, PruneOptions{})
	if err != nil {
		t.Fatalf("prune on the full disk: %v", err)
	}
	if rep.BlockBytes == 0 || rep.StoredAfter >= rep.StoredBefore {
		t.Fatalf("prune on the full disk freed nothing: %+v", rep)
	}
	clk.add(time.Second)
	tid, err := s.Commit()
	if err != nil {
		t.Fatalf("commit after the prune: %v", err)
	}
	if got := readAll(t, s, f, tid); !bytes.Equal(got, last) {
		t.Fatal("the last version differs")
	}
	rep2, err := s.Verify(nil)
	if err != nil || !rep2.OK() {
		t.Fatalf("verify: %v %+v", err, rep2)
	}
}

// Many small files fill the disk through the index: a commit's frame is in
// the log but its bbolt transaction finds no room. Reads go on (from
// memory), changes wait, and once there is room the next commit brings
// the index up to the log and carries on, with no restart; a reopened
// store has everything and verifies clean.
func TestFullDiskInTheIndex(t *testing.T) {
	defer func(old int64) { reserveSize = old }(reserveSize)
	reserveSize = 0 // no reserve to give up: the store waits for room
	mnt := smallDisk(t, "4m")
	clk := epoch()
	dir := filepath.Join(mnt, "store")
	s := openTest(t, dir, clk)
	made, broke := fillIndex(t, s, clk)
	if broke == nil || !strings.Contains(broke.Error(), "index update") {
		t.Skipf("the disk did not fill up in the index first (%v)", broke)
	}
	lookup := func(s *Store, i int) {
		t.Helper()
		id, _, err := s.Lookup(RootID, indexFiller(i), Live)
		if err != nil {
			t.Fatalf("lookup %s: %v", indexFiller(i), err)
		}
		if got := readAll(t, s, id, Live); string(got) != indexFiller(i) {
			t.Fatalf("%s holds %q", indexFiller(i), got)
		}
	}
	lookup(s, made-1) // from the frozen changes
	if err := s.Update(func(tx *Tx) error { return nil }); err == nil {
		t.Fatal("a change was taken while the index lags the log")
	}
	if _, err := s.Commit(); err == nil {
		t.Fatal("a commit on the full disk succeeded")
	}
	resizeDisk(t, mnt, "64m")
	clk.add(time.Second)
	if _, err := s.Commit(); err != nil {
		t.Fatalf("the first commit once there is room: %v", err)
	}
	newFile(t, s, RootID, "after")
	clk.add(time.Second)
	commit(t, s)
	for _, i := range []int{0, made / 2, made - 1} {
		lookup(s, i)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	for _, i := range []int{0, made / 2, made - 1} {
		lookup(s, i)
	}
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// indexFiller is the name of fillIndex's file i, and its content.
func indexFiller(i int) string { return fmt.Sprintf("file-with-a-longish-name-%08d", i) }

// fillIndex makes small files, committing every 500, until a commit fails
// (on a small disk, in the index: small files' data lives in records).
func fillIndex(t *testing.T, s *Store, clk *fakeClock) (made int, err error) {
	t.Helper()
	for i := 0; err == nil && i < 200000; i++ {
		if _, uerr := createFile(s, indexFiller(i), []byte(indexFiller(i))); uerr != nil {
			t.Fatalf("create %d: %v", i, uerr)
		}
		made++
		if i%500 == 499 {
			clk.add(time.Second)
			_, err = s.Commit()
		}
	}
	return made, err
}

// With a reserve, a store whose disk filled up through its index gives it
// up to bring the index up to the log, and carries on; a store reopened
// on the full disk (after a crash) does the same to open. The log says
// the disk is full.
func TestFullDiskIndexUsesReserve(t *testing.T) {
	defer func(old int64) { reserveSize = old }(reserveSize)
	reserveSize = 512 << 10
	mnt := smallDisk(t, "4m")
	clk := epoch()
	dir := filepath.Join(mnt, "store")
	s := openTest(t, dir, clk)
	if _, err := os.Stat(filepath.Join(dir, "reserve")); err != nil {
		t.Fatalf("no reserve made: %v", err)
	}
	made, broke := fillIndex(t, s, clk)
	if broke == nil || !strings.Contains(broke.Error(), "index update") {
		t.Skipf("the disk did not fill up in the index first (%v)", broke)
	}
	crash(t, s)
	var logs lockedBuffer
	s, err := Open(dir, Options{FlushInterval: time.Hour, Clock: clk.now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("open on the full disk: %v", err)
	}
	defer s.Close()
	if !strings.Contains(logs.String(), "gave up the reserve") {
		t.Errorf("the log does not say the reserve was given up:\n%s", logs.String())
	}
	// The frame whose index update failed is in the log: its files too.
	for _, i := range []int{0, made - 501, made - 1} {
		id, _, err := s.Lookup(RootID, indexFiller(i), Live)
		if err != nil {
			t.Fatalf("lookup %s: %v", indexFiller(i), err)
		}
		if got := readAll(t, s, id, Live); string(got) != indexFiller(i) {
			t.Fatalf("%s holds %q", indexFiller(i), got)
		}
	}
	resizeDisk(t, mnt, "64m") // verify builds an index of its own to compare
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// The same while the store runs: the next commit gives the reserve up to
// bring the index up to the log, and changes are taken again.
func TestFullDiskIndexRepairUsesReserve(t *testing.T) {
	defer func(old int64) { reserveSize = old }(reserveSize)
	reserveSize = 512 << 10
	mnt := smallDisk(t, "4m")
	clk := epoch()
	s := openTest(t, filepath.Join(mnt, "store"), clk)
	defer s.Close()
	made, broke := fillIndex(t, s, clk)
	if broke == nil || !strings.Contains(broke.Error(), "index update") {
		t.Skipf("the disk did not fill up in the index first (%v)", broke)
	}
	clk.add(time.Second)
	if _, err := s.Commit(); err != nil {
		t.Fatalf("the commit after the failed index update, with a reserve to give up: %v", err)
	}
	id, _, err := s.Lookup(RootID, indexFiller(made-1), Live)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, id, Live); string(got) != indexFiller(made-1) {
		t.Fatalf("%s holds %q", indexFiller(made-1), got)
	}
	if err := s.Update(func(tx *Tx) error { return nil }); err != nil {
		t.Fatalf("a change after the repair: %v", err)
	}
}

// createFile makes a file in the root holding data, in one change; unlike
// newFile and write, it reports errors (a full disk's) to the caller.
func createFile(s *Store, name string, data []byte) (ObjID, error) {
	var id ObjID
	err := s.Update(func(tx *Tx) error {
		var err error
		if id, err = tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1}); err != nil {
			return err
		}
		if err := tx.SetDirent(RootID, name, id, KindFile); err != nil {
			return err
		}
		return tx.WriteAt(id, data, 0)
	})
	return id, err
}

// A verify on a full disk, which is when one wants it: its scratch index
// goes where temporary files go when the data's disk has no room.
func TestVerifyOnFullDisk(t *testing.T) {
	mnt := smallDisk(t, "8m")
	clk := epoch()
	s := openTest(t, filepath.Join(mnt, "store"), clk)
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	var full error
	for i := 0; i < 64 && full == nil; i++ {
		d := randData(uint64(300+i), 1<<20)
		if err := s.Update(func(tx *Tx) error { return tx.WriteAt(f, d, 0) }); err != nil {
			t.Fatalf("version %d: %v", i, err)
		}
		clk.add(time.Hour)
		_, full = s.Commit()
	}
	if !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("64 MiB of versions on an 8 MiB disk: %v, want ENOSPC", full)
	}
	// What the failed commit left pending goes back: verify commits first.
	if err := s.Update(func(tx *Tx) error { return tx.Truncate(f, 0) }); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Hour)
	if _, err := s.Commit(); err != nil {
		t.Fatalf("commit of a truncation: %v", err)
	}
	// Fill what the truncation's commit left.
	if err := os.WriteFile(filepath.Join(mnt, "filler"), make([]byte, 8<<20), 0o644); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the disk: %v", err)
	}
	rep, err := s.Verify(nil)
	if err != nil || !rep.OK() || rep.Blocks == 0 {
		t.Fatalf("verify on a full disk: %v %+v", err, rep)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "asof-verify-*")); len(left) > 0 {
		t.Errorf("verify left %v", left)
	}
}
