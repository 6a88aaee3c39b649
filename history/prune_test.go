package history

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

func TestPolicyValidate(t *testing.T) {
	m, h, d := time.Minute, time.Hour, 24*time.Hour
	good := []Policy{
		nil,
		{{Keep: 30 * time.Second, For: h}, {Keep: m, For: d}, {Keep: h, For: 7 * d}, {Keep: d, For: 30 * d}, {Keep: 7 * d, Forever: true}},
		{{Keep: d, Forever: true}},
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}
	bad := map[string]Policy{
		"rule 1 (0s for 1h0m0s): the grain must be positive":                {{Keep: 0, For: h}},
		"rule 1 (1m0s for 0s): the age must be positive":                    {{Keep: m}},
		"rule 1 (1h0m0s for 1m0s): the grain is longer than the age":        {{Keep: h, For: m}},
		"rule 2 (1h0m0s for 1h0m0s): its age must be greater than rule 1's": {{Keep: m, For: d}, {Keep: h, For: h}},
		"rule 2 (1m30s for 48h0m0s): its grain must be a multiple of rule 1's 1m0s": {
			{Keep: m, For: d}, {Keep: 90 * time.Second, For: 2 * d}},
		"rule 1 (1m0s for forever): only the last rule can keep for ever": {{Keep: m, Forever: true}, {Keep: h, For: d}},
	}
	for want, p := range bad {
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: got %v, want %q", p, err, want)
		}
	}
}

// keptOracle decides kept moments the way SPEC section 5 words it, grain by
// grain rather than transaction by transaction: for each transaction's age,
// the rule whose window holds it; the grain of that rule holding it; kept
// when it is the newest transaction of that grain, the grain has not ended,
// or it is the newest of all.
func keptOracle(txns []TID, p Policy, now time.Time) map[TID]bool {
	kept := map[TID]bool{}
	grainOf := map[TID][2]int64{} // txn -> grain start, grain length
	for _, t := range txns {
		age := now.Sub(t.Time())
		var g time.Duration
		var windowStart time.Duration
		for _, r := range p {
			if r.Forever || age < r.For {
				g = r.Keep
				break
			}
			windowStart = r.For
		}
		_ = windowStart
		if g == 0 {
			continue // past every window: gone
		}
		start := t.Time().Truncate(g) // epoch-aligned in UTC
		grainOf[t] = [2]int64{start.UnixNano(), int64(g)}
		if !start.Add(g).Before(now) && !start.Add(g).Equal(now) {
			kept[t] = true // the grain is still running
		}
	}
	// The newest transaction of each grain.
	for i, t := range txns {
		gr, ok := grainOf[t]
		if !ok {
			continue
		}
		end := gr[0] + gr[1]
		if i == len(txns)-1 || int64(txns[i+1]) >= end {
			kept[t] = true
		}
	}
	if len(txns) > 0 {
		kept[txns[len(txns)-1]] = true
	}
	return kept
}

