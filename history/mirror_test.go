package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/txlog"
	"github.com/asof/asof/history/internal/volume"
)

// The engine's side of mirrors, with the source and the target in one
// process and no network: mirror/ runs the same steps over TCP.

// reconciled counts the records pull ended because the source dropped
// them under the target.
var reconciled int

// pull brings dst up to src in batches of at most maxFrames frames, the
// way mirror's target does, and returns how many blocks crossed.
func pull(t *testing.T, src, dst *Store, maxFrames int) int {
	t.Helper()
	blocks := 0
	for {
		n, more := pullBatch(t, src, dst, maxFrames)
		blocks += n
		if !more {
			return blocks
		}
	}
}

// pullBatch applies one batch; more is false when there was none.
func pullBatch(t *testing.T, src, dst *Store, maxFrames int) (blocks int, more bool) {
	t.Helper()
	b, err := src.MirrorRead(dst.LastTID(), maxFrames, 1<<20)
	if err != nil {
		t.Fatalf("read frames: %v", err)
	}
	dst.SetMirrorBase(b.Base)
	if len(b.Frames) == 0 {
		return 0, false
	}
	a, err := dst.NewApplier()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	missing, err := a.Missing(b.Frames)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range missing {
		data, err := src.ReadBlock(h)
		if err != nil {
			t.Fatalf("block %s: %v", h, err)
		}
		if err := a.PutBlock(h, data); err != nil {
			t.Fatal(err)
		}
		blocks++
	}
	cands, err := a.Candidates(b)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]RecordKey, len(cands))
	for i, c := range cands {
		keys[i] = c.RecordKey
	}
	have, err := src.HasRecords(keys)
	if err != nil {
		t.Fatal(err)
	}
	var gone []Reconcile
	for i, c := range cands {
		if !have[i] {
			gone = append(gone, c)
		}
	}
	reconciled += len(gone)
	if _, err := a.Apply(b, gone); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return blocks, true
}

