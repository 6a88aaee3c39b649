package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/volume"
	"github.com/asof/asof/internal/s3test"
	bolt "go.etcd.io/bbolt"
)

// volStore is a store with small packs, and files written over several
// commits, each remembered at its moment.
type volStore struct {
	t     *testing.T
	dir   string
	s     *Store
	files map[string]ObjID
	want  map[TID]map[string][]byte // every file's content at each moment
	last  map[string][]byte
	seed  uint64
}

func smallPacks(t *testing.T) {
	old := pack.MaxSize
	pack.MaxSize = 256 << 10
	t.Cleanup(func() { pack.MaxSize = old })
}

func newVolStore(t *testing.T, opts Options) *volStore {
	smallPacks(t)
	dir := t.TempDir()
	opts.FlushInterval = time.Hour
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	vs := &volStore{t: t, dir: dir, s: s, files: map[string]ObjID{}, want: map[TID]map[string][]byte{}, last: map[string][]byte{}}
	t.Cleanup(func() { vs.s.Close() })
	return vs
}

// writeRound writes n files of size bytes (new ones, and over old ones)
// and commits.
func (vs *volStore) writeRound(n, size int) {
	t := vs.t
	for i := 0; i < n; i++ {
		vs.seed++
		name := fmt.Sprintf("f%d", vs.seed%7)
		id, ok := vs.files[name]
		if !ok {
			id = newFile(t, vs.s, RootID, name)
			vs.files[name] = id
		}
		data := randData(vs.seed, size)
		write(t, vs.s, id, data, 0)
		cur := append([]byte(nil), vs.last[name]...)
		if len(cur) < len(data) {
			cur = append(cur, make([]byte, len(data)-len(cur))...)
		}
		copy(cur, data)
		vs.last[name] = cur
	}
	tid := commit(t, vs.s)
	snap := map[string][]byte{}
	for k, v := range vs.last {
		snap[k] = v
	}
	vs.want[tid] = snap
}

// check reads every file at every remembered moment, and live.
func (vs *volStore) check() {
	t := vs.t
	t.Helper()
	for tid, files := range vs.want {
		for name, want := range files {
			if got := readAll(t, vs.s, vs.files[name], tid); !bytes.Equal(got, want) {
				t.Fatalf("%s at %s: %d bytes differ from the %d written", name, tid, len(got), len(want))
			}
		}
	}
	for name, want := range vs.last {
		if got := readAll(t, vs.s, vs.files[name], Live); !bytes.Equal(got, want) {
			t.Fatalf("%s live: differs", name)
		}
	}
}

