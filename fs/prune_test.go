package fs

import (
	"fmt"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

// TestModelPruned runs the model-based test's random changes (trees, hard
// links, renames, symlinks, over simulated months), thins history with a
// retention policy, and then checks through the file system what users see:
// every kept moment reads exactly as the model then — by transaction id, by
// time, through name@@ listings, with stable inode numbers — and every
// thinned moment resolves to the first kept moment after it.
func TestModelPruned(t *testing.T) {
	d := 24 * time.Hour
	policy := history.Policy{{Keep: time.Hour, For: d}, {Keep: d, For: 30 * d}, {Keep: 7 * d, Forever: true}}
	seeds, ops := []uint64{5, 6}, 800
	if testing.Short() {
		seeds, ops = seeds[:1], 400
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := runModel(t, seed, ops)
			e := r.e
			rep, err := e.s.Prune(policy, history.PruneOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Moments == 0 || rep.Records == 0 {
				t.Fatalf("nothing thinned: %+v", rep)
			}
			check := func(what string) {
				t.Helper()
				var kept []moment
				for i, mo := range r.moments {
					k, ok, err := e.s.Moment(mo.tid)
					if err != nil || !ok {
						t.Fatalf("%s: Moment(%s): %v %v", what, mo.tid, ok, err)
					}
					if k == mo.tid {
						kept = append(kept, mo)
						continue
					}
					// A thinned moment resolves, in every spelling, to the
					// first kept moment after it.
					j := i + 1
					for j < len(r.moments) && r.moments[j].tid < k {
						if kk, _, _ := e.s.Moment(r.moments[j].tid); kk == r.moments[j].tid {
							t.Fatalf("%s: moment %d reads as %s, past the kept moment %d", what, i, k, j)
						}
						j++
					}
					if j == len(r.moments) || r.moments[j].tid != k {
						t.Fatalf("%s: moment %d reads as %s, which is no moment of the run", what, i, k)
					}
					n, err := e.f.Resolve(pRoot, "/@@"+FormatVersionName(uint64(mo.tid)))
					if err != nil || n.At != k {
						t.Fatalf("%s: /@@ moment %d: %+v %v, want the state at %s", what, i, n, err, k)
					}
				}
				if len(kept) < 5 || len(kept) == len(r.moments) {
					t.Fatalf("%s: %d of %d moments kept", what, len(kept), len(r.moments))
				}
				saved := r.moments
				r.moments, r.thinned = kept, true
				r.verifyAll(what)
				r.moments, r.thinned = saved, false
				t.Logf("%s: %d of %d moments kept, all read back", what, len(kept), len(r.moments))
			}
			check("after prune")
			e.reopen()
			check("after reopen")
			t.Logf("prune: %+v", rep)
		})
	}
}
