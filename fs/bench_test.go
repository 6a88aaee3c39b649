package fs

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

// Benchmarks of whole-tree operations at full scale. They build large stores, so they run
// only with -bench, never in a plain go test. Scale them down with -short
// (1/16) or ASOF_BENCH_SCALE (a factor, e.g. 0.01).
//
//	go test -run xxx -bench . -benchtime 1x ./fs/

// benchScale is the factor applied to the sizes of the benchmarks' trees.
func benchScale(b *testing.B) float64 {
	if s := os.Getenv("ASOF_BENCH_SCALE"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			b.Fatalf("ASOF_BENCH_SCALE=%q: want a positive number", s)
		}
		return v
	}
	if testing.Short() {
		return 1.0 / 16
	}
	return 1
}

func scaled(b *testing.B, n int) int {
	return max(1, int(float64(n)*benchScale(b)))
}

// bigDir is a store with one directory of n entries, as of two moments:
// past, when it had every name, and now, after a tenth of them were
// renamed, a tenth removed and as many added.
type bigDir struct {
	e     *tEnv
	dir   Node
	names []string // the names in the past, all still there now but for the renamed and removed ones
	live  []string // names that exist now
	past  history.TID
}

// dirBytes is the size of a file, or of the files in a directory.
func dirBytes(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	if !fi.IsDir() {
		return fi.Size()
	}
	ents, _ := os.ReadDir(p)
	var n int64
	for _, e := range ents {
		n += dirBytes(filepath.Join(p, e.Name()))
	}
	return n
}

func benchName(i int) string { return fmt.Sprintf("file-%08d.txt", i) }

func newBigDir(b *testing.B, n int) *bigDir {
	b.Helper()
	start := time.Now()
	e := newTEnv(b)
	d := e.mkdir(pRoot, "/big", 0o755)
	bd := &bigDir{e: e, dir: d}
	for i := 0; i < n; i++ {
		name := benchName(i)
		if _, _, err := e.f.Create(pRoot, d, name, 0o644, true); err != nil {
			b.Fatal(err)
		}
		bd.names = append(bd.names, name)
		if i%20000 == 19999 {
			e.commit(time.Millisecond)
		}
	}
	bd.past = e.commit(time.Hour)
	// A tenth renamed, a tenth removed, as many added.
	for i := 0; i < n/10; i++ {
		if err := e.f.Rename(pRoot, d, benchName(10*i), d, "renamed-"+benchName(10*i)); err != nil {
			b.Fatal(err)
		}
		if err := e.f.Remove(pRoot, d, benchName(10*i+1), false); err != nil {
			b.Fatal(err)
		}
		if _, _, err := e.f.Create(pRoot, d, benchName(n+i), 0o644, true); err != nil {
			b.Fatal(err)
		}
	}
	e.commit(time.Hour)
	for i := 0; i < n; i++ {
		if i%10 > 1 {
			bd.live = append(bd.live, benchName(i))
		}
	}
	b.Logf("a directory of %d entries built in %v", n, time.Since(start).Round(time.Millisecond))
	return bd
}