func (vs *volStore) reopen(opts Options) {
	t := vs.t
	t.Helper()
	if err := vs.s.Close(); err != nil {
		t.Fatal(err)
	}
	opts.FlushInterval = time.Hour
	s, err := Open(vs.dir, opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	vs.s = s
}

func (vs *volStore) verify(deep bool) {
	t := vs.t
	t.Helper()
	rep, err := vs.s.verify(deep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("verify: %v", rep.Problems)
	}
}

// pass runs one mover pass, waiting for the background one if it runs.
func pass(t *testing.T, s *Store, sweep bool) error {
	t.Helper()
	for {
		err := s.movePass(sweep)
		if err == nil || err.Error() != "busy" {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mkdir(t *testing.T) string {
	d := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// usage is the packs the index places on each volume.
func usage(t *testing.T, s *Store) map[uint16]map[uint32]bool {
	t.Helper()
	_, packs, err := s.volumeUsage()
	if err != nil {
		t.Fatal(err)
	}
	return packs
}

// noStrays checks that every pack file on every volume is one the index
// places there (but volume 0's pack being filled), and every pack the
// index names is there.
func noStrays(t *testing.T, s *Store) {
	t.Helper()
	packs := usage(t, s)
	cur := s.packs.SealedBelow()
	for id, v := range s.vols {
		if v.v == nil {
			continue
		}
		l, err := v.v.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held := map[uint32]bool{}
		for _, p := range l {
			held[p.Seq] = true
			if !packs[id][p.Seq] && !(id == 0 && p.Seq >= cur) {
				t.Errorf("volume %s holds pack %d, which the index does not place there", v.spec.Name, p.Seq)
			}
		}
		for seq := range packs[id] {
			if !held[seq] {
				t.Errorf("the index places pack %d on volume %s, which does not hold it", seq, v.spec.Name)
			}
		}
	}
}

// A sealed pack goes to the volume with the most free space; volume 0
// keeps only the pack being filled; every moment reads the same from the
// new volume, after a reopen too, and verify is clean.
func TestVolumePlacesSealedPacks(t *testing.T) {
	vs := newVolStore(t, Options{})
	for i := 0; i < 6; i++ {
		vs.writeRound(3, 100<<10)
	}
	d := mkdir(t)
	if err := vs.s.AddVolume(context.Background(), VolumeSpec{Name: "disk1", Kind: "dir", Path: d}); err != nil {
		t.Fatal(err)
	}
	if err := pass(t, vs.s, true); err != nil {
		t.Fatal(err)
	}
	packs := usage(t, vs.s)
	if len(packs[1]) == 0 {
		t.Fatal("no pack moved to disk1")
	}
	for seq := range packs[0] {
		if seq < vs.s.packs.SealedBelow() {
			t.Errorf("sealed pack %d stayed in data", seq)
		}
	}
	noStrays(t, vs.s)
	vs.check()
	vs.verify(false)
	vs.reopen(Options{})
	vs.check()
	// New writes land in data, then move.
	vs.writeRound(4, 100<<10)
	vs.reopen(Options{}) // seals the pack being filled
	if err := pass(t, vs.s, true); err != nil {
		t.Fatal(err)
	}
	noStrays(t, vs.s)
	vs.check()
	vs.verify(false)
	infos, err := vs.s.Volumes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[1].Name != "disk1" || infos[1].State != "active" || infos[1].Packs == 0 || infos[1].Bytes == 0 {
		t.Fatalf("volumes: %+v", infos)
	}
}

// A drain moves everything a volume holds to the others, the volume takes
// no new packs meanwhile, and once empty it can be removed; not before.
func TestVolumeDrainAndRemove(t *testing.T) {
	vs := newVolStore(t, Options{})
	ctx := context.Background()
	d1, d2 := mkdir(t), mkdir(t)
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		vs.writeRound(3, 100<<10)
	}
	vs.reopen(Options{})
	if err := pass(t, vs.s, true); err != nil {
		t.Fatal(err)
	}
	if len(usage(t, vs.s)[1]) == 0 {
		t.Fatal("nothing on disk1")
	}
	if err := vs.s.RemoveVolume(ctx, "disk1"); err == nil {
		t.Fatal("removed a volume that holds packs")
	}
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk2", Kind: "dir", Path: d2}); err != nil {
		t.Fatal(err)
	}
	var last, total int64
	if err := vs.s.DrainVolume(ctx, "disk1", func(stage string, done, tot int64) { last, total = done, tot }); err != nil {
		t.Fatal(err)
	}
	if total == 0 || last != total {
		t.Fatalf("progress ended at %d of %d", last, total)
	}
	packs := usage(t, vs.s)
	if len(packs[1]) != 0 || len(packs[2]) == 0 {
		t.Fatalf("after the drain: disk1 %d packs, disk2 %d", len(packs[1]), len(packs[2]))
	}
	// Draining: new sealed packs go elsewhere.
	vs.writeRound(4, 100<<10)
	vs.reopen(Options{})
	if err := pass(t, vs.s, false); err != nil {
		t.Fatal(err)
	}
	if n := len(usage(t, vs.s)[1]); n != 0 {
		t.Fatalf("a draining volume took %d packs", n)
	}
	vs.check()
	vs.verify(false)
	if err := vs.s.RemoveVolume(ctx, "disk1"); err != nil {
		t.Fatal(err)
	}
	vs.reopen(Options{})
	if v := vs.s.volByName("disk1"); v != nil {
		t.Fatal("disk1 is back after a reopen")
	}
	noStrays(t, vs.s)
	vs.check()
	vs.verify(false)
}

// errCrash stands for a kill at a step of a move.
var errCrash = errors.New("simulated crash")

// A move stopped after each of its steps (the store then closed without
// finishing it, as a kill leaves it) loses nothing: after the reopen every
// file and moment reads exact, each pack is on one volume only, the one
// the index says, and verify is clean. A pack left on a volume with no
// record saying why (a copy a kill interrupted before one could be
// written) is removed by the next pass.
func TestVolumeMoveCrashAtEachStep(t *testing.T) {
	for _, step := range []string{"recorded", "copied", "switched", "deleted"} {
		t.Run(step, func(t *testing.T) {
			vs := newVolStore(t, Options{})
			ctx := context.Background()
			d1 := mkdir(t)
			for i := 0; i < 4; i++ {
				vs.writeRound(3, 100<<10)
			}
			vs.reopen(Options{})
			vs.s.moveMu.Lock() // the mover waits
			if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d1}); err != nil {
				t.Fatal(err)
			}
			moveHook = func(at string) error {
				if at == step {
					return errCrash
				}
				return nil
			}
			seqs, _, err := vs.s.packsOn(0)
			if err != nil || len(seqs) == 0 {
				t.Fatal(seqs, err)
			}
			err = vs.s.movePack(ctx, seqs[0], vs.s.vols[0], vs.s.vols[1])
			moveHook = func(string) error { return errCrash } // nothing more moves before the "kill"
			vs.s.moveMu.Unlock()
			if !errors.Is(err, errCrash) {
				t.Fatalf("move: %v", err)
			}
			if err := vs.s.Close(); err != nil {
				t.Fatal(err)
			}
			moveHook = nil
			// A stray copy no record names.
			if len(seqs) > 1 && step == "recorded" {
				src := filepath.Join(vs.dir, "volumes", "0", volume.PackName(seqs[1]))
				b, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d1, volume.PackName(seqs[1])), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Open(vs.dir, Options{FlushInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			vs.s = s
			if _, pending, _ := s.readMove(); pending {
				t.Fatal("the move record is still there after open")
			}
			vs.check()
			if err := pass(t, s, true); err != nil {
				t.Fatal(err)
			}
			noStrays(t, s)
			vs.check()
			vs.verify(false)
		})
	}
}

// A volume of another store is refused, and nothing changes.
func TestVolumeOfAnotherStoreRefused(t *testing.T) {
	smallPacks(t)
	ctx := context.Background()
	a := openTest(t, t.TempDir(), nil)
	defer a.Close()
	bdir := t.TempDir()
	b := openTest(t, bdir, nil)
	defer b.Close()
	d := mkdir(t)
	if err := a.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d}); err != nil {
		t.Fatal(err)
	}
	err := b.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d})
	if !errors.Is(err, volume.ErrForeign) {
		t.Fatalf("adding another store's volume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bdir, volumesFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused add left %s: %v", volumesFile, err)
	}
	if len(b.vols) != 1 {
		t.Fatal("the refused volume is in the set")
	}
	// Adding the same volume again to its own store changes nothing.
	if err := a.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddVolume(ctx, VolumeSpec{Name: "disk2", Kind: "dir", Path: d}); err == nil {
		t.Fatal("one directory added as two volumes")
	}
}

