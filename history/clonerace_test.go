package history

import (
	"testing"
	"time"
)

// A copy of a past moment refers to that moment's blocks until its commit.
// A cleaner pass in between that lets the moment go must not free them.
func TestCopyOfAPastMomentSurvivesAPrune(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	old := randData(41, 4*ChunkSize)
	write(t, s, f, old, 0)
	clk.add(time.Second)
	t1 := commit(t, s)
	write(t, s, f, randData(42, 4*ChunkSize), 0)
	clk.add(time.Second)
	commit(t, s)
	clk.add(10 * time.Hour)

	var cp ObjID
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		if cp, err = tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1}); err != nil {
			return err
		}
		if err := tx.CopyData(cp, f, t1); err != nil {
			return err
		}
		return tx.SetDirent(RootID, "copy", cp, KindFile)
	})
	// Keep an hour of history: t1 goes, and with it the old blocks.
	if _, err := s.Prune(Policy{{Keep: time.Second, For: time.Hour}}, PruneOptions{}); err != nil {
		t.Fatalf("prune: %v", err)
	}
	clk.add(time.Second)
	tid, err := s.Commit()
	if err != nil {
		t.Fatalf("commit of the copy after the prune: %v", err)
	}
	if got := readAll(t, s, cp, tid); string(got) != string(old) {
		t.Fatal("the copy does not read the moment it copied")
	}
	if rep, err := s.Verify(nil); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}