// BenchmarkLookup100k looks up one name in a directory of 100,000 entries,
// live and as of a past moment; the ratio of the two is the cost of time
// travel.
func BenchmarkLookup100k(b *testing.B) {
	n := scaled(b, 100_000)
	bd := newBigDir(b, n)
	f := bd.e.f
	pastDir := Node{Obj: bd.dir.Obj, At: bd.past}
	when := FormatTID(uint64(bd.past))
	var live, past time.Duration
	b.Run("live", func(b *testing.B) {
		r := rand.New(rand.NewPCG(1, 2))
		for b.Loop() {
			if _, err := f.Lookup(pRoot, bd.dir, bd.live[r.IntN(len(bd.live))]); err != nil {
				b.Fatal(err)
			}
		}
		live = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("past", func(b *testing.B) {
		r := rand.New(rand.NewPCG(1, 2))
		for b.Loop() {
			if _, err := f.Lookup(pRoot, pastDir, bd.names[r.IntN(len(bd.names))]); err != nil {
				b.Fatal(err)
			}
		}
		past = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("past-by-name", func(b *testing.B) {
		// name@@WHEN in the live directory: parsing included.
		r := rand.New(rand.NewPCG(1, 2))
		for b.Loop() {
			if _, err := f.Lookup(pRoot, bd.dir, bd.names[r.IntN(len(bd.names))]+"@@"+when); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.Lookup(pRoot, bd.dir, "no-such-name"); Errno(err) != syscall.ENOENT {
				b.Fatal(err)
			}
		}
	})
	if live > 0 {
		b.Logf("lookup in %d entries: live %v, past %v, past/live %.2f", n, live, past, float64(past)/float64(live))
	}
}

// BenchmarkReadDir100k lists a directory of 100,000 entries, live and as of
// a past moment.
func BenchmarkReadDir100k(b *testing.B) {
	n := scaled(b, 100_000)
	bd := newBigDir(b, n)
	f := bd.e.f
	for _, tc := range []struct {
		name string
		dir  Node
		want int
	}{
		{"live", bd.dir, n},
		{"past", Node{Obj: bd.dir.Obj, At: bd.past}, n},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				k := 0
				if err := f.ReadDir(pRoot, tc.dir, "", func(Dirent) bool { k++; return true }); err != nil {
					b.Fatal(err)
				}
				if k != tc.want {
					b.Fatalf("listed %d entries, want %d", k, tc.want)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(tc.want), "ns/entry")
		})
	}
	// Paged as NFS READDIR pages it: 1000 entries a call, resuming after
	// the last name.
	b.Run("live-paged", func(b *testing.B) {
		for b.Loop() {
			after, k := "", 0
			for {
				got := 0
				err := f.ReadDir(pRoot, bd.dir, after, func(d Dirent) bool {
					after = d.Name
					got++
					return got < 1000
				})
				if err != nil {
					b.Fatal(err)
				}
				k += got
				if got < 1000 {
					break
				}
			}
			if k != n {
				b.Fatalf("paged listing has %d entries, want %d", k, n)
			}
		}
	})
}

// BenchmarkClone10kFiles1GiB clones a tree of 10,000 files totalling 1 GiB
// (100 directories of 100 files of 105 KiB or so). The goal is under a
// second and under 1 MiB of stored bytes added. It reports the clone's
// time (ns/op: a clone commits its records itself), what a commit after
// it still finds to do (nothing), and the bytes it added.
func BenchmarkClone10kFiles1GiB(b *testing.B) {
	files := scaled(b, 10_000)
	total := int64(float64(1<<30) * benchScale(b))
	per := int(total / int64(files))
	const perDir = 100
	start := time.Now()
	e := newTEnv(b)
	e.mkdir(pRoot, "/tree", 0o755)
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	buf := make([]byte, per)
	var d Node
	for i := 0; i < files; i++ {
		if i%perDir == 0 {
			d = e.mkdir(pRoot, fmt.Sprintf("/tree/d%03d", i/perDir), 0o755)
		}
		n, _, err := e.f.Create(pRoot, d, fmt.Sprintf("f%05d", i), 0o644, true)
		if err != nil {
			b.Fatal(err)
		}
		rng.Read(buf)
		if _, err := e.f.Write(pRoot, n, buf, 0, false); err != nil {
			b.Fatal(err)
		}
	}
	e.commit(time.Second)
	st0, err := e.f.Stats()
	if err != nil {
		b.Fatal(err)
	}
	log0, idx0 := dirBytes(filepath.Join(e.dir, "log")), dirBytes(filepath.Join(e.dir, "index.db"))
	b.Logf("built %d files, %d MiB logical, %d MiB stored, in %v", files, st0.LogicalBytes>>20, st0.StoredBytes>>20,
		time.Since(start).Round(time.Millisecond))

	var commitTime time.Duration
	i := 0
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.f.Clone(pRoot, "/tree", fmt.Sprintf("/copy%d", i)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		t0 := time.Now()
		e.commit(time.Second) // the clone's records, made durable
		commitTime += time.Since(t0)
		b.StartTimer()
		i++
	}
	b.StopTimer()
	st1, err := e.f.Stats()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(commitTime.Nanoseconds())/float64(b.N), "commit-ns/op")
	b.ReportMetric(float64(st1.StoredBytes-st0.StoredBytes)/float64(b.N), "stored-B/op")
	b.ReportMetric(float64(st1.BlockBytes-st0.BlockBytes)/float64(b.N), "block-B/op")
	// Where the stored bytes went: the transaction log and the index.
	b.ReportMetric(float64(dirBytes(filepath.Join(e.dir, "log"))-log0)/float64(b.N), "log-B/op")
	b.ReportMetric(float64(dirBytes(filepath.Join(e.dir, "index.db"))-idx0)/float64(b.N), "index-B/op")
	b.ReportMetric(float64(files), "files")
	b.ReportMetric(float64(st0.LogicalBytes)/(1<<20), "MiB")
	if st1.LogicalBytes != st0.LogicalBytes*int64(b.N+1) {
		b.Errorf("logical bytes %d after %d clones of %d", st1.LogicalBytes, b.N, st0.LogicalBytes)
	}
	// The copy reads what the source does.
	p := make([]byte, per)
	src := e.resolve(pRoot, fmt.Sprintf("/tree/d%03d/f%05d", (files-1)/perDir, files-1))
	dst := e.resolve(pRoot, fmt.Sprintf("/copy0/d%03d/f%05d", (files-1)/perDir, files-1))
	q := make([]byte, per)
	if k, err := e.f.Read(pRoot, src, p, 0); err != nil || k != per {
		b.Fatal(k, err)
	}
	if k, err := e.f.Read(pRoot, dst, q, 0); err != nil || k != per || string(p) != string(q) {
		b.Fatalf("the copy reads differently: %d %v", k, err)
	}
}
