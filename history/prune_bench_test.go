package history

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Benchmarks of the cleaner (SPEC section 5):
//
//	go test -run xxx -bench Prune -benchtime 1x -timeout 60m ./history/
//
// Both run on one store built once per process: 100,000 files, each
// written 10 times (1,000,000 versions), 1,000 to a directory, 100 bytes
// each (inline records) except every hundredth, which is 8 KiB (a block),
// so that the pass frees blocks and rewrites packs too. The ten rounds of
// writes lie 7 simulated hours apart (an injected clock), each one a
// hundred transactions of a thousand files ten seconds apart: 1,000
// transactions over three days. A pass at the fourth day under
// "1m for 1h, 1h for 1d, 1d forever" collapses each day into its last
// transaction: of each file's ten versions it keeps the three that end a
// day, removing 700,000 records. -short, or ASOF_BENCH_SCALE, scales the
// number of files (see bench_test.go). Each pass runs on a fresh copy of
// the store, made outside the timer.

var prunePolicy = Policy{{Keep: time.Minute, For: time.Hour}, {Keep: time.Hour, For: 24 * time.Hour}, {Keep: 24 * time.Hour, Forever: true}}

const (
	pruneBenchVersions = 10
	pruneBenchRoundGap = 7 * time.Hour
	pruneBenchTxns     = 100 // transactions per round of writes
	pruneBenchBlockGap = 100 // every hundredth file holds a block
)

type pruneBench struct {
	dir      string
	files    int
	versions int
	txns     int
	now      time.Time // the moment the pass runs at
	setup    time.Duration
}

var (
	pruneBenchOnce sync.Once
	pruneBenchFx   *pruneBench
	pruneBenchErr  error
)

// pruneBenchData is version v of file i: unique content, 100 bytes or,
// for every hundredth file, 8 KiB.
func pruneBenchData(buf []byte, i, v int) []byte {
	n := 100
	if i%pruneBenchBlockGap == 0 {
		n = 8 << 10
	}
	p := buf[:n]
	for k := 0; k+8 <= n; k += 8 {
		binary.LittleEndian.PutUint64(p[k:], uint64(i)<<20|uint64(v)<<12|uint64(k))
	}
	for k := n &^ 7; k < n; k++ {
		p[k] = byte(v)
	}
	return p
}

func pruneBenchFixture(b *testing.B) *pruneBench {
	pruneBenchOnce.Do(func() {
		files := scaledCount(100000, 1000)
		start := time.Now()
		dir := fixtureDir("prune")
		t0 := time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC) // a midnight: days are whole grains
		clk := &fakeClock{t: t0}
		s, err := Open(dir, Options{FlushInterval: time.Hour, Clock: clk.now})
		if err != nil {
			pruneBenchErr = err
			return
		}
		fx := &pruneBench{dir: dir, files: files, versions: pruneBenchVersions}
		ids := make([]ObjID, files)
		batch := max(1, files/pruneBenchTxns)
		buf := make([]byte, 8<<10)
		var dirID ObjID
		for v := 0; v < pruneBenchVersions && err == nil; v++ {
			clk.t = t0.Add(time.Duration(v) * pruneBenchRoundGap)
			for i := 0; i < files && err == nil; i++ {
				p := pruneBenchData(buf, i, v)
				err = s.Update(func(tx *Tx) error {
					if v == 0 {
						if i%1000 == 0 {
							var err error
							if dirID, err = tx.NewObject(Inode{Kind: KindDir, Mode: 0o755, Nlink: 2}); err != nil {
								return err
							}
							if err := tx.SetDirent(RootID, fmt.Sprintf("d%06d", i/1000), dirID, KindDir); err != nil {
								return err
							}
						}
						id, err := tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1})
						if err != nil {
							return err
						}
						ids[i] = id
						if err := tx.SetDirent(dirID, fmt.Sprintf("f%06d", i), id, KindFile); err != nil {
							return err
						}
					}
					return tx.WriteAt(ids[i], p, 0)
				})
				if err == nil && ((i+1)%batch == 0 || i == files-1) {
					clk.add(10 * time.Second)
					_, err = s.Commit()
					fx.txns++
				}
			}
		}
		if cerr := s.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			pruneBenchErr = err
			return
		}
		// Every day the writes touched has ended and is more than a day
		// old: each collapses into its last transaction.
		fx.now = t0.Add(4 * 24 * time.Hour)
		fx.setup = time.Since(start)
		pruneBenchFx = fx
		b.Logf("prune fixture: %d files x %d versions in %d transactions, %d MB on disk, built in %v",
			files, pruneBenchVersions, fx.txns, storeBytes(dir)>>20, fx.setup.Round(time.Millisecond))
	})
	if pruneBenchErr != nil {
		b.Fatal(pruneBenchErr)
	}
	return pruneBenchFx
}