func openMirror(t *testing.T, dir string, clk *fakeClock, lineage string) *Store {
	t.Helper()
	if err := CreateMirror(dir); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, dir, clk)
	if lineage != "" {
		if err := s.AdoptLineage(lineage); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// sameAt compares what src and dst read as of at, file by file.
func sameAt(src, dst *Store, at TID) error {
	type file struct {
		size uint64
		data string
	}
	read := func(s *Store) (map[string]file, error) {
		out := map[string]file{}
		var names []string
		ids := map[string]ObjID{}
		if err := s.ReadDir(RootID, "", at, func(name string, child ObjID, k Kind) bool {
			names, ids[name] = append(names, name), child
			return true
		}); err != nil {
			return nil, err
		}
		for _, n := range names {
			ino, err := s.Inode(ids[n], at)
			if err != nil {
				return nil, err
			}
			p := make([]byte, ino.Size)
			k, err := s.ReadAt(ids[n], p, 0, at)
			if err != nil {
				return nil, err
			}
			out[n] = file{ino.Size, string(p[:k])}
		}
		return out, nil
	}
	a, err := read(src)
	if err != nil {
		return fmt.Errorf("source at %s: %w", at, err)
	}
	b, err := read(dst)
	if err != nil {
		return fmt.Errorf("mirror at %s: %w", at, err)
	}
	if len(a) != len(b) {
		return fmt.Errorf("at %s: source has %d files, mirror %d", at, len(a), len(b))
	}
	for n, f := range a {
		if g, ok := b[n]; !ok || g != f {
			return fmt.Errorf("at %s: %s differs (source %d bytes, mirror %d, present %v)", at, n, f.size, g.size, ok)
		}
	}
	return nil
}

func momentsOf(t *testing.T, s *Store) []TID {
	t.Helper()
	ts, err := s.momentTxns()
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestMirrorHoldsEveryMomentOfItsSource(t *testing.T) {
	clk := epoch()
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	dstDir := t.TempDir()
	dst := openMirror(t, dstDir, clk, src.Lineage())
	w := newWorkload(11)
	rnd := rand.New(rand.NewPCG(11, 3))
	m := model{}
	remembered := map[TID]model{}
	for i := 0; i < 600; i++ {
		op := w.next()
		if err := applyStore(src, op); err != nil {
			t.Fatal(err)
		}
		m.apply(op)
		if rnd.IntN(8) == 0 {
			clk.add(time.Duration(1+rnd.IntN(60)) * time.Second)
			remembered[commit(t, src)] = m.clone()
		}
		if rnd.IntN(40) == 0 {
			pull(t, src, dst, 1+rnd.IntN(4))
		}
		if rnd.IntN(150) == 0 { // the target restarts
			if err := dst.Close(); err != nil {
				t.Fatal(err)
			}
			dst = openTest(t, dstDir, clk)
		}
	}
	remembered[commit(t, src)] = m.clone()
	pull(t, src, dst, 3)
	defer func() { dst.Close() }()
	if dst.LastTID() != src.LastTID() {
		t.Fatalf("mirror at %s, source at %s", dst.LastTID(), src.LastTID())
	}
	check := func() {
		for tid, mm := range remembered {
			if err := checkAt(dst, tid, mm); err != nil {
				t.Fatalf("mirror: %v", err)
			}
		}
		if err := checkAt(dst, Live, m); err != nil {
			t.Fatalf("mirror live: %v", err)
		}
		if fmt.Sprint(momentsOf(t, src)) != fmt.Sprint(momentsOf(t, dst)) {
			t.Fatalf("moments differ")
		}
	}
	check()
	if err := dst.Update(func(tx *Tx) error { return nil }); !errors.Is(err, ErrReadOnly) || !errors.Is(err, syscall.EROFS) {
		t.Fatalf("a change on a mirror: %v, want ErrReadOnly", err)
	}
	dst.Close()
	if err := Rebuild(dstDir); err != nil {
		t.Fatal(err)
	}
	dst = openTest(t, dstDir, clk)
	check()
	rep, err := dst.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify the mirror: %v %v", err, rep)
	}
}

// A mirror writes a batch's frames with one sync, so a crash can damage
// any of them, with intact ones after: the mirror opens cutting them all
// from the first damaged one, and the next pull brings them again.
func TestMirrorBatchDamagedBeforeItsIndexIsPulledAgain(t *testing.T) {
	clk := epoch()
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	var moments []TID
	for i := range 6 {
		id := newFile(t, src, RootID, fmt.Sprintf("f%d", i))
		write(t, src, id, randData(uint64(i), 40<<10), 0)
		clk.add(time.Second)
		moments = append(moments, commit(t, src))
	}
	dstDir := t.TempDir()
	dst := openMirror(t, dstDir, clk, src.Lineage())
	pull(t, src, dst, 100)
	dst.Close()
	// As if the process died before the index had the batch: no index,
	// and the batch's fourth frame damaged, the ones after it intact.
	var locs []txlog.Loc
	logDir := filepath.Join(dstDir, "log")
	if err := txlog.Scan(logDir, txlog.Loc{}, func(_ *Txn, loc, _ txlog.Loc) error { locs = append(locs, loc); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(locs) != 7 {
		t.Fatalf("the mirror's log holds %d frames, want 7", len(locs))
	}
	seg := txlog.SegName(logDir, locs[4].Seg)
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	b[locs[4].Off+20] ^= 1
	if err := os.WriteFile(seg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dstDir, "index.db")); err != nil {
		t.Fatal(err)
	}
	dst = openTest(t, dstDir, clk)
	defer func() { dst.Close() }()
	if dst.LastTID() != moments[2] {
		t.Fatalf("the damaged mirror opened at %s, want %s (the frame before the damage)", dst.LastTID(), moments[2])
	}
	pull(t, src, dst, 100)
	for _, at := range append(moments, Live) {
		if err := sameAt(src, dst, at); err != nil {
			t.Fatalf("at %s: %v", at, err)
		}
	}
	rep, err := dst.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify the mirror: %v %v", err, rep)
	}
}

func TestMirrorFetchesOnlyBlocksItLacks(t *testing.T) {
	clk := epoch()
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	dst := openMirror(t, t.TempDir(), clk, src.Lineage())
	defer dst.Close()
	data := randData(5, 40*ChunkSize)
	a := newFile(t, src, RootID, "a")
	write(t, src, a, data, 0)
	commit(t, src)
	if n := pull(t, src, dst, 10); n != 40 {
		t.Fatalf("first pull fetched %d blocks, want 40", n)
	}
	// A copy of the same data, and a change of one chunk: one block more.
	b := newFile(t, src, RootID, "b")
	write(t, src, b, data, 0)
	write(t, src, a, []byte("changed"), 3*ChunkSize+5)
	clk.add(time.Second)
	commit(t, src)
	if n := pull(t, src, dst, 10); n != 1 {
		t.Fatalf("second pull fetched %d blocks, want 1", n)
	}
	if err := sameAt(src, dst, Live); err != nil {
		t.Fatal(err)
	}
}

func TestMirrorLineage(t *testing.T) {
	clk := epoch()
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	if !validUUID(src.Lineage()) {
		t.Fatalf("a new store's lineage %q", src.Lineage())
	}
	if !validUUID(src.StoreID()) || src.StoreID() == src.Lineage() {
		t.Fatalf("a new store's id %q (lineage %q)", src.StoreID(), src.Lineage())
	}
	other := openTest(t, t.TempDir(), clk)
	defer other.Close()
	if other.Lineage() == src.Lineage() || other.StoreID() == src.StoreID() {
		t.Fatal("two stores share a lineage or a store id")
	}
	// A store made before LINEAGE existed gets one at its first open and
	// keeps it.
	dir := t.TempDir()
	s := openTest(t, dir, clk)
	s.Close()
	os.Remove(filepath.Join(dir, lineageFile))
	s = openTest(t, dir, clk)
	lin := s.Lineage()
	s.Close()
	s = openTest(t, dir, clk)
	if s.Lineage() != lin || !validUUID(lin) {
		t.Fatalf("lineage %q after a reopen, was %q", s.Lineage(), lin)
	}
	s.Close()
	if err := CreateMirror(dir); err == nil {
		t.Fatal("a store became a mirror")
	}

	// A store whose LINEAGE has no store line (made before it existed)
	// takes its lineage as its store id: its volume labels name that.
	if err := os.WriteFile(filepath.Join(dir, lineageFile), []byte("asof lineage\nid "+lin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, clk)
	if s.StoreID() != lin || s.Lineage() != lin {
		t.Fatalf("an older LINEAGE: store id %q, lineage %q, want both %q", s.StoreID(), s.Lineage(), lin)
	}
	s.Close()
	if b, err := os.ReadFile(filepath.Join(dir, lineageFile)); err != nil || string(b) != "asof lineage\nid "+lin+"\nstore "+lin+"\n" {
		t.Fatalf("LINEAGE after the upgrade: %q, %v", b, err)
	}

	dstDir := t.TempDir()
	dst := openMirror(t, dstDir, clk, "")
	if dst.Lineage() != "" || !dst.Mirror() {
		t.Fatalf("a new mirror: lineage %q, mirror %v", dst.Lineage(), dst.Mirror())
	}
	dstID := dst.StoreID()
	if !validUUID(dstID) || dstID == src.StoreID() {
		t.Fatalf("a new mirror's store id %q (its source's %q)", dstID, src.StoreID())
	}
	if err := dst.Promote(); err == nil {
		t.Fatal("an empty mirror was promoted")
	}
	if err := dst.AdoptLineage(src.Lineage()); err != nil {
		t.Fatal(err)
	}
	id := newFile(t, src, RootID, "f")
	write(t, src, id, []byte("one"), 0)
	commit(t, src)
	pull(t, src, dst, 10)
	if err := dst.AdoptLineage(other.Lineage()); err == nil {
		t.Fatal("a mirror took another lineage")
	}
	dst.Close()
	dst = openTest(t, dstDir, clk)
	if !dst.Mirror() || dst.Lineage() != src.Lineage() {
		t.Fatalf("reopened mirror: mirror %v lineage %q", dst.Mirror(), dst.Lineage())
	}
	if err := dst.Promote(); err != nil {
		t.Fatal(err)
	}
	if dst.Mirror() || dst.Lineage() == src.Lineage() || dst.StoreID() != dstID {
		t.Fatalf("promoted: mirror %v, lineage %q (source %q), store id %q (was %q)", dst.Mirror(), dst.Lineage(), src.Lineage(), dst.StoreID(), dstID)
	}
	// Promoted: writable, and its transactions go on after its source's.
	g := newFile(t, dst, RootID, "g")
	write(t, dst, g, []byte("mine"), 0)
	if tid := commit(t, dst); tid <= src.LastTID() {
		t.Fatalf("promoted store committed %s, not after %s", tid, src.LastTID())
	}
	dst.Close()
	dst = openTest(t, dstDir, clk)
	defer dst.Close()
	if dst.Mirror() {
		t.Fatal("promotion did not last")
	}
	if string(readAll(t, dst, g, Live)) != "mine" || string(readAll(t, dst, id, Live)) != "one" {
		t.Fatal("promoted store lost data")
	}
}

// A mirror's volumes are its own: its source's volume is another store's
// though the two share a lineage; blocks it receives are placed on its
// volumes as a commit's are; and a promote, which changes its lineage,
// keeps them.
func TestMirrorVolumesAreItsOwn(t *testing.T) {
	smallPacks(t)
	ctx := context.Background()
	clk := epoch()
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	srcVol := mkdir(t)
	if err := src.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: srcVol}); err != nil {
		t.Fatal(err)
	}
	var ids []ObjID
	for i := range 4 {
		id := newFile(t, src, RootID, fmt.Sprintf("f%d", i))
		write(t, src, id, randData(uint64(i), 200<<10), 0)
		clk.add(time.Second)
		commit(t, src)
		ids = append(ids, id)
	}
	if err := pass(t, src, true); err != nil {
		t.Fatal(err)
	}
	if len(usage(t, src)[1]) == 0 {
		t.Fatal("no pack moved to the source's volume")
	}

	dstDir := t.TempDir()
	dst := openMirror(t, dstDir, clk, src.Lineage())
	if err := dst.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: srcVol}); !errors.Is(err, volume.ErrForeign) {
		t.Fatalf("a mirror added its source's volume: %v", err)
	}
	dstVol := mkdir(t)
	if err := dst.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: dstVol}); err != nil {
		t.Fatal(err)
	}
	if pull(t, src, dst, 2) == 0 {
		t.Fatal("no block crossed")
	}
	if err := pass(t, dst, true); err != nil {
		t.Fatal(err)
	}
	if len(usage(t, dst)[1]) == 0 {
		t.Fatal("no pack the mirror received moved to its volume")
	}
	noStrays(t, dst)
	if err := sameAt(src, dst, Live); err != nil {
		t.Fatal(err)
	}
	if err := dst.Promote(); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	dst = openTest(t, dstDir, clk)
	defer dst.Close()
	infos, err := dst.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[1].State != "active" {
		t.Fatalf("the promoted store's volumes: %+v", infos)
	}
	for i, id := range ids {
		if !bytes.Equal(readAll(t, dst, id, Live), randData(uint64(i), 200<<10)) {
			t.Fatalf("file %d differs on the promoted store", i)
		}
	}
	rep, err := dst.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify of the promoted store: %v %v", err, rep)
	}
}