// A volume missing at start (a disk not mounted) leaves the store open,
// degraded: the volume is unreachable, reads of its blocks fail with EIO,
// and once it is back a pass opens it and reads work again.
func TestVolumeMissingAtStart(t *testing.T) {
	vs := newVolStore(t, Options{})
	ctx := context.Background()
	d1 := mkdir(t)
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		vs.writeRound(3, 100<<10)
	}
	vs.reopen(Options{})
	if err := pass(t, vs.s, true); err != nil {
		t.Fatal(err)
	}
	if err := vs.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(d1, d1+".away"); err != nil {
		t.Fatal(err)
	}
	s, err := Open(vs.dir, Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatalf("open with a volume missing: %v", err)
	}
	vs.s = s
	infos, err := s.Volumes(ctx)
	if err != nil || infos[1].State != "unreachable" || infos[1].Problem == "" {
		t.Fatalf("volumes: %+v, %v", infos, err)
	}
	var sawEIO bool
	for name, id := range vs.files {
		p := make([]byte, len(vs.last[name]))
		if _, err := s.ReadAt(id, p, 0, Live); err != nil {
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read of a missing volume's blocks: %v, want EIO", err)
			}
			sawEIO = true
		}
	}
	if !sawEIO {
		t.Fatal("every file read with its volume missing")
	}
	if err := os.Rename(d1+".away", d1); err != nil {
		t.Fatal(err)
	}
	s.vmu.Lock()
	s.vols[1].retryAt = time.Time{}
	s.vmu.Unlock()
	if err := pass(t, s, false); err != nil {
		t.Fatal(err)
	}
	vs.check()
	vs.verify(false)
}

