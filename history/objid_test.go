package history

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestObjectIDsNeverReused(t *testing.T) {
	clk := epoch()
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	seen := map[ObjID]string{RootID: "/"}
	var maxID ObjID
	create := func(s *Store, name string) ObjID {
		t.Helper()
		id := newFile(t, s, RootID, name)
		if prev, dup := seen[id]; dup {
			t.Fatalf("object id %d of %q was %q's", id, name, prev)
		}
		seen[id] = name
		maxID = max(maxID, id)
		return id
	}
	// Cross several reservation blocks, with commits in between.
	for i := 0; i < 2*objReserve+100; i++ {
		create(s, fmt.Sprintf("a%d", i))
		if i%700 == 0 {
			clk.add(time.Second)
			commit(t, s)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A crash-free reopen.
	s = openTest(t, dir, clk)
	before := maxID
	for i := 0; i < 10; i++ {
		if id := create(s, fmt.Sprintf("b%d", i)); id <= before {
			t.Fatalf("id %d after a reopen is not above %d, the highest before it", id, before)
		}
	}
	// Objects made durable through the intent log only, then a crash.
	var durable []ObjID
	for i := 0; i < 5; i++ {
		durable = append(durable, create(s, fmt.Sprintf("c%d", i)))
	}
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	// And objects handed out without being made durable: lost in the crash,
	// but their ids must never name a second object.
	for i := 0; i < 3; i++ {
		create(s, fmt.Sprintf("lost%d", i))
	}
	img := crashImage(t, dir, intentSynced(s))
	s.Close()

	s2 := openTest(t, img, clk)
	defer s2.Close()
	for i, want := range durable {
		got, _, err := s2.Lookup(RootID, fmt.Sprintf("c%d", i), Live)
		if err != nil || got != want {
			t.Fatalf("durable object c%d after the crash: %d %v, want %d", i, got, err, want)
		}
	}
	if _, _, err := s2.Lookup(RootID, "lost0", Live); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an object never made durable survived the crash (%v): the crash image is not one", err)
	}
	for i := 0; i < 2*objReserve; i++ {
		create(s2, fmt.Sprintf("d%d", i))
	}
}

// ---- durability under concurrency ----

// TestObjectIDsNotReusedAfterFailedUpdate: an Update whose function fails
// after NewObject reserved a new block of ids drops the reservation's intent
// entry but keeps the raised in-memory high-water mark, so the next objects
// are handed out without any durable reservation; a crash before the next
// commit then hands their ids out again.
func TestObjectIDsNotReusedAfterFailedUpdate(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	defer s.Close()
	boom := errors.New("the caller changed its mind")
	err := s.Update(func(tx *Tx) error {
		if _, err := tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update: %v", err)
	}
	handed := newFile(t, s, RootID, "handed-out") // not made durable
	img := crashImage(t, dir, intentSynced(s))
	c := openTest(t, img, nil)
	defer c.Close()
	if _, _, err := c.Lookup(RootID, "handed-out", Live); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the object never made durable survived (%v): the crash image is not one", err)
	}
	for i := 0; i < 4; i++ {
		if id := newFile(t, c, RootID, fmt.Sprintf("new%d", i)); id == handed {
			t.Fatalf("object id %d was handed out before the crash and again after it", id)
		}
	}
}

// ---- truncate, xattrs, symlinks, directories ----

// TestReservationSyncsEarlierEntries: a change that reserves object ids
// fsyncs its intent entry at once; everything before it must become
// durable with it — the entries of a commit still in flight too — or a
// crash could keep the later change and lose the earlier ones it depends
// on (found by the kill -9 prune test: the store then refused to open).
func TestReservationSyncsEarlierEntries(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	defer s.Close()
	newFile(t, s, RootID, "first") // reserves a block of ids
	commit(t, s)
	f := newFile(t, s, RootID, "f") // E1: no reservation needed
	a := s.ilog.Current()           // E1's intent file, not fsynced
	// Hold a commit after it froze E1, before its frame is durable.
	release := s.packs.Hold()
	committed := make(chan error, 1)
	go func() { _, err := s.Commit(); committed <- err }()
	for {
		s.mu.RLock()
		frozen := s.frozen != nil
		s.mu.RUnlock()
		if frozen {
			break
		}
		time.Sleep(time.Millisecond)
	}
	write(t, s, f, []byte("E2"), 0)
	s.mu.Lock()
	s.nextObj = s.objHigh // the next new object reserves a new block
	s.mu.Unlock()
	g := newFile(t, s, RootID, "g") // E3: reserves, so it is fsynced
	img := crashImage(t, dir, intentSynced(s, a))
	release()
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	c, err := Open(img, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatalf("the crash image does not open: %v", err)
	}
	defer c.Close()
	for name, id := range map[string]ObjID{"f": f, "g": g} {
		if got, _, err := c.Lookup(RootID, name, Live); err != nil || got != id {
			t.Fatalf("after the crash %s is %d, %v; want %d", name, got, err, id)
		}
	}
	if got := readAll(t, c, f, Live); string(got) != "E2" {
		t.Fatalf("after the crash f holds %q", got)
	}
}