// A source whose cleaner thinned history the target had not received, or
// had received in part, before it pulls again.
func TestMirrorSourcePrunedPastLaggingTarget(t *testing.T) {
	reconciled = 0
	defer func() {
		if reconciled == 0 {
			t.Error("no seed had the target hold a record its source dropped")
		}
	}()
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)}
			src := openTest(t, t.TempDir(), clk)
			defer src.Close()
			dst := openMirror(t, t.TempDir(), clk, src.Lineage())
			defer func() { dst.Close() }()
			w := newWorkload(seed)
			rnd := rand.New(rand.NewPCG(seed, 5))
			m := model{}
			remembered := map[TID]model{}
			seen := map[TID]model{} // moments the target pulled before the source thinned them
			observed := map[TID]bool{}
			policy := Policy{{Keep: time.Hour, Forever: true}}
			for round := 0; round < 6; round++ {
				for i := 0; i < 120; i++ {
					op := w.next()
					if err := applyStore(src, op); err != nil {
						t.Fatal(err)
					}
					m.apply(op)
					if rnd.IntN(4) == 0 {
						clk.add(time.Duration(1+rnd.IntN(20)) * time.Minute)
						remembered[commit(t, src)] = m.clone()
					}
					if rnd.IntN(60) == 0 {
						pull(t, src, dst, 1+rnd.IntN(3))
						for _, tid := range momentsOf(t, dst) {
							if _, ok := observed[tid]; ok {
								continue
							}
							observed[tid] = true
							if src.snap(tid) == tid {
								seen[tid] = remembered[tid]
							}
						}
					}
				}
				remembered[commit(t, src)] = m.clone()
				clk.add(2 * time.Hour)
				if _, err := src.Prune(policy, PruneOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			pull(t, src, dst, 2)
			if err := sameAt(src, dst, Live); err != nil {
				t.Fatalf("live: %v", err)
			}
			for _, tid := range momentsOf(t, dst) {
				if want, ok := seen[tid]; ok {
					// Received before the source thinned it: it reads as
					// it did then.
					if want != nil && dst.snap(tid) == tid {
						if err := checkAt(dst, tid, want); err != nil {
							t.Fatalf("a moment the target had: %v", err)
						}
					}
					continue
				}
				if err := sameAt(src, dst, tid); err != nil {
					t.Fatalf("a moment received after the source thinned it: %v", err)
				}
			}
			for _, tid := range momentsOf(t, src) {
				if src.snap(tid) != tid {
					continue // thinned: the target may hold it as it was
				}
				if err := sameAt(src, dst, tid); err != nil {
					t.Logf("source ranges %v last %s; mirror ranges %v last %s", src.collapsed(), src.LastTID(), dst.collapsed(), dst.LastTID())
					t.Fatalf("a moment the source kept: %v", err)
				}
			}
			rep, err := dst.Verify(nil)
			if err != nil || !rep.OK() {
				t.Fatalf("verify the mirror: %v %v", err, rep)
			}
		})
	}
}

