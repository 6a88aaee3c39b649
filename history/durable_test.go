package history

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/intent"
)

func TestDurableConcurrentWritersAllSurvive(t *testing.T) {
	dir := t.TempDir()
	// A short flush interval, so commits run among the writers.
	s, err := Open(dir, Options{FlushInterval: 3 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 25
	type acked struct {
		name string
		data []byte
	}
	var mu sync.Mutex
	var done []acked
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				name := fmt.Sprintf("g%02d-%03d", g, i)
				data := randData(uint64(g*1000+i), 1+(g*7919+i*104729)%(2*ChunkSize))
				err := s.Update(func(tx *Tx) error {
					id, err := tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1})
					if err != nil {
						return err
					}
					if err := tx.SetDirent(RootID, name, id, KindFile); err != nil {
						return err
					}
					return tx.WriteAt(id, data, 0)
				})
				if err == nil {
					err = s.Durable()
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d op %d: %w", g, i, err)
					return
				}
				mu.Lock()
				done = append(done, acked{name, data})
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(done) != writers*each {
		t.Fatalf("%d acknowledged writes, want %d", len(done), writers*each)
	}
	check := func(s *Store, what string) {
		t.Helper()
		for _, a := range done {
			id, _, err := s.Lookup(RootID, a.name, Live)
			if err != nil {
				t.Fatalf("%s: %s: %v", what, a.name, err)
			}
			if !bytes.Equal(readAll(t, s, id, Live), a.data) {
				t.Fatalf("%s: %s reads back wrong", what, a.name)
			}
		}
	}
	// A power cut now: hold commits back so none is half-way, and drop what
	// the intent log never fsynced.
	s.commitMu.Lock()
	s.mu.RLock()
	retained := append([]*intent.File(nil), s.retained...)
	s.mu.RUnlock()
	img := crashImage(t, dir, intentSynced(s, retained...))
	s.commitMu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c := openTest(t, img, nil)
	check(c, "after a power cut")
	c.Close()
	s = openTest(t, dir, nil)
	defer s.Close()
	check(s, "after reopen")
}

// TestDurableCoversChangesOfARunningCommit: Durable must not return while
// a change made before it is neither in an fsynced intent file nor in a
// durable transaction. A commit that has rotated the intent log but not yet
// made its frame durable holds such changes.
func TestDurableCoversChangesOfARunningCommit(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	defer s.Close()
	id := newFile(t, s, RootID, "f")
	commit(t, s)
	write(t, s, id, []byte("acknowledged by Durable"), 0) // inline: the commit puts no block
	f1 := s.ilog.Current()                                // the intent file holding the write, not yet fsynced

	// Hold a commit after it froze the changes and rotated the intent log,
	// before its frame is written: it waits on the packs to sync them.
	release := s.packs.Hold()
	held := true
	defer func() {
		if held {
			release()
		}
	}()
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
	// Durable may return at once (the intent entry is fsynced) or wait for
	// the running commit; if it waits, let the commit go on after a while.
	durable := make(chan error, 1)
	go func() { durable <- s.Durable() }()
	var derr error
	select {
	case derr = <-durable:
	case <-time.After(2 * time.Second):
		release()
		held = false
		derr = <-durable
	}
	if derr != nil {
		t.Fatal(derr)
	}
	st := s.ilog.State(f1)
	covered := st.Retired || st.Synced >= st.Written
	synced, written := st.Synced, st.Written
	// A power cut right after Durable returned.
	img := crashImage(t, dir, intentSynced(s, f1))
	if held {
		release()
		held = false
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if !covered {
		t.Errorf("Durable returned while the write was only in intent file %s, fsynced to %d of %d bytes, and its transaction was not yet durable",
			filepath.Base(f1.Name()), synced, written)
	}
	c := openTest(t, img, nil)
	defer c.Close()
	if got := string(readAll(t, c, id, Live)); got != "acknowledged by Durable" {
		t.Fatalf("after a power cut right after Durable returned, the file reads %q", got)
	}
}
