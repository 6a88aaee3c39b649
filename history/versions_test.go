package history

import (
	"testing"
	"time"
)

func TestVersionsListOneObjectsChanges(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	step := func() TID { clk.add(time.Minute); return commit(t, s) }

	a := newFile(t, s, RootID, "a")
	other := newFile(t, s, RootID, "other")
	t1 := step()
	write(t, s, a, []byte("hello"), 0)
	t2 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		ino, err := tx.Inode(a)
		if err != nil {
			return err
		}
		ino.Mode = 0o600
		return tx.PutInode(a, ino)
	})
	t3 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "a"); err != nil {
			return err
		}
		if err := tx.SetDirent(RootID, "renamed", a, KindFile); err != nil {
			return err
		}
		return tx.Note(a, ChangeRenamed)
	})
	t4 := step()
	write(t, s, other, []byte("only the other object"), 0)
	t5 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(a, "user.k", []byte("v")) })
	t6 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "renamed"); err != nil {
			return err
		}
		return tx.EndObject(a)
	})
	t7 := step()

	vs, err := s.Versions(a)
	if err != nil {
		t.Fatal(err)
	}
	want := []Version{
		{t1, ChangeCreated, 0},
		{t2, ChangeWritten, 5},
		{t3, ChangeAttr, 5},
		{t4, ChangeRenamed, 5},
		{t6, ChangeXattr, 5},
		{t7, ChangeDeleted, 0},
	}
	if len(vs) != len(want) {
		t.Fatalf("versions %v, want %v", vs, want)
	}
	for i := range want {
		w, g := want[i], vs[i]
		if g.TID != w.TID || g.Change != w.Change || (w.Change != ChangeDeleted && g.Size != w.Size) {
			t.Fatalf("version %d: %+v (%s), want %+v (%s)", i, g, g.Change, w, w.Change)
		}
	}
	ov, err := s.Versions(other)
	if err != nil {
		t.Fatal(err)
	}
	if len(ov) != 2 || ov[0].TID != t1 || ov[1].TID != t5 || ov[1].Size != 21 {
		t.Fatalf("versions of the other object %v, want created at %s and written at %s", ov, t1, t5)
	}
	if v, ok, err := s.VersionAt(a, t3+1); err != nil || !ok || v.TID != t3 {
		t.Fatalf("version of a at t3+1: %+v %v %v", v, ok, err)
	}
	if v, ok, err := s.VersionAt(a, t5); err != nil || !ok || v.TID != t4 {
		t.Fatalf("version of a at t5 (only the other object changed): %+v %v %v", v, ok, err)
	}
	if _, ok, _ := s.VersionAt(a, t1-1); ok {
		t.Fatal("a version before the object existed")
	}
	if vs, _ := s.Versions(999999); len(vs) != 0 {
		t.Fatalf("versions of an unknown object: %v", vs)
	}
}

func TestTIDsStrictlyIncreaseAndTrackTheClock(t *testing.T) {
	clk := epoch()
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	id := newFile(t, s, RootID, "f")
	if got := s.LastTID(); got != TIDAt(clk.t) {
		t.Fatalf("the root's transaction is %s, want the clock %s", got, TIDAt(clk.t))
	}
	n := 0
	change := func() { n++; write(t, s, id, []byte{byte(n)}, 0) }

	change()
	clk.add(1500 * time.Millisecond)
	t1 := commit(t, s)
	if t1 != TIDAt(clk.t) {
		t.Fatalf("tid %s does not track the clock %s", t1, TIDAt(clk.t))
	}
	change() // the clock did not move
	t2 := commit(t, s)
	if t2 != t1+TIDGap {
		t.Fatalf("tid with a stopped clock %s, want %s", t2, t1+TIDGap)
	}
	if again := commit(t, s); again != t2 {
		t.Fatalf("a commit with nothing pending made %s", again)
	}
	clk.add(-time.Hour) // the clock steps backwards
	change()
	t3 := commit(t, s)
	if t3 != t2+TIDGap {
		t.Fatalf("tid after the clock stepped back %s, want %s", t3, t2+TIDGap)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk) // reopen with the clock still behind
	defer func() { s.Close() }()
	if s.LastTID() != t3 {
		t.Fatalf("reopened at %s, want %s", s.LastTID(), t3)
	}
	change()
	t4 := commit(t, s)
	if t4 <= t3 {
		t.Fatalf("tid %s after a reopen is not after %s", t4, t3)
	}
	clk.add(2 * time.Hour)
	change()
	t5 := commit(t, s)
	if t5 != TIDAt(clk.t) {
		t.Fatalf("once the clock is ahead again tid %s, want %s", t5, TIDAt(clk.t))
	}
	if !t5.Time().Equal(clk.t) {
		t.Fatalf("TID.Time %v, want %v", t5.Time(), clk.t)
	}
	vs, _ := s.Versions(id)
	for i := 1; i < len(vs); i++ {
		if vs[i].TID <= vs[i-1].TID {
			t.Fatalf("versions out of order: %v", vs)
		}
	}
}