// A target with a retention of its own thins what it received by its own
// policy; its cleaner's frames never take an id its source mints later.
func TestMirrorOwnRetention(t *testing.T) {
	clk := &fakeClock{t: time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)}
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	dst := openMirror(t, t.TempDir(), clk, src.Lineage())
	defer dst.Close()
	w := newWorkload(21)
	m := model{}
	remembered := map[TID]model{}
	policy := Policy{{Keep: time.Hour, Forever: true}}
	for i := 0; i < 800; i++ {
		op := w.next()
		if err := applyStore(src, op); err != nil {
			t.Fatal(err)
		}
		m.apply(op)
		if i%5 == 0 {
			clk.add(7 * time.Minute)
			remembered[commit(t, src)] = m.clone()
		}
		if i%50 == 0 {
			pull(t, src, dst, 4)
			if _, err := dst.Prune(policy, PruneOptions{}); err != nil && !errors.Is(err, ErrMirrorNoRoom) {
				t.Fatal(err)
			}
		}
	}
	remembered[commit(t, src)] = m.clone()
	pull(t, src, dst, 4)
	if _, err := dst.Prune(policy, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	src.Prune(nil, PruneOptions{})
	if len(momentsOf(t, src)) != len(remembered)+1 { // and the root's
		t.Fatalf("the source kept %d moments of %d", len(momentsOf(t, src)), len(remembered))
	}
	var kept []TID
	for _, tid := range momentsOf(t, dst) {
		if dst.snap(tid) == tid {
			kept = append(kept, tid)
		}
	}
	if len(kept) >= len(remembered) {
		t.Fatalf("the target kept %d moments of %d: its policy thinned nothing", len(kept), len(remembered))
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i] < kept[j] })
	for _, tid := range kept {
		if remembered[tid] == nil {
			continue // the root's
		}
		if err := checkAt(dst, tid, remembered[tid]); err != nil {
			t.Fatalf("a moment the target kept: %v", err)
		}
	}
	// The source goes on; the target follows past its own frames.
	op := w.next()
	applyStore(src, op)
	m.apply(op)
	clk.add(time.Minute)
	commit(t, src)
	pull(t, src, dst, 4)
	if err := checkAt(dst, Live, m); err != nil {
		t.Fatal(err)
	}
	rep, err := dst.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify the mirror: %v %v", err, rep)
	}
}

