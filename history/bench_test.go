package history

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// Benchmarks of issue 2. Each one reports its own rate with ReportMetric
// (MB/s, objects/s), and the plain os.File baselines live here too, so the
// ratios come out of one run:
//
//	go test -run xxx -bench . -benchtime 1x ./history/
//
// Sizes default to the (1 GiB, 100,000 and 1,000,000 objects,
// 1,000,000 versions). -short, or ASOF_BENCH_SCALE=0.01, scales them down.
// Stores and baseline files live under the test's temporary directory, on
// the same disk. Nothing is dropped from the page cache between writing and
// reading: the read figures are page-cache reads for both the engine and
// os.File.

const mib = 1 << 20

func benchScale() float64 {
	if v := os.Getenv("ASOF_BENCH_SCALE"); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 {
			return f
		}
	}
	if testing.Short() {
		return 1.0 / 64
	}
	return 1
}

// scaledBytes scales n, in whole MiB, at least 4 MiB.
func scaledBytes(n int64) int64 {
	return max(int64(float64(n)*benchScale())/mib*mib, 4*mib)
}

func scaledCount(n, least int) int { return max(int(float64(n)*benchScale()), least) }

func sizeName(n int64) string {
	if n%(1<<30) == 0 {
		return fmt.Sprintf("%dGiB", n>>30)
	}
	return fmt.Sprintf("%dMiB", n>>20)
}

func countName(n int) string {
	switch {
	case n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// fixtures are stores built once per process and removed by TestMain.
var (
	fixtureMu   sync.Mutex
	fixtureDirs []string
)

func fixtureDir(name string) string {
	d, err := os.MkdirTemp("", "asof-bench-"+name+"-")
	if err != nil {
		panic(err)
	}
	fixtureMu.Lock()
	fixtureDirs = append(fixtureDirs, d)
	fixtureMu.Unlock()
	return d
}

func TestMain(m *testing.M) {
	code := m.Run()
	fixtureMu.Lock()
	for _, d := range fixtureDirs {
		os.RemoveAll(d)
	}
	fixtureMu.Unlock()
	os.Exit(code)
}

// seqWriter makes the 1 MiB pieces of a sequential stream: random bytes
// with each 64 KiB chunk stamped with its position, so no two chunks are
// equal and dedup cannot make the engine's job easier than os.File's.
type seqWriter struct{ base, buf []byte }

func newSeqWriter(seed uint64) *seqWriter {
	return &seqWriter{base: randData(seed, mib), buf: make([]byte, mib)}
}

func (w *seqWriter) piece(stream, i int) []byte {
	copy(w.buf, w.base)
	for c := 0; c < mib; c += ChunkSize {
		binary.LittleEndian.PutUint64(w.buf[c:], uint64(stream)<<48|uint64(i)<<16|uint64(c/ChunkSize))
	}
	return w.buf
}

// wchar is how many bytes this process has passed to write calls so far
// (/proc/self/io), for the write amplification of the engine; -1 if unknown.
func wchar() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return -1
}

func benchOpen(b *testing.B, dir string, opts Options) *Store {
	b.Helper()
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour
	}
	s, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchNewFile(b *testing.B, s *Store, dir ObjID, name string) ObjID {
	b.Helper()
	var id ObjID
	err := s.Update(func(tx *Tx) error {
		var err error
		if id, err = tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1}); err != nil {
			return err
		}
		return tx.SetDirent(dir, name, id, KindFile)
	})
	if err != nil {
		b.Fatal(err)
	}
	return id
}

func reportMBps(b *testing.B, bytes int64) {
	b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e6, "MB/s")
}

// ---- sequential write and read, 1 GiB in 1 MiB writes ----