// copyStore copies a closed store's directory, outside any timer.
func copyStore(b *testing.B, src string) string {
	b.Helper()
	dst := filepath.Join(b.TempDir(), "store")
	copyTree(b, src, dst, nil)
	return dst
}

func (fx *pruneBench) open(b *testing.B, dir string) *Store {
	b.Helper()
	now := fx.now
	return benchOpen(b, dir, Options{Clock: func() time.Time { return now }})
}

// procStatus reads a "Vm..." line of /proc/self/status, in bytes; -1 if
// unknown.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return -1
			}
			return n << 10
		}
	}
	return -1
}

// memPeak samples the Go heap and the memory the runtime holds from the
// system every 10 ms until stopped.
type memPeak struct {
	stop           chan struct{}
	done           chan struct{}
	heapInuse, sys uint64
}

func startMemPeak() *memPeak {
	m := &memPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		var ms runtime.MemStats
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			m.heapInuse = max(m.heapInuse, ms.HeapInuse)
			m.sys = max(m.sys, ms.Sys)
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memPeak) end() {
	close(m.stop)
	<-m.done
}

// BenchmarkPrune times one pass of the cleaner over the fixture and
// reports what it removed and the memory it took: the Go heap in use and
// the memory the runtime got from the system (peaks sampled every 10 ms),
// and the process's peak resident set (VmHWM, reset before the pass), which
// also counts the index's memory-mapped pages the pass touched.
func BenchmarkPrune(b *testing.B) {
	files := scaledCount(100000, 1000)
	b.Run(fmt.Sprintf("%s-files-%s-versions", countName(files), countName(files*pruneBenchVersions)), func(b *testing.B) {
		fx := pruneBenchFixture(b)
		var secs float64
		var tot PruneReport
		var heap, sys uint64
		var rss, rssGrowth int64 = -1, -1
		for n := 0; n < b.N; n++ {
			b.StopTimer()
			dir := copyStore(b, fx.dir)
			s := fx.open(b, dir)
			runtime.GC()
			hwmReset := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
			rss0 := procStatus("VmRSS")
			mp := startMemPeak()
			start := time.Now()
			b.StartTimer()
			rep, err := s.Prune(prunePolicy, PruneOptions{})
			b.StopTimer()
			secs += time.Since(start).Seconds()
			mp.end()
			if err != nil {
				b.Fatal(err)
			}
			heap, sys = max(heap, mp.heapInuse), max(sys, mp.sys)
			if hwm := procStatus("VmHWM"); hwmReset && hwm > 0 && rss0 > 0 {
				rss, rssGrowth = max(rss, hwm), max(rssGrowth, hwm-rss0)
			}
			tot.Moments += rep.Moments
			tot.Records += rep.Records
			tot.Versions += rep.Versions
			tot.Blocks += rep.Blocks
			tot.BlockBytes += rep.BlockBytes
			tot.Packs += rep.Packs
			tot.Segments += rep.Segments
			tot.StoredBefore += rep.StoredBefore
			tot.StoredAfter += rep.StoredAfter
			if n == 0 {
				b.Logf("pass: %+v in %v", *rep, time.Since(start).Round(time.Millisecond))
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(dir)
		}
		N := float64(b.N)
		b.ReportMetric(secs/N, "prune-s")
		b.ReportMetric(float64(tot.Records)/N, "records-removed")
		b.ReportMetric(float64(tot.Versions)/N, "versions-merged")
		b.ReportMetric(float64(tot.Moments)/N, "moments-thinned")
		b.ReportMetric(float64(tot.Blocks)/N, "blocks-freed")
		b.ReportMetric(float64(tot.Records)/secs, "records/s")
		b.ReportMetric(float64(tot.StoredBefore)/N/1e6, "stored-before-MB")
		b.ReportMetric(float64(tot.StoredAfter)/N/1e6, "stored-after-MB")
		b.ReportMetric(float64(heap)/1e6, "peak-heap-inuse-MB")
		b.ReportMetric(float64(sys)/1e6, "peak-go-sys-MB")
		if rss >= 0 {
			b.ReportMetric(float64(rss)/1e6, "peak-rss-MB")
			b.ReportMetric(float64(rssGrowth)/1e6, "rss-growth-MB")
		}
	})
}

// latHist is a log-scale histogram of latencies (buckets 2% apart), so
// millions of reads cost no memory.
type latHist struct {
	n      int64
	counts []int64
	max    time.Duration
}

const latBase = 1.02

func (h *latHist) add(d time.Duration) {
	i := 0
	if d > 1 {
		i = int(math.Log(float64(d)) / math.Log(latBase))
	}
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]int64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	h.n++
	h.max = max(h.max, d)
}