// TestPruneModel drives random changes spread over simulated days, with the
// model recorded at every transaction, prunes twice under a policy, and
// checks every moment: kept ones read exactly as the model then, collapsed
// ones as the model at their grain's end; the blocks left are exactly the
// ones the kept states need; verify, rebuild and reopen agree.
func TestPruneModel(t *testing.T) {
	m, h, d := time.Minute, time.Hour, 24*time.Hour
	policies := []Policy{
		{{Keep: m, For: h}, {Keep: h, For: d}, {Keep: d, Forever: true}},
		{{Keep: 10 * time.Second, For: 10 * m}, {Keep: h, For: 2 * d}}, // older history goes
	}
	seeds := []uint64{1, 2, 3, 4}
	ops := 700
	if testing.Short() {
		seeds, ops = seeds[:2], 300
	}
	defer func(s, p int64) { txlog.SegmentSize, pack.MaxSize = s, p }(txlog.SegmentSize, pack.MaxSize)
	txlog.SegmentSize, pack.MaxSize = 16<<10, 1<<20 // many segments and packs to rewrite
	for _, seed := range seeds {
		p := policies[int(seed)%len(policies)]
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			dir := t.TempDir()
			clk := &fakeClock{t: time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)}
			s := openTest(t, dir, clk)
			defer func() { s.Close() }()
			w := newWorkload(seed)
			rnd := rand.New(rand.NewPCG(seed, 5))
			cur := model{}
			states := map[TID]model{}
			var txns []TID
			run := func(n int) {
				for i := 0; i < n; i++ {
					op := w.next()
					if err := applyStore(s, op); err != nil {
						t.Fatalf("op %d: %v", i, err)
					}
					cur.apply(op)
					// Mostly seconds apart, now and then a pause of hours.
					step := time.Duration(1+rnd.IntN(20)) * time.Second
					if rnd.IntN(40) == 0 {
						step = time.Duration(rnd.IntN(12*3600)) * time.Second
					}
					clk.add(step)
					tid := commit(t, s)
					if len(txns) == 0 || txns[len(txns)-1] != tid {
						txns = append(txns, tid)
					}
					states[tid] = cur.clone()
				}
			}
			prune := func() *PruneReport {
				dry, err := s.Prune(p, PruneOptions{DryRun: true})
				if err != nil {
					t.Fatal(err)
				}
				rep, err := s.Prune(p, PruneOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if dry.Records != rep.Records || dry.Versions != rep.Versions || dry.Moments != rep.Moments || dry.Blocks != rep.Blocks {
					t.Fatalf("dry run %+v differs from the pass %+v", dry, rep)
				}
				return rep
			}
			run(ops / 2)
			rep1 := prune()
			clk.add(30 * time.Hour)
			run(ops / 2)
			clk.add(20 * time.Minute)
			rep2 := prune()
			t.Logf("pass 1: %+v", rep1)
			t.Logf("pass 2: %+v", rep2)
			if rep1.Records+rep2.Records == 0 || rep1.Moments+rep2.Moments == 0 {
				t.Fatalf("nothing was pruned")
			}
			kept := keptOracle(txns, p, clk.t)
			check := func(s *Store, what string) {
				t.Helper()
				// The state each transaction's moment reads: its own if
				// kept, else the next kept one's.
				next := TID(0)
				for i := len(txns) - 1; i >= 0; i-- {
					tid := txns[i]
					if kept[tid] {
						next = tid
					}
					want := next
					if want == 0 {
						continue // older than every kept moment: gone
					}
					if err := checkAt(s, tid, states[want]); err != nil {
						t.Fatalf("%s: moment %d of %d (kept %v, reads as %s): %v", what, i, len(txns), kept[tid], want, err)
					}
					if got, ok, err := s.Moment(tid); err != nil || !ok || got != want {
						t.Fatalf("%s: Moment(%s) = %s %v %v, want %s", what, tid, got, ok, err, want)
					}
				}
				if err := checkAt(s, Live, cur); err != nil {
					t.Fatal(err)
				}
			}
			check(s, "after prune")
			var keptTIDs []TID
			for _, tid := range txns {
				if kept[tid] {
					keptTIDs = append(keptTIDs, tid)
				}
			}
			// Every record left is seen by some kept moment (or live),
			// and the blocks left are exactly those records' (verify
			// checks the reference counts against a rebuild).
			needed, err := checkRecordsKept(s, keptTIDs)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Stats(0)
			if err != nil {
				t.Fatal(err)
			}
			if got.BlockBytes > 2*needed+pack.MaxSize {
				t.Fatalf("%d bytes of packs left, the kept states need %d", got.BlockBytes, needed)
			}
			t.Logf("kept %d of %d moments; blocks %d (%d bytes of packs, %d needed); stored %d -> %d; log %d bytes",
				len(keptTIDs), len(txns), got.Blocks, got.BlockBytes, needed, rep1.StoredBefore, rep2.StoredAfter, dirSize(s.logDir()))
			if first := keptTIDs[0]; got.Oldest != first {
				t.Fatalf("oldest %s, want %s", got.Oldest, first)
			}
			rep, err := s.Verify(nil)
			if err != nil || !rep.OK() {
				t.Fatalf("verify: %v %v", err, rep)
			}
			s.Close()
			s = openTest(t, dir, clk)
			check(s, "after reopen")
			s.Close()
			if err := Rebuild(dir); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, clk)
			check(s, "after rebuild")
			// A third pass with nothing new to thin changes nothing kept.
			if _, err := s.Prune(p, PruneOptions{}); err != nil {
				t.Fatal(err)
			}
			check(s, "after a third pass")
		})
	}
}