// BenchmarkSeqWrite1GiB: 1 MiB writes into one file, one Commit at the end
// (the sync); the time includes the Commit. MaxPending (256 MiB) makes the
// engine commit early along the way, as it would in service.
// Sub-benchmarks for the chunk size of new stores and the 64 KiB of stores
// made before FORMAT.
func BenchmarkSeqWrite1GiB(b *testing.B) {
	size := scaledBytes(1 << 30)
	for _, cs := range []int{ChunkSize, legacyChunk} {
		b.Run(fmt.Sprintf("%s/chunk=%dKiB", sizeName(size), cs>>10), func(b *testing.B) { benchSeqWrite(b, size, cs) })
	}
}

func benchSeqWrite(b *testing.B, size int64, chunk int) {
	{
		w := newSeqWriter(1)
		var wrote int64
		for n := 0; n < b.N; n++ {
			b.StopTimer()
			dir := filepath.Join(b.TempDir(), "store")
			s := benchOpen(b, dir, Options{ChunkSize: chunk})
			id := benchNewFile(b, s, RootID, "big")
			if _, err := s.Commit(); err != nil {
				b.Fatal(err)
			}
			w0 := wchar()
			b.StartTimer()
			for i := int64(0); i < size/mib; i++ {
				p := w.piece(n, int(i))
				if err := s.Update(func(tx *Tx) error { return tx.WriteAt(id, p, i*mib) }); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.Commit(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			wrote += wchar() - w0
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(dir)
		}
		reportMBps(b, size)
		b.ReportMetric(float64(wrote)/float64(size*int64(b.N)), "written-B/B")
	}
}

// BenchmarkOSFileWrite1GiB: the same bytes to a plain file, one fsync.
func BenchmarkOSFileWrite1GiB(b *testing.B) {
	size := scaledBytes(1 << 30)
	b.Run(sizeName(size), func(b *testing.B) {
		w := newSeqWriter(1)
		for n := 0; n < b.N; n++ {
			b.StopTimer()
			path := filepath.Join(b.TempDir(), "big")
			b.StartTimer()
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			for i := int64(0); i < size/mib; i++ {
				if _, err := f.WriteAt(w.piece(n, int(i)), i*mib); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
			b.StopTimer()
			os.Remove(path)
		}
		reportMBps(b, size)
	})
}

var (
	readFixtureOnce sync.Once
	readStoreDir    string
	readOSPath      string
)

// readFixture writes the 1 GiB file once per process, to a store and to a
// plain file.
func readFixture(b *testing.B, size int64) (string, string) {
	readFixtureOnce.Do(func() {
		start := time.Now()
		readStoreDir = fixtureDir("read")
		s, err := Open(readStoreDir, Options{FlushInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		id := benchNewFile(b, s, RootID, "big")
		readOSPath = filepath.Join(readStoreDir, "plain-file")
		f, err := os.Create(readOSPath)
		if err != nil {
			b.Fatal(err)
		}
		w := newSeqWriter(2)
		for i := int64(0); i < size/mib; i++ {
			p := w.piece(0, int(i))
			if err := s.Update(func(tx *Tx) error { return tx.WriteAt(id, p, i*mib) }); err != nil {
				b.Fatal(err)
			}
			if _, err := f.WriteAt(p, i*mib); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.Logf("read fixture: %s written to a store and a plain file in %v", sizeName(size), time.Since(start).Round(time.Millisecond))
	})
	return readStoreDir, readOSPath
}

// BenchmarkSeqRead1GiB reads the committed file back in 1 MiB reads. The
// page cache is not dropped: the packs are as warm as the plain file of
// BenchmarkOSFileRead1GiB. Every block is still hashed and checked on read.
func BenchmarkSeqRead1GiB(b *testing.B) {
	size := scaledBytes(1 << 30)
	b.Run(sizeName(size), func(b *testing.B) {
		dir, _ := readFixture(b, size)
		s := benchOpen(b, dir, Options{})
		defer s.Close()
		id, _, err := s.Lookup(RootID, "big", Live)
		if err != nil {
			b.Fatal(err)
		}
		at := s.LastTID()
		p := make([]byte, mib)
		want := newSeqWriter(2)
		// Check the content once, outside the timer.
		for i := int64(0); i < size/mib; i += max(1, size/mib/16) {
			if n, err := s.ReadAt(id, p, i*mib, at); err != nil || n != mib || string(p) != string(want.piece(0, int(i))) {
				b.Fatalf("read of MiB %d: %d %v or wrong content", i, n, err)
			}
		}
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			for i := int64(0); i < size/mib; i++ {
				if k, err := s.ReadAt(id, p, i*mib, at); err != nil || k != mib {
					b.Fatalf("read: %d %v", k, err)
				}
			}
		}
		b.StopTimer()
		reportMBps(b, size)
	})
}

// BenchmarkOSFileRead1GiB: the same bytes from a plain file, page cache
// warm.
func BenchmarkOSFileRead1GiB(b *testing.B) {
	size := scaledBytes(1 << 30)
	b.Run(sizeName(size), func(b *testing.B) {
		_, path := readFixture(b, size)
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, mib)
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			for i := int64(0); i < size/mib; i++ {
				if k, err := f.ReadAt(p, i*mib); err != nil || k != mib {
					b.Fatalf("read: %d %v", k, err)
				}
			}
		}
		b.StopTimer()
		reportMBps(b, size)
	})
}

// ---- synchronous writes ----

// BenchmarkSyncWrite1GiB: 1 MiB writes, each made durable (Durable) before
// the next, by one writer or four writers each on its own file, 1 GiB in
// all. The time includes the final Commit that puts the last of the data
// into blocks; every write was durable on return without it.
func BenchmarkSyncWrite1GiB(b *testing.B) {
	size := scaledBytes(1 << 30)
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("%s/writers=%d", sizeName(size), writers), func(b *testing.B) {
			per := size / int64(writers) / mib
			var wrote int64
			for n := 0; n < b.N; n++ {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "store")
				s := benchOpen(b, dir, Options{FlushInterval: time.Second})
				ids := make([]ObjID, writers)
				for g := range ids {
					ids[g] = benchNewFile(b, s, RootID, fmt.Sprintf("w%d", g))
				}
				if _, err := s.Commit(); err != nil {
					b.Fatal(err)
				}
				w0 := wchar()
				b.StartTimer()
				var wg sync.WaitGroup
				errs := make(chan error, writers)
				for g := 0; g < writers; g++ {
					wg.Add(1)
					go func(g int) {
						defer wg.Done()
						w := newSeqWriter(uint64(3 + g))
						for i := int64(0); i < per; i++ {
							p := w.piece(n*8+g, int(i))
							err := s.Update(func(tx *Tx) error { return tx.WriteAt(ids[g], p, i*mib) })
							if err == nil {
								err = s.Durable()
							}
							if err != nil {
								errs <- err
								return
							}
						}
					}(g)
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				if _, err := s.Commit(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				wrote += wchar() - w0
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(dir)
			}
			reportMBps(b, per*mib*int64(writers))
			b.ReportMetric(float64(wrote)/float64(per*mib*int64(writers)*int64(b.N)), "written-B/B")
		})
	}
}

// BenchmarkOSFileSyncWrite1GiB: the same writes to plain files opened
// O_DSYNC, one file per writer.
func BenchmarkOSFileSyncWrite1GiB(b *testing.B) {
	size := scaledBytes(1 << 30)
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("%s/writers=%d", sizeName(size), writers), func(b *testing.B) {
			per := size / int64(writers) / mib
			for n := 0; n < b.N; n++ {
				b.StopTimer()
				dir := b.TempDir()
				b.StartTimer()
				var wg sync.WaitGroup
				errs := make(chan error, writers)
				for g := 0; g < writers; g++ {
					wg.Add(1)
					go func(g int) {
						defer wg.Done()
						f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("w%d", g)), os.O_RDWR|os.O_CREATE|os.O_TRUNC|syscall.O_DSYNC, 0o644)
						if err != nil {
							errs <- err
							return
						}
						defer f.Close()
						w := newSeqWriter(uint64(3 + g))
						for i := int64(0); i < per; i++ {
							if _, err := f.WriteAt(w.piece(n*8+g, int(i)), i*mib); err != nil {
								errs <- err
								return
							}
						}
					}(g)
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir)
			}
			reportMBps(b, per*mib*int64(writers))
		})
	}
}

