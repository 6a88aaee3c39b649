package history

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/record"
)

func TestChangesStreamInOrderAfterSince(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	root := s.LastTID()
	step := func() TID { clk.add(time.Second); return commit(t, s) }
	a := newFile(t, s, RootID, "a")
	write(t, s, a, []byte("v1"), 0)
	t1 := step()
	write(t, s, a, []byte("v2"), 0)
	t2 := step()
	b := newFile(t, s, RootID, "b")
	t3 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "a"); err != nil {
			return err
		}
		return tx.EndObject(a)
	})
	t4 := step()
	write(t, s, b, []byte("pending, not committed"), 0)

	tids := func(xs []*Txn) []TID {
		var out []TID
		for _, x := range xs {
			out = append(out, x.TID)
		}
		return out
	}
	all := txns(t, s, 0)
	if got, want := fmt.Sprint(tids(all)), fmt.Sprint([]TID{root, t1, t2, t3, t4}); got != want {
		t.Fatalf("changes since 0: %s, want %s", got, want)
	}
	// t1 creates a's records; t2 ends its data record and creates a new one.
	has := func(x *Txn, end bool, obj ObjID, key string, create TID) bool {
		for _, op := range x.Ops {
			if (op.Kind == OpEnd) == end && op.Obj == obj && op.Key == key && op.Create == create {
				return true
			}
		}
		return false
	}
	if !has(all[1], false, a, record.KeyInode, t1) || !has(all[1], false, a, record.ChunkKey(0), t1) ||
		!has(all[1], false, RootID, record.DirentKey("a"), t1) {
		t.Fatalf("t1 lacks the creates of a: %+v", all[1].Ops)
	}
	if !has(all[2], true, a, record.ChunkKey(0), t1) || !has(all[2], false, a, record.ChunkKey(0), t2) {
		t.Fatalf("t2 lacks the end and create of a's data: %+v", all[2].Ops)
	}
	if !has(all[4], true, a, record.KeyInode, t1) || !has(all[4], true, a, record.ChunkKey(0), t2) ||
		!has(all[4], true, RootID, record.DirentKey("a"), t1) {
		t.Fatalf("t4 does not end a's records: %+v", all[4].Ops)
	}
	for _, x := range all {
		for _, op := range x.Ops {
			if op.Kind == OpCreate && op.Create != x.TID {
				t.Fatalf("transaction %s creates a record stamped %s", x.TID, op.Create)
			}
			if op.Kind == OpEnd && op.Create >= x.TID {
				t.Fatalf("transaction %s ends a record created at %s", x.TID, op.Create)
			}
		}
	}
	for _, c := range []struct {
		since TID
		want  []TID
	}{
		{t2, []TID{t3, t4}},
		{t2 - 1, []TID{t2, t3, t4}},
		{t2 + 1, []TID{t3, t4}},
		{t4 - 1, []TID{t4}},
		{t4, nil},
		{t4 + 1, nil},
	} {
		if got := tids(txns(t, s, c.since)); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Fatalf("changes since %s: %v, want %v", c.since, got, c.want)
		}
	}
	// A stopping reader gets its error back.
	stop := errors.New("enough")
	n := 0
	if err := s.Changes(0, func(*Txn) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("a reader that stops: %v after %d", err, n)
	}
}

// ---- transaction and object ids ----