func (h *latHist) merge(o *latHist) {
	for i, c := range o.counts {
		if i >= len(h.counts) {
			h.counts = append(h.counts, make([]int64, i+1-len(h.counts))...)
		}
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile is the upper end of the bucket holding the q-th latency.
func (h *latHist) quantile(q float64) time.Duration {
	want := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= want && c > 0 {
			return min(time.Duration(math.Pow(latBase, float64(i+1))), h.max)
		}
	}
	return h.max
}

// readLoad reads random files live from readers goroutines, each read
// followed by a pause of pause, until stop is closed.
func readLoad(b *testing.B, s *Store, ids []ObjID, readers int, pause time.Duration, stop <-chan struct{}) *latHist {
	var wg sync.WaitGroup
	hists := make([]*latHist, readers)
	errs := make(chan error, readers)
	for g := 0; g < readers; g++ {
		hists[g] = &latHist{}
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 99))
			p := make([]byte, 16<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := r.IntN(len(ids))
				start := time.Now()
				n, err := s.ReadAt(ids[i], p, 0, Live)
				hists[g].add(time.Since(start))
				if err != nil || n == 0 {
					errs <- fmt.Errorf("read of file %d: %d bytes, %v", i, n, err)
					return
				}
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	h := &latHist{}
	for _, x := range hists {
		h.merge(x)
	}
	return h
}

// fileIDs lists the fixture's files in name order.
func fileIDs(b *testing.B, s *Store) []ObjID {
	b.Helper()
	var dirs []ObjID
	if err := s.ReadDir(RootID, "", Live, func(_ string, id ObjID, _ Kind) bool { dirs = append(dirs, id); return true }); err != nil {
		b.Fatal(err)
	}
	var ids []ObjID
	for _, d := range dirs {
		if err := s.ReadDir(d, "", Live, func(_ string, id ObjID, _ Kind) bool { ids = append(ids, id); return true }); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

// BenchmarkReadDuringPrune: live reads (Store.ReadAt of a random file)
// from 2 goroutines, each pausing 100 µs between reads, first on the idle
// store for a few seconds (after one read of every file), then while one
// pass of the cleaner runs over it. It reports the p50 and p99 read latency of both phases, and how
// long the pass took with the reads going on.
func BenchmarkReadDuringPrune(b *testing.B) {
	files := scaledCount(100000, 1000)
	idle := 5 * time.Second
	if testing.Short() || benchScale() < 0.1 {
		idle = time.Second
	}
	const readers, pause = 2, 100 * time.Microsecond
	b.Run(fmt.Sprintf("%s-files/readers=%d", countName(files), readers), func(b *testing.B) {
		fx := pruneBenchFixture(b)
		base, during := &latHist{}, &latHist{}
		var secs float64
		for n := 0; n < b.N; n++ {
			b.StopTimer()
			dir := copyStore(b, fx.dir)
			s := fx.open(b, dir)
			ids := fileIDs(b, s)
			if len(ids) != fx.files {
				b.Fatalf("%d files listed, %d written", len(ids), fx.files)
			}
			// Every file once, so that neither phase pays for first
			// touches of the index's pages.
			p := make([]byte, 16<<10)
			for _, id := range ids {
				if _, err := s.ReadAt(id, p, 0, Live); err != nil {
					b.Fatal(err)
				}
			}
			stop := make(chan struct{})
			time.AfterFunc(idle, func() { close(stop) })
			base.merge(readLoad(b, s, ids, readers, pause, stop))
			stop = make(chan struct{})
			b.StartTimer()
			var rep *PruneReport
			var perr error
			start := time.Now()
			go func() {
				defer close(stop)
				rep, perr = s.Prune(prunePolicy, PruneOptions{})
			}()
			during.merge(readLoad(b, s, ids, readers, pause, stop))
			secs += time.Since(start).Seconds()
			b.StopTimer()
			if perr != nil {
				b.Fatal(perr)
			}
			if n == 0 {
				b.Logf("pass with reads going on: %d records removed in %v", rep.Records, time.Since(start).Round(time.Millisecond))
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(dir)
		}
		us := func(d time.Duration) float64 { return float64(d) / 1e3 }
		b.Logf("idle: %d reads, p50 %v p99 %v p99.9 %v max %v; during the pass: %d reads, p50 %v p99 %v p99.9 %v max %v",
			base.n, base.quantile(0.5), base.quantile(0.99), base.quantile(0.999), base.max,
			during.n, during.quantile(0.5), during.quantile(0.99), during.quantile(0.999), during.max)
		b.ReportMetric(us(base.quantile(0.5)), "idle-p50-us")
		b.ReportMetric(us(base.quantile(0.99)), "idle-p99-us")
		b.ReportMetric(us(during.quantile(0.5)), "prune-p50-us")
		b.ReportMetric(us(during.quantile(0.99)), "prune-p99-us")
		b.ReportMetric(us(during.max), "prune-max-us")
		b.ReportMetric(secs/float64(b.N), "prune-s")
	})
}