// TestPruneEmptyPolicy: without a policy nothing is ever destroyed.
func TestPruneEmptyPolicy(t *testing.T) {
	clk := &fakeClock{t: time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)}
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	w := newWorkload(9)
	var tids []TID
	states := map[TID]model{}
	cur := model{}
	for i := 0; i < 50; i++ {
		op := w.next()
		if err := applyStore(s, op); err != nil {
			t.Fatal(err)
		}
		cur.apply(op)
		clk.add(time.Hour)
		tid := commit(t, s)
		tids = append(tids, tid)
		states[tid] = cur.clone()
	}
	clk.add(1000 * time.Hour)
	rep, err := s.Prune(nil, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 0 || rep.Moments != 0 || rep.StoredAfter != rep.StoredBefore {
		t.Fatalf("an empty policy removed something: %+v", rep)
	}
	for _, tid := range tids {
		if err := checkAt(s, tid, states[tid]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Prune(Policy{{Keep: time.Hour, For: time.Minute}}, PruneOptions{}); err == nil {
		t.Fatal("an invalid policy was accepted")
	}
}

// TestPlanMergesRanges: a second pass with coarser grains swallows the
// ranges of the first, and a transaction thinned once stays thinned even
// under a policy that would keep it.
func TestPlanMergesRanges(t *testing.T) {
	sec := func(n int) TID { return TID(int64(n) * int64(time.Second)) }
	var txns []TID
	for i := 1; i <= 300; i += 7 {
		txns = append(txns, sec(i))
	}
	fine := Policy{{Keep: 10 * time.Second, Forever: true}}
	coarse := Policy{{Keep: time.Minute, Forever: true}}
	now := sec(1000)
	all1, _ := fine.plan(txns, nil, now)
	all2, changed := coarse.plan(txns, all1, now)
	for _, c := range all2 {
		if c.To%TID(time.Second) != 0 || c.Lo >= c.To {
			t.Fatalf("bad range %v", c)
		}
	}
	if len(changed) == 0 || len(all2) >= len(all1) {
		t.Fatalf("coarse pass: %d ranges (%d changed), fine pass %d", len(all2), len(changed), len(all1))
	}
	// Every transaction thinned by the fine pass is thinned by the coarse.
	for _, tx := range txns {
		if all1.snap(tx) != tx && all2.snap(tx) == tx {
			t.Fatalf("%s came back", tx)
		}
	}
	// Back to the fine policy: nothing thinned comes back.
	all3, _ := fine.plan(txns, all2, now)
	for _, tx := range txns {
		if all2.snap(tx) != all3.snap(tx) {
			t.Fatalf("%s reads as %s after going back to a finer policy, was %s", tx, all3.snap(tx), all2.snap(tx))
		}
	}
}

// checkRecordsKept checks that every record left is seen by one of the kept
// moments (or is live), and returns the bytes of the blocks the index still
// references (headers included): what the packs must hold at least.
func checkRecordsKept(s *Store, kept []TID) (needed int64, err error) {
	err = s.index.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(index.BucketRec).ForEach(func(k, v []byte) error {
			r, err := index.DecodeRec(k, v)
			if err != nil {
				return err
			}
			if r.Delete == 0 {
				return nil
			}
			i := sort.Search(len(kept), func(i int) bool { return kept[i] >= r.Create })
			if i == len(kept) || kept[i] >= r.Delete {
				return fmt.Errorf("record %d %q [%s, %s) is seen by no kept moment", r.Obj, r.Key, r.Create, r.Delete)
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
			e, err := index.DecodeBlk(v)
			needed += int64(e.Loc.Length) + pack.HdrLen
			return err
		})
	})
	return needed, err
}

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
