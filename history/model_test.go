package history

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// model is the plain in-memory truth the engine is checked against: file
// name -> content, in the root directory.
type model map[string][]byte

func (m model) clone() model {
	c := model{}
	for k, v := range m {
		c[k] = append([]byte(nil), v...)
	}
	return c
}

// workload makes a deterministic stream of operations from a seed, so a
// parent process can recompute what a child it killed was doing.
type workload struct {
	r *rand.Rand
}

type wop struct {
	kind string // write, trunc, remove
	name string
	off  int64
	data []byte
	size int64
}

func newWorkload(seed uint64) *workload { return &workload{r: rand.New(rand.NewPCG(seed, 7))} }

func (w *workload) next() wop {
	name := fmt.Sprintf("f%d", w.r.IntN(8))
	switch n := w.r.IntN(20); {
	case n < 13:
		var size int
		switch w.r.IntN(4) {
		case 0:
			size = 1 + w.r.IntN(100)
		case 1:
			size = 1 + w.r.IntN(8000)
		case 2:
			size = 1 + w.r.IntN(3*ChunkSize)
		default:
			size = ChunkSize // a whole, often aligned, chunk
		}
		data := make([]byte, size)
		fill := byte(w.r.IntN(4)) // 0: zeros (holes), else patterned
		for i := range data {
			if fill != 0 {
				data[i] = byte(w.r.IntN(3)) + fill*10
			}
		}
		off := int64(w.r.IntN(4 * ChunkSize))
		if w.r.IntN(3) == 0 {
			off = int64(w.r.IntN(4)) * ChunkSize
		}
		return wop{kind: "write", name: name, off: off, data: data}
	case n < 17:
		return wop{kind: "trunc", name: name, size: int64(w.r.IntN(5 * ChunkSize))}
	default:
		return wop{kind: "remove", name: name}
	}
}

func (m model) apply(op wop) {
	switch op.kind {
	case "write":
		cur := m[op.name]
		if end := op.off + int64(len(op.data)); end > int64(len(cur)) {
			cur = append(cur, make([]byte, end-int64(len(cur)))...)
		}
		copy(cur[op.off:], op.data)
		m[op.name] = cur
	case "trunc":
		if cur, ok := m[op.name]; ok {
			if op.size <= int64(len(cur)) {
				m[op.name] = cur[:op.size]
			} else {
				m[op.name] = append(cur, make([]byte, op.size-int64(len(cur)))...)
			}
		}
	case "remove":
		delete(m, op.name)
	}
}

// applyStore performs op on the engine the way fs will: names in the root
// directory, a file created on first write.
func applyStore(s *Store, op wop) error {
	return s.Update(func(tx *Tx) error {
		id, _, err := tx.Lookup(RootID, op.name)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		switch op.kind {
		case "write":
			if !exists {
				if id, err = tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1}); err != nil {
					return err
				}
				if err := tx.SetDirent(RootID, op.name, id, KindFile); err != nil {
					return err
				}
			}
			return tx.WriteAt(id, op.data, op.off)
		case "trunc":
			if !exists {
				return nil
			}
			return tx.Truncate(id, uint64(op.size))
		case "remove":
			if !exists {
				return nil
			}
			if err := tx.RemoveDirent(RootID, op.name); err != nil {
				return err
			}
			return tx.EndObject(id)
		}
		return nil
	})
}

// checkAt compares the whole root directory as of at with m.
func checkAt(s *Store, at TID, m model) error {
	var names []string
	ids := map[string]ObjID{}
	err := s.ReadDir(RootID, "", at, func(name string, child ObjID, k Kind) bool {
		names = append(names, name)
		ids[name] = child
		return true
	})
	if err != nil {
		return fmt.Errorf("readdir at %s: %w", at, err)
	}
	var want []string
	for n := range m {
		want = append(want, n)
	}
	sort.Strings(want)
	if fmt.Sprint(names) != fmt.Sprint(want) {
		return fmt.Errorf("at %s: names %v, want %v", at, names, want)
	}
	for _, n := range names {
		ino, err := s.Inode(ids[n], at)
		if err != nil {
			return fmt.Errorf("at %s: inode of %s: %w", at, n, err)
		}
		if ino.Size != uint64(len(m[n])) {
			return fmt.Errorf("at %s: %s has size %d, want %d", at, n, ino.Size, len(m[n]))
		}
		got := make([]byte, ino.Size+10)
		k, err := s.ReadAt(ids[n], got, 0, at)
		if err != nil {
			return fmt.Errorf("at %s: read %s: %w", at, n, err)
		}
		if !bytes.Equal(got[:k], m[n]) {
			return fmt.Errorf("at %s: %s differs from the model (%d bytes read, %d expected)", at, n, k, len(m[n]))
		}
		// A read in the middle, across chunk boundaries.
		if len(m[n]) > 10 {
			off := int64(len(m[n]) / 3)
			p := make([]byte, ChunkSize+7)
			k, err := s.ReadAt(ids[n], p, off, at)
			if err != nil {
				return err
			}
			if !bytes.Equal(p[:k], m[n][off:min(int64(len(m[n])), off+int64(len(p)))]) {
				return fmt.Errorf("at %s: %s partial read at %d differs", at, n, off)
			}
		}
	}
	return nil
}

func TestModelRandomOperations(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	ops := 1500
	if testing.Short() {
		seeds, ops = seeds[:1], 400
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			dir := t.TempDir()
			clk := &fakeClock{t: time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)}
			s := openTest(t, dir, clk)
			w := newWorkload(seed)
			rnd := rand.New(rand.NewPCG(seed, 99))
			m := model{}
			remembered := map[TID]model{}
			for i := 0; i < ops; i++ {
				op := w.next()
				if err := applyStore(s, op); err != nil {
					t.Fatalf("op %d %s: %v", i, op.kind, err)
				}
				m.apply(op)
				if rnd.IntN(10) == 0 {
					clk.add(time.Duration(rnd.IntN(3600)) * time.Second)
					tid := commit(t, s)
					remembered[tid] = m.clone()
				}
				if rnd.IntN(50) == 0 {
					if err := checkAt(s, Live, m); err != nil {
						t.Fatalf("op %d: live: %v", i, err)
					}
				}
				if rnd.IntN(300) == 0 { // reopen: replays the intent log
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					s = openTest(t, dir, clk)
				}
			}
			check := func(s *Store) {
				for tid, mm := range remembered {
					if err := checkAt(s, tid, mm); err != nil {
						t.Fatal(err)
					}
				}
				if err := checkAt(s, Live, m); err != nil {
					t.Fatal(err)
				}
			}
			check(s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, clk)
			check(s)
			s.Close()
			if err := Rebuild(dir); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, clk)
			check(s)
			rep, err := s.Verify(nil)
			if err != nil || !rep.OK() {
				t.Fatalf("verify: %v %v", err, rep)
			}
			s.Close()
		})
	}
}