// S3: sealed packs are uploaded and read back by range through the
// cache; verify checks them cheaply and deeply; while the server is down
// reads of its blocks fail with EIO (never wrong bytes), writes go on and
// sealed packs wait in data, and they are uploaded once it is back; a
// drain brings everything back, and the volume can be removed.
func TestVolumeS3(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	vs := newVolStore(t, Options{VolumeCacheBytes: 1}) // no cache: reads go to the server
	ctx := context.Background()
	spec := VolumeSpec{Name: "bucket", Kind: "s3", S3: &S3Spec{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: "store1/"}}
	if err := vs.s.AddVolume(ctx, spec); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		vs.writeRound(3, 100<<10)
	}
	vs.reopen(Options{VolumeCacheBytes: 1})
	if err := pass(t, vs.s, true); err != nil {
		t.Fatal(err)
	}
	if len(usage(t, vs.s)[1]) == 0 {
		t.Fatal("nothing uploaded")
	}
	noStrays(t, vs.s)
	vs.check()
	vs.verify(false)
	vs.verify(true)
	// The listing counts the bucket's packs and bytes from the index.
	infos, err := vs.s.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := vs.s.vols[1].v.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var inBucket int64
	for _, p := range listed {
		inBucket += p.Size
	}
	if len(infos) != 2 || infos[1].Kind != "s3" || infos[1].Packs != len(listed) || infos[1].Bytes <= 0 || infos[1].Bytes > inBucket {
		t.Fatalf("volumes: %+v; the bucket holds %d packs, %d bytes", infos, len(listed), inBucket)
	}
	if c := vs.s.VolumeCache(); c == nil || c.Max != 1 {
		t.Fatalf("cache: %+v, want the bound of 1 byte the options set", c)
	}

	// Down: reads of its blocks are EIO or right, never wrong; writes go on.
	srv.Kill()
	vs.reopen(Options{VolumeCacheBytes: 1}) // no block cached in memory
	var sawEIO bool
	for name, id := range vs.files {
		p := make([]byte, len(vs.last[name]))
		n, err := vs.s.ReadAt(id, p, 0, Live)
		switch {
		case err != nil && !errors.Is(err, syscall.EIO):
			t.Fatalf("read while S3 is down: %v, want EIO", err)
		case err != nil:
			sawEIO = true
		case !bytes.Equal(p[:n], vs.last[name]):
			t.Fatalf("%s: wrong bytes while S3 is down", name)
		}
	}
	if !sawEIO {
		t.Fatal("no read failed with S3 down")
	}
	vs.writeRound(4, 100<<10)
	vs.reopen(Options{VolumeCacheBytes: 1})
	pass(t, vs.s, false) // fails: the packs wait in data
	waiting, _, err := vs.s.packsOn(0)
	if err != nil || len(waiting) == 0 {
		t.Fatalf("no sealed pack waits in data while S3 is down: %v", err)
	}
	srv.Restart(t)
	vs.s.vmu.Lock()
	vs.s.vols[1].failAt = time.Time{}
	vs.s.vmu.Unlock()
	if err := pass(t, vs.s, false); err != nil {
		t.Fatal(err)
	}
	if left, _, _ := vs.s.packsOn(0); len(left) != 0 {
		t.Fatalf("%d sealed packs still wait in data", len(left))
	}
	vs.check()
	vs.verify(true)

	// Reads through the cache fill it, within its bound.
	vs.reopen(Options{VolumeCacheBytes: 64 << 20})
	vs.check()
	if c := vs.s.VolumeCache(); c == nil || c.Used <= 0 || c.Used > c.Max || c.Misses == 0 || c.Max != 64<<20 {
		t.Fatalf("cache after reads of the bucket: %+v", c)
	}

	// Drain back to data, then remove.
	if err := vs.s.DrainVolume(ctx, "bucket", nil); err != nil {
		t.Fatal(err)
	}
	if err := vs.s.RemoveVolume(ctx, "bucket"); err != nil {
		t.Fatal(err)
	}
	noStrays(t, vs.s)
	vs.check()
	vs.verify(false)
}