// A target that has part of a range its source collapsed shows the moment
// before the range until the range's end arrives: never a state in between
// that the source never had.
func TestMirrorHidesAPartOfACollapsedRange(t *testing.T) {
	clk := epoch()
	src := openTest(t, t.TempDir(), clk)
	defer src.Close()
	dst := openMirror(t, t.TempDir(), clk, src.Lineage())
	defer dst.Close()
	root := src.LastTID()
	clk.t = clk.t.Truncate(time.Hour).Add(time.Hour + 10*time.Minute)
	a := newFile(t, src, RootID, "a")
	write(t, src, a, []byte("a"), 0)
	commit(t, src)
	clk.add(10 * time.Minute)
	b := newFile(t, src, RootID, "b")
	write(t, src, b, []byte("b"), 0)
	commit(t, src)
	clk.add(10 * time.Minute)
	applyStore(src, wop{kind: "remove", name: "a"})
	commit(t, src)
	clk.add(10 * time.Minute)
	c := newFile(t, src, RootID, "c")
	write(t, src, c, []byte("c"), 0)
	end := commit(t, src)
	clk.add(3 * time.Hour)
	if _, err := src.Prune(Policy{{Keep: time.Hour, Forever: true}}, PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, more := pullBatch(t, src, dst, 1); !more || dst.LastTID() != root {
		t.Fatalf("first batch: at %s, want the root's %s", dst.LastTID(), root)
	}
	for dst.LastTID() < end {
		if _, more := pullBatch(t, src, dst, 1); !more {
			t.Fatal("the source ran out of frames before the range's end")
		}
		if dst.LastTID() == end {
			break
		}
		if err := checkAt(dst, Live, model{}); err != nil {
			t.Fatalf("inside the range, at %s: %v", dst.LastTID(), err)
		}
		if m, ok, err := dst.Moment(Live); err != nil || !ok || m != root {
			t.Fatalf("inside the range the newest moment is %s %v %v, want %s", m, ok, err, root)
		}
	}
	if err := checkAt(dst, Live, model{"b": []byte("b"), "c": []byte("c")}); err != nil {
		t.Fatal(err)
	}
	if err := sameAt(src, dst, end-1); err != nil {
		t.Fatal(err)
	}
}
