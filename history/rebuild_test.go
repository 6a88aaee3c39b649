package history

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	bolt "go.etcd.io/bbolt"
)

func TestIndexRebuildEquivalence(t *testing.T) {
	clk := epoch()
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	w := newWorkload(77)
	rnd := rand.New(rand.NewPCG(77, 1))
	m := model{}
	remembered := map[TID]model{}
	ops := 1200
	if testing.Short() {
		ops = 400
	}
	for i := 0; i < ops; i++ {
		op := w.next()
		if err := applyStore(s, op); err != nil {
			t.Fatal(err)
		}
		m.apply(op)
		if i%97 == 0 { // xattrs and symlinks too
			mustUpdate(t, s, func(tx *Tx) error {
				id, err := tx.NewObject(Inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1})
				if err != nil {
					return err
				}
				if err := tx.SetSymlink(id, fmt.Sprintf("target-%d", i)); err != nil {
					return err
				}
				return tx.SetXattr(RootID, fmt.Sprintf("user.x%d", i%3), []byte(fmt.Sprint(i)))
			})
		}
		if rnd.IntN(8) == 0 {
			clk.add(time.Duration(1+rnd.IntN(600)) * time.Second)
			remembered[commit(t, s)] = m.clone()
		}
	}
	clk.add(time.Second)
	remembered[commit(t, s)] = m.clone()

	fresh, err := s.rebuildInto(filepath.Join(t.TempDir(), "index.db"), s.LastTID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{index.BucketRec, index.BucketVer, index.BucketTxn, index.BucketBlk, index.BucketMeta} {
		diffs, err := compareIndexes(s.index, fresh, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) > 0 {
			t.Errorf("bucket %s differs after a rebuild: %v", b, diffs)
		}
	}
	var n int
	fresh.View(func(tx *bolt.Tx) error { n = tx.Bucket(index.BucketRec).Stats().KeyN; return nil })
	fresh.Close()
	if n < 100 {
		t.Fatalf("the rebuilt index has %d records: the workload made too few", n)
	}

	// Rebuild the store's own index; every moment reads the same, and so
	// does every object's version list.
	versions := map[ObjID]string{}
	for id := RootID; id < s.nextObj; id++ {
		vs, err := s.Versions(id)
		if err != nil {
			t.Fatal(err)
		}
		if len(vs) > 0 {
			versions[id] = fmt.Sprint(vs)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Rebuild(dir); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	defer s.Close()
	for tid, mm := range remembered {
		if err := checkAt(s, tid, mm); err != nil {
			t.Fatalf("after Rebuild: %v", err)
		}
	}
	for id, want := range versions {
		vs, _ := s.Versions(id)
		if fmt.Sprint(vs) != want {
			t.Fatalf("versions of %d after Rebuild: %v, want %s", id, vs, want)
		}
	}
}

// ---- verify, damage and torn tails ----