// Bad S3 input is refused with a message naming the problem, and nothing
// changes.
func TestVolumeS3BadInputRefused(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	s := openTest(t, t.TempDir(), nil)
	defer s.Close()
	ctx := context.Background()
	for _, c := range []struct {
		name string
		spec S3Spec
		env  func()
		want string
	}{
		{"unreachable endpoint", S3Spec{Endpoint: "http://127.0.0.1:1", Bucket: srv.Bucket}, nil, "cannot reach"},
		{"missing bucket", S3Spec{Endpoint: srv.Endpoint, Bucket: "no-such-bucket"}, nil, "bucket"},
		{"bad bucket name", S3Spec{Endpoint: srv.Endpoint, Bucket: "Bad_Name"}, nil, "bucket"},
		{"wrong credentials", S3Spec{Endpoint: srv.Endpoint, Bucket: srv.Bucket}, func() { t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789") }, "credentials"},
	} {
		if c.env != nil {
			c.env()
		}
		err := s.AddVolume(ctx, VolumeSpec{Name: "b", Kind: "s3", S3: &c.spec})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		}
		if len(s.vols) != 1 {
			t.Fatalf("%s: the volume was added", c.name)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, volumesFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused add wrote VOLUMES")
	}
}

// A drain under a writer that commits all along, with every commit's
// blocks partly ones already in the packs being moved (deduplicated
// against them), loses no block and no reference: each move waits after
// its copy for a commit to land, so commits run between every copy and
// its index switch, and the switch runs beside the commits (it takes no
// commit lock). Afterwards every moment reads exact, every block the
// index holds reads back from where the index says, each pack is on one
// volume only, and verify is clean; after a reopen too.
func TestVolumeDrainUnderCommits(t *testing.T) {
	vs := newVolStore(t, Options{})
	ctx := context.Background()
	d1, d2 := mkdir(t), mkdir(t)
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		vs.writeRound(3, 100<<10)
	}
	vs.reopen(Options{})
	if err := pass(t, vs.s, true); err != nil {
		t.Fatal(err)
	}
	if n := len(usage(t, vs.s)[1]); n < 3 {
		t.Fatalf("%d packs on disk1, want several to drain", n)
	}
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk2", Kind: "dir", Path: d2}); err != nil {
		t.Fatal(err)
	}

	// The writer: a file of its own, rewritten and committed in a loop,
	// half the time with the content of a file the fill wrote (whose
	// blocks are on disk1), half the time with new data.
	s := vs.s
	id := newFile(t, s, RootID, "w")
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	commits := 0
	want := map[TID][]byte{}
	stop, writerDone := make(chan struct{}), make(chan error, 1)
	go func() {
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			data := randData(1000+i, 100<<10)
			if i%2 == 0 {
				data = randData(1+i%18, 100<<10) // a fill round's data: blocks on disk1
			}
			err := s.Update(func(tx *Tx) error { return tx.WriteAt(id, data, 0) })
			var tid TID
			if err == nil {
				tid, err = s.Commit()
			}
			if err != nil {
				writerDone <- fmt.Errorf("writer, round %d: %w", i, err)
				return
			}
			mu.Lock()
			want[tid] = data
			commits++
			cond.Broadcast()
			mu.Unlock()
		}
	}()
	var running atomic.Bool
	running.Store(true)
	moves := 0
	moveHook = func(step string) error {
		if step != "copied" {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		moves++
		for seen := commits; commits == seen && running.Load(); {
			cond.Wait()
		}
		return nil
	}
	t.Cleanup(func() { moveHook = nil })
	err := s.DrainVolume(ctx, "disk1", nil)
	mu.Lock()
	running.Store(false)
	cond.Broadcast()
	mu.Unlock()
	close(stop)
	if werr := <-writerDone; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	moveHook = nil
	mu.Lock()
	if moves < 3 || commits < moves {
		t.Fatalf("%d moves with %d commits: the test did not interleave them", moves, commits)
	}
	mu.Unlock()
	if n := len(usage(t, s)[1]); n != 0 {
		t.Fatalf("disk1 still holds %d packs after the drain", n)
	}

	checkAll := func() {
		t.Helper()
		vs.check()
		for tid, data := range want {
			if got := readAll(t, vs.s, id, tid); !bytes.Equal(got, data) {
				t.Fatalf("the writer's file at %s: %d bytes differ from the %d written", tid, len(got), len(data))
			}
		}
		n := 0
		err := vs.s.index.View(func(tx *bolt.Tx) error {
			return tx.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
				e, err := index.DecodeBlk(v)
				if err != nil {
					return err
				}
				n++
				if _, err := vs.s.packs.Get(e.Loc, Hash(k), false); err != nil {
					return fmt.Errorf("block %x at %+v: %w", k, e.Loc, err)
				}
				return nil
			})
		})
		if err != nil || n == 0 {
			t.Fatalf("%d blocks read back: %v", n, err)
		}
		noStrays(t, vs.s)
		vs.verify(false)
	}
	checkAll()
	vs.reopen(Options{})
	checkAll()
}