// ---- many small objects ----

// writeObjects creates count files of size bytes each (unique content),
// 1000 to a directory, one Update per file, as a client creating and
// writing files would. The store's own flusher commits every second.
func writeObjects(b *testing.B, s *Store, count, size int, seed uint64) {
	b.Helper()
	base := randData(seed, size)
	p := make([]byte, size)
	var dir ObjID
	for i := 0; i < count; i++ {
		if i%1000 == 0 {
			err := s.Update(func(tx *Tx) error {
				var err error
				if dir, err = tx.NewObject(Inode{Kind: KindDir, Mode: 0o755, Nlink: 2}); err != nil {
					return err
				}
				return tx.SetDirent(RootID, fmt.Sprintf("d%06d", i/1000), dir, KindDir)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		copy(p, base)
		binary.LittleEndian.PutUint64(p, uint64(i))
		err := s.Update(func(tx *Tx) error {
			id, err := tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1})
			if err != nil {
				return err
			}
			if err := tx.SetDirent(dir, fmt.Sprintf("f%06d", i), id, KindFile); err != nil {
				return err
			}
			return tx.WriteAt(id, p, 0)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func storeBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// BenchmarkSmallFiles: 100,000 files of 4 KiB (create + write), with the
// default 1 s flush committing as it goes and a Commit at the end; the
// time includes that Commit.
func BenchmarkSmallFiles(b *testing.B) {
	count := scaledCount(100000, 1000)
	b.Run(fmt.Sprintf("%s-of-4KiB", countName(count)), func(b *testing.B) {
		var disk int64
		for n := 0; n < b.N; n++ {
			b.StopTimer()
			dir := filepath.Join(b.TempDir(), "store")
			s := benchOpen(b, dir, Options{FlushInterval: time.Second})
			b.StartTimer()
			writeObjects(b, s, count, 4<<10, uint64(n))
			if _, err := s.Commit(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			disk += storeBytes(dir)
			os.RemoveAll(dir)
		}
		b.ReportMetric(float64(count)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
		b.ReportMetric(float64(disk)/float64(count*b.N), "disk-B/object")
	})
}

// BenchmarkPeakHeap1MObjects writes 1,000,000 files of 100 bytes (and, for
// comparison, a tenth as many) with the 1 s flush, sampling the Go heap
// every 10 ms; peak-heap-MB should not grow with the count.
func BenchmarkPeakHeap1MObjects(b *testing.B) {
	full := scaledCount(1000000, 2000)
	for _, count := range []int{full / 10, full} {
		b.Run(countName(count), func(b *testing.B) {
			var peak uint64
			for n := 0; n < b.N; n++ {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "store")
				s := benchOpen(b, dir, Options{FlushInterval: time.Second})
				runtime.GC()
				stop := make(chan struct{})
				sampled := make(chan uint64)
				go func() {
					var ms runtime.MemStats
					var top uint64
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					for {
						runtime.ReadMemStats(&ms)
						top = max(top, ms.HeapAlloc)
						select {
						case <-stop:
							sampled <- top
							return
						case <-t.C:
						}
					}
				}()
				b.StartTimer()
				writeObjects(b, s, count, 100, uint64(n))
				if _, err := s.Commit(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				close(stop)
				peak = max(peak, <-sampled)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(dir)
			}
			b.ReportMetric(float64(peak)/1e6, "peak-heap-MB")
			b.ReportMetric(float64(count)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
		})
	}
}

// ---- as-of lookups against many versions ----

// versionStore is a store holding one file with n versions of its inode,
// one transaction each, a second apart.
type versionStore struct {
	dir   string
	obj   ObjID
	tids  []TID // tids[i] is the transaction of version i (Mtime i)
	setup time.Duration
	how   string
}

// buildVersionsByCommit makes the versions the ordinary way: PutInode and
// Commit, with the fake clock a second on each time.
func buildVersionsByCommit(dir string, n int, clk *fakeClock) (*versionStore, error) {
	start := time.Now()
	s, err := Open(dir, Options{FlushInterval: time.Hour, Clock: clk.now})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	vs := &versionStore{dir: dir, how: "Commit per version"}
	for i := 0; i < n; i++ {
		err := s.Update(func(tx *Tx) error {
			ino := Inode{Kind: KindFile, Mode: 0o644, Nlink: 1, Mtime: int64(i)}
			if i == 0 {
				id, err := tx.NewObject(ino)
				vs.obj = id
				return err
			}
			return tx.PutInode(vs.obj, ino)
		})
		if err != nil {
			return nil, err
		}
		clk.add(time.Second)
		tid, err := s.Commit()
		if err != nil {
			return nil, err
		}
		vs.tids = append(vs.tids, tid)
	}
	vs.setup = time.Since(start)
	return vs, s.Close()
}

// buildVersionsFast makes versions 1..n-1 of the file of a store built by
// buildVersionsByCommit with one version, without a commit each: it encodes
// exactly the frames Commit would write (same ops, notes, intent sequence
// and object high-water mark; TestFastVersionsMatchCommits checks this byte
// for byte), appends them to the log without an fsync per frame, and
// applies them to the index with the engine's own applyTxn, thousands per
// bbolt transaction, with one fsync of everything at the end.
func buildVersionsFast(dir string, n int, clk *fakeClock) (*versionStore, error) {
	start := time.Now()
	vs, err := buildVersionsByCommit(dir, 1, clk)
	if err != nil {
		return nil, err
	}
	vs.how = "frames written directly, applied with applyTxn"
	l, last, err := txlog.Open(filepath.Join(dir, "log"), txlog.Loc{}, txlog.Torn)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	db, err := index.Open(filepath.Join(dir, "index.db"), true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	prev := vs.tids[0]
	const batch = 20000
	for i := 1; i < n; {
		err := db.Update(func(btx *bolt.Tx) error {
			for end := min(n, i+batch); i < end; i++ {
				clk.add(time.Second)
				tid := TIDAt(clk.t)
				ino := Inode{Kind: KindFile, Mode: 0o644, Nlink: 1, Mtime: int64(i)}
				t := &Txn{TID: tid, IntentSeq: last.IntentSeq + uint64(i), ObjHigh: last.ObjHigh,
					Ops: []Op{
						{Kind: OpEnd, Obj: vs.obj, Key: record.KeyInode, Create: prev},
						{Obj: vs.obj, Key: record.KeyInode, Create: tid, Payload: ino.encode()},
					},
					Notes: []Note{{Obj: vs.obj, Change: ChangeAttr}},
				}
				loc, next, err := l.Write(t)
				if err != nil {
					return err
				}
				if err := index.ApplyTxn(btx, t, loc, next, nil, false); err != nil {
					return err
				}
				vs.tids = append(vs.tids, tid)
				prev = tid
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := l.Sync(); err != nil {
		return nil, err
	}
	db.NoSync = false
	if err := db.Sync(); err != nil {
		return nil, err
	}
	vs.setup = time.Since(start)
	return vs, nil
}

func TestFastVersionsMatchCommits(t *testing.T) {
	const n = 150
	t0 := time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)
	a, err := buildVersionsByCommit(t.TempDir(), n, &fakeClock{t: t0})
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildVersionsFast(t.TempDir(), n, &fakeClock{t: t0})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a.tids) != fmt.Sprint(b.tids) || a.obj != b.obj {
		t.Fatal("the two builds placed the versions differently")
	}
	segs, _ := txlog.ListSegments(filepath.Join(a.dir, "log"))
	for _, seq := range segs {
		la, _ := os.ReadFile(txlog.SegName(filepath.Join(a.dir, "log"), seq))
		lb, _ := os.ReadFile(txlog.SegName(filepath.Join(b.dir, "log"), seq))
		if string(la) != string(lb) {
			t.Fatalf("log segment %d differs (%d and %d bytes)", seq, len(la), len(lb))
		}
	}
	sa := openTest(t, a.dir, &fakeClock{t: t0.Add(time.Hour)})
	defer sa.Close()
	sb := openTest(t, b.dir, &fakeClock{t: t0.Add(time.Hour)})
	defer sb.Close()
	for _, bk := range [][]byte{index.BucketRec, index.BucketVer, index.BucketTxn, index.BucketBlk, index.BucketMeta} {
		diffs, err := compareIndexes(sa.index, sb.index, bk)
		if err != nil || len(diffs) > 0 {
			t.Fatalf("bucket %s differs: %v %v", bk, diffs, err)
		}
	}
	rep, err := sb.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify of the fast build: %v %v", err, rep)
	}
}

var (
	versionStoresMu sync.Mutex
	versionStores   = map[int]*versionStore{}
)

func versionFixture(b *testing.B, n int) *versionStore {
	versionStoresMu.Lock()
	defer versionStoresMu.Unlock()
	if vs := versionStores[n]; vs != nil {
		return vs
	}
	dir := fixtureDir(fmt.Sprintf("versions-%d", n))
	clk := &fakeClock{t: time.Date(2007, 8, 6, 0, 0, 0, 0, time.UTC)}
	var vs *versionStore
	var err error
	if n <= 1000 {
		vs, err = buildVersionsByCommit(dir, n, clk)
	} else {
		vs, err = buildVersionsFast(dir, n, clk)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d versions (%s): setup %v, %.0f versions/s", n, vs.how, vs.setup.Round(time.Millisecond), float64(n)/vs.setup.Seconds())
	versionStores[n] = vs
	return vs
}

// BenchmarkAsOfLookup: Inode(obj, t) for a random moment t between the
// object's first and last versions (exactly at a version or between two),
// for an object with 1, 1000 and 1,000,000 versions. One op is a batch of
// lookupBatch lookups, so that -benchtime 1x still measures many; the
// figure to read is ns/lookup.
const lookupBatch = 1 << 16

func BenchmarkAsOfLookup(b *testing.B) {
	for _, n := range []int{1, 1000, scaledCount(1000000, 1000)} {
		b.Run(fmt.Sprintf("versions=%s", countName(n)), func(b *testing.B) {
			vs := versionFixture(b, n)
			s := benchOpen(b, vs.dir, Options{Clock: func() time.Time { return vs.tids[len(vs.tids)-1].Time().Add(time.Hour) }})
			defer s.Close()
			r := rand.New(rand.NewPCG(uint64(n), 1))
			at := make([]TID, lookupBatch)
			want := make([]int64, lookupBatch)
			for i := range at {
				v := r.IntN(n)
				at[i] = vs.tids[v]
				if r.IntN(2) == 0 && v+1 < n { // between v and v+1
					at[i] += TID(r.Int64N(int64(vs.tids[v+1] - vs.tids[v])))
				}
				want[i] = int64(v)
			}
			for i := 0; i < 4096; i++ { // the answers are right
				ino, err := s.Inode(vs.obj, at[i])
				if err != nil || ino.Mtime != want[i] {
					b.Fatalf("as of %s: mtime %d %v, want %d", at[i], ino.Mtime, err, want[i])
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, t := range at {
					if _, err := s.Inode(vs.obj, t); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*lookupBatch), "ns/lookup")
			b.ReportMetric(float64(b.N*lookupBatch)/b.Elapsed().Seconds(), "lookups/s")
		})
	}
}

// bigIndexStore is a store of files of 1 KiB, a thousand to a directory,
// built once per process: the index of a tree like the mirror benchmark's.
// It returns the store's directory and the files' ids.
var bigIndex struct {
	once sync.Once
	dir  string
	ids  []ObjID
}

func bigIndexStore(b *testing.B, count int) (string, []ObjID) {
	bigIndex.once.Do(func() {
		dir := filepath.Join(fixtureDir("bigindex"), "store")
		s := benchOpen(b, dir, Options{FlushInterval: time.Second})
		p := randData(1, 1<<10)
		var parent ObjID
		for i := 0; i < count; i++ {
			err := s.Update(func(tx *Tx) error {
				var err error
				if i%1000 == 0 {
					if parent, err = tx.NewObject(Inode{Kind: KindDir, Mode: 0o755, Nlink: 2}); err != nil {
						return err
					}
					if err := tx.SetDirent(RootID, fmt.Sprintf("d%04d", i/1000), parent, KindDir); err != nil {
						return err
					}
				}
				id, err := tx.NewObject(Inode{Kind: KindFile, Mode: 0o644, Nlink: 1})
				if err != nil {
					return err
				}
				bigIndex.ids = append(bigIndex.ids, id)
				if err := tx.SetDirent(parent, fmt.Sprintf("f%06d", i), id, KindFile); err != nil {
					return err
				}
				binary.LittleEndian.PutUint64(p, uint64(i))
				return tx.WriteAt(id, p, 0)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		bigIndex.dir = dir
	})
	if bigIndex.dir == "" {
		b.Fatal("the big index store was not built")
	}
	return bigIndex.dir, bigIndex.ids
}

// BenchmarkCommitBigIndex: a commit of 100 files of 1 KiB rewritten, at
// random among 100,000, the index's free page list left to Close (as the
// store does) or written by every commit (bbolt's default), for the choice
// in index.Open.
func BenchmarkCommitBigIndex(b *testing.B) {
	count := scaledCount(100000, 2000)
	for _, freelist := range []string{"close", "commit"} {
		b.Run(fmt.Sprintf("%s-files/freelist-%s", countName(count), freelist), func(b *testing.B) {
			dir, ids := bigIndexStore(b, count)
			s := benchOpen(b, dir, Options{})
			defer s.Close()
			s.index.NoFreelistSync = freelist == "close"
			rnd := rand.New(rand.NewPCG(uint64(len(freelist)), 3))
			p := randData(2, 1<<10)
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for i := 0; i < 100; i++ {
					id := ids[rnd.IntN(len(ids))]
					binary.LittleEndian.PutUint64(p, uint64(n)<<32|uint64(i))
					if err := s.Update(func(tx *Tx) error { return tx.WriteAt(id, p, 0) }); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := s.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			st := s.index.Stats()
			b.ReportMetric(float64(st.FreePageN), "free-pages")
		})
	}
}

// BenchmarkOpenBigIndex: Open and Close of the store of 100,000 files, after
// a clean Close (the free page list written) and after a process that
// committed and stopped without one (the list rebuilt by walking the index).
func BenchmarkOpenBigIndex(b *testing.B) {
	count := scaledCount(100000, 2000)
	for _, after := range []string{"close", "crash"} {
		b.Run(fmt.Sprintf("%s-files/after-%s", countName(count), after), func(b *testing.B) {
			dir, _ := bigIndexStore(b, count)
			for n := 0; n < b.N; n++ {
				b.StopTimer()
				if after == "crash" {
					db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, &bolt.Options{NoFreelistSync: true})
					if err != nil {
						b.Fatal(err)
					}
					if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(index.BucketMeta).Put([]byte("bench"), nil) }); err != nil {
						b.Fatal(err)
					}
					db.Close()
				}
				b.StartTimer()
				s := benchOpen(b, dir, Options{})
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