// A drain that finds no volume to take its packs says why of each: here
// data is draining and the other volume had a copy fail moments ago.
func TestVolumeDrainNamesWhyNoVolumeTakesPacks(t *testing.T) {
	vs := newVolStore(t, Options{})
	ctx := context.Background()
	d1, d2 := mkdir(t), mkdir(t)
	for i := 0; i < 3; i++ {
		vs.writeRound(3, 100<<10)
	}
	vs.reopen(Options{})
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: d1}); err != nil {
		t.Fatal(err)
	}
	if err := vs.s.DrainVolume(ctx, "data", nil); err != nil {
		t.Fatal(err)
	}
	if len(usage(t, vs.s)[1]) == 0 {
		t.Fatal("nothing on disk1")
	}
	err := vs.s.DrainVolume(ctx, "disk1", nil)
	if err == nil || !strings.Contains(err.Error(), "data is draining") || !strings.Contains(err.Error(), "no other volume can take its packs") {
		t.Fatalf("drain with every other volume draining: %v", err)
	}
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk2", Kind: "dir", Path: d2}); err != nil {
		t.Fatal(err)
	}
	vs.s.putFailed(vs.s.volByName("disk2"), 1, errors.New("no space left on device"))
	err = vs.s.DrainVolume(ctx, "disk1", nil)
	if err == nil || !strings.Contains(err.Error(), "disk2: a copy to it failed") || !strings.Contains(err.Error(), "no space left on device") ||
		!strings.Contains(err.Error(), "takes no pack for") {
		t.Fatalf("drain right after a copy to the only other volume failed: %v", err)
	}
	vs.s.vmu.Lock()
	vs.s.volByName("disk2").failAt = time.Time{}
	vs.s.vmu.Unlock()
	if err := vs.s.DrainVolume(ctx, "disk1", nil); err != nil {
		t.Fatal(err)
	}
	vs.check()
}

// A pack with a damaged block header still moves, whole, as a copy of its
// file: the switch then finds its blocks in the index, so that none stays
// placed on the copy that goes. (Reads of the damaged block fail as they
// did before the move; verify reports it.)
func TestVolumeMovesAPackWithADamagedHeader(t *testing.T) {
	vs := newVolStore(t, Options{})
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		vs.writeRound(3, 100<<10)
	}
	vs.reopen(Options{})
	vs.s.moveMu.Lock()
	defer vs.s.moveMu.Unlock()
	if err := vs.s.AddVolume(ctx, VolumeSpec{Name: "disk1", Kind: "dir", Path: mkdir(t)}); err != nil {
		t.Fatal(err)
	}
	seqs, _, err := vs.s.packsOn(0)
	if err != nil || len(seqs) == 0 {
		t.Fatal(seqs, err)
	}
	seq := seqs[0]
	placed := func(vol uint16) int {
		t.Helper()
		n := 0
		if err := vs.s.index.View(func(tx *bolt.Tx) error {
			return tx.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
				e, err := index.DecodeBlk(v)
				if err == nil && e.Loc.Vol == vol && e.Loc.Pack == seq {
					n++
				}
				return err
			})
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := placed(0)
	path := vs.s.packs.Name(seq)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var third int64
	n := 0
	if err := pack.ScanHeaders(path, 0, seq, func(_ Hash, loc pack.Loc) error {
		if n++; n == 3 {
			third = int64(loc.Off) - pack.HdrLen
		}
		return nil
	}); err != nil || n < 4 {
		t.Fatalf("pack %d: %d blocks, %v", seq, n, err)
	}
	if _, err := f.WriteAt([]byte{0xff}, third+12); err != nil { // in the hash
		t.Fatal(err)
	}
	f.Close()
	vs.s.packs.Forget(seq)
	if err := vs.s.movePack(ctx, seq, vs.s.vols[0], vs.s.vols[1]); err != nil {
		t.Fatalf("move of a pack with a damaged header: %v", err)
	}
	if left, moved := placed(0), placed(1); left != 0 || moved != before {
		t.Fatalf("after the move: %d blocks still placed on data, %d on disk1; %d were on data", left, moved, before)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the old copy: %v", err)
	}
}
