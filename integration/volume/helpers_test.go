// Package volume_test tests volumes (docs/SPEC.md section 7) end to end: the real asof
// binary (integration/serverproc), libnfs's nfs-cp and nfs-cat reading and writing
// throughout, `asof volume add|drain|remove|list` and `asof verify`, directory volumes
// and an S3 bucket on a real S3 server (versitygw on loopback).
package volume_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history"
	"github.com/asof/asof/integration/clients"
	"github.com/asof/asof/integration/serverproc"
	"github.com/asof/asof/server"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

func TestMain(m *testing.M) { os.Exit(serverproc.Main(m)) }

// flush is the history grain the tests run with; settle parts versions meant to be
// distinct.
const (
	flush  = 100 * time.Millisecond
	settle = 4 * flush
)

func needLibNFS(t *testing.T) {
	t.Helper()
	for _, p := range []string{"nfs-ls", "nfs-cat", "nfs-cp"} {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found (run scripts/test-deps.sh)", p)
			}
			t.Skipf("%s not found (run scripts/test-deps.sh)", p)
		}
	}
}

// world is one asof server, its NFS client, and what every file and past moment must
// read as.
type world struct {
	t   *testing.T
	s   *serverproc.Server
	nfs clients.NFS
	rnd *rand.Rand

	mu    sync.Mutex
	live  map[string][]byte   // path -> content
	sizes map[string][][]byte // path -> every content it had, for its past versions
	seq   int
}

// startWorld runs asof serving NFS only, acting as root through libnfs (no squash), with
// more environment in env.
func startWorld(t *testing.T, env map[string]string) *world {
	t.Helper()
	needLibNFS(t)
	e := map[string]string{"ASOF_HISTORY_FLUSH_INTERVAL": flush.String(), "ASOF_EXPORTS_SQUASH": "none"}
	for k, v := range env {
		e[k] = v
	}
	s := serverproc.Start(t, serverproc.Options{NoNineP: true, Env: e})
	return &world{t: t, s: s, nfs: clients.NFS{Addr: s.NFSAddr, Timeout: time.Minute},
		rnd:  rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)),
		live: map[string][]byte{}, sizes: map[string][][]byte{}}
}

func (w *world) data(n int) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := w.rnd.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// write stores content as path through nfs-cp and records it once nfs-cp succeeded.
func (w *world) write(ctx context.Context, path string, content []byte) error {
	if err := w.nfs.Write(ctx, path, content); err != nil {
		return err
	}
	w.mu.Lock()
	w.live[path] = content
	w.sizes[path] = append(w.sizes[path], content)
	w.mu.Unlock()
	return nil
}

// newName is a fresh file name with prefix.
func (w *world) newName(prefix string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq++
	return fmt.Sprintf("/%s-%04d.bin", prefix, w.seq)
}

// generation writes n new files of about size bytes with nfs-cp, and a second, longer
// version of each a settle later, so that each has a past moment whose blocks only the
// history holds.
func (w *world) generation(prefix string, n, size int) {
	w.t.Helper()
	ctx := context.Background()
	var names []string
	for i := 0; i < n; i++ {
		name := w.newName(prefix)
		names = append(names, name)
		if err := w.write(ctx, name, w.data(size+i*4096)); err != nil {
			w.t.Fatal(err)
		}
	}
	time.Sleep(settle)
	for i, name := range names {
		if err := w.overwrite(name, w.data(size+size/2+i*4096+1000)); err != nil {
			w.t.Fatal(err)
		}
	}
	time.Sleep(settle)
}

type version struct {
	TID    string `json:"tid"`
	Size   int64  `json:"size"`
	Change string `json:"change"`
}

// check reads every live file and every past version (PATH@@TID from `asof history`)
// with nfs-cat and compares them with what was written.
func (w *world) check(step string) {
	w.t.Helper()
	ctx := context.Background()
	w.mu.Lock()
	live := make(map[string][]byte, len(w.live))
	for k, v := range w.live {
		live[k] = v
	}
	past := make(map[string][][]byte, len(w.sizes))
	for k, v := range w.sizes {
		past[k] = append([][]byte(nil), v...)
	}
	w.mu.Unlock()
	paths := make([]string, 0, len(live))
	for p := range live {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	moments := 0
	for _, p := range paths {
		got, err := w.nfs.Cat(ctx, p)
		if err != nil {
			w.t.Fatalf("%s: nfs-cat %s: %v", step, p, err)
		}
		if !bytes.Equal(got, live[p]) {
			w.t.Fatalf("%s: nfs-cat %s: %d bytes (sha %x), want %d bytes (sha %x)", step, p, len(got), sha256.Sum256(got), len(live[p]), sha256.Sum256(live[p]))
		}
		if len(past[p]) < 2 {
			continue
		}
		out, _, err := w.s.Admin(ctx, "history", "--json", p)
		if err != nil {
			w.t.Fatalf("%s: %v", step, err)
		}
		var vs []version
		if err := json.Unmarshal([]byte(out), &vs); err != nil {
			w.t.Fatalf("%s: asof history --json %s: %v\n%s", step, p, err, out)
		}
		bySize := map[int64][]byte{}
		for _, c := range past[p] {
			bySize[int64(len(c))] = c
		}
		// A version is whole the first time the file has that size (nfs-cp and the
		// overwrite write in order, and each content is longer than the one before);
		// later ones of the size are moments within the next write.
		seen := map[int64]bool{}
		for _, v := range vs { // oldest first
			want, ok := bySize[v.Size]
			if !ok || v.Change == "delete" || seen[v.Size] {
				continue
			}
			seen[v.Size] = true
			got, err := w.nfs.Cat(ctx, p+"@@"+v.TID)
			if err != nil {
				w.t.Fatalf("%s: nfs-cat %s@@%s: %v", step, p, v.TID, err)
			}
			if !bytes.Equal(got, want) {
				w.t.Fatalf("%s: nfs-cat %s@@%s: %d bytes (sha %x), want %d bytes (sha %x)", step, p, v.TID, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
			}
			moments++
		}
	}
	if moments == 0 && len(past) > 0 {
		w.t.Fatalf("%s: no past moment checked", step)
	}
	w.t.Logf("%s: %d live files and %d past moments exact", step, len(paths), moments)
}

// verify runs `asof verify` (with --deep when deep) and fails on any problem.
func (w *world) verify(step string, deep bool) {
	w.t.Helper()
	args := []string{"verify"}
	if deep {
		args = append(args, "--deep")
	}
	if out, _, err := w.s.Admin(context.Background(), args...); err != nil {
		w.t.Fatalf("%s: %v\n%s", step, err, out)
	}
}

// volumes is `asof volume list --json`.
func (w *world) volumes() server.VolumesReply {
	w.t.Helper()
	out, _, err := w.s.Admin(context.Background(), "volume", "list", "--json")
	if err != nil {
		w.t.Fatal(err)
	}
	var r server.VolumesReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		w.t.Fatalf("asof volume list --json: %v\n%s", err, out)
	}
	return r
}

func (w *world) volume(name string) (history.VolumeInfo, bool) {
	for _, v := range w.volumes().Volumes {
		if v.Name == name {
			return v, true
		}
	}
	return history.VolumeInfo{}, false
}

// admin runs an admin command that must succeed.
func (w *world) admin(args ...string) string {
	w.t.Helper()
	out, _, err := w.s.Admin(context.Background(), args...)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// seal restarts the server (SIGTERM, exit 0), which seals the pack being filled, so
// that what was written is in packs a drain moves.
func (w *world) seal() {
	w.t.Helper()
	if err := w.s.Restart(); err != nil {
		w.t.Fatal(err)
	}
}

// empty says that volume name holds nothing by the index, and that its directory dir
// (when given) holds no pack and no temporary copy. The data directory keeps the pack
// being filled (the clients write during drains).
func (w *world) empty(step, name, dir string) {
	w.t.Helper()
	v, ok := w.volume(name)
	if name == "data" && v.Packs <= 1 {
		return
	}
	if ok && (v.Packs != 0 || v.Bytes != 0) {
		w.t.Fatalf("%s: volume %s still holds %d packs, %d bytes", step, name, v.Packs, v.Bytes)
	}
	if dir != "" {
		if left := packFiles(w.t, dir); len(left) > 0 {
			w.t.Fatalf("%s: %s still has %v", step, dir, left)
		}
	}
}

// packFiles lists the packs and temporary copies in a directory volume.
func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".pack") || strings.HasSuffix(e.Name(), ".tmp") {
			l = append(l, e.Name())
		}
	}
	return l
}

// newDir is a new empty directory for a volume.
func newDir(t *testing.T, name string) string {
	d := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// churn reads the live files and writes new ones through libnfs until stop is called,
// and returns the client errors it met (none expected while the server serves).
type churnResult struct {
	reads, writes int
	errs          []error
}

func (w *world) churn(prefix string, size int) (stop func() churnResult) {
	ctx, cancel := context.WithCancel(context.Background())
	var res churnResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w.mu.Lock()
			var p string
			var want []byte
			for k, v := range w.live { // any one
				p, want = k, v
				break
			}
			w.mu.Unlock()
			if p != "" {
				got, err := w.nfs.Cat(ctx, p)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					res.errs = append(res.errs, err)
				} else if !bytes.Equal(got, want) {
					res.errs = append(res.errs, fmt.Errorf("nfs-cat %s: %d bytes, not the %d written", p, len(got), len(want)))
				}
				res.reads++
			}
			err := w.write(ctx, w.newName(prefix), w.data(size))
			if ctx.Err() != nil {
				break
			}
			if err != nil {
				res.errs = append(res.errs, err)
			}
			res.writes++
		}
	}()
	return func() churnResult {
		cancel()
		<-done
		return res
	}
}

// overwrite writes content over path from offset 0 with go-nfs-client (WRITEs, then
// COMMIT on close): libnfs's nfs-cp only creates (GUARDED). content is longer than what
// it replaces, so the file is content.
func (w *world) overwrite(path string, content []byte) error {
	c, err := dialRPC(w.s.NFSAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	m := &nfsc.Mount{Client: c}
	tgt, err := m.Mount("/", rpc.NewAuthUnix("asof-test", 0, 0).Auth())
	if err != nil {
		return fmt.Errorf("MOUNT /: %w", err)
	}
	f, err := tgt.OpenFile(strings.TrimPrefix(path, "/"), 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("commit %s: %w", path, err)
	}
	w.mu.Lock()
	w.live[path] = content
	w.sizes[path] = append(w.sizes[path], content)
	w.mu.Unlock()
	return nil
}

// readStatus reads path whole with go-nfs-client and returns the NFS status of a failed
// READ (libnfs's nfs-cat says only "Failed to read from file").
func (w *world) readStatus(path string) ([]byte, error) {
	c, err := dialRPC(w.s.NFSAddr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m := &nfsc.Mount{Client: c}
	tgt, err := m.Mount("/", rpc.NewAuthUnix("asof-test", 0, 0).Auth())
	if err != nil {
		return nil, fmt.Errorf("MOUNT /: %w", err)
	}
	f, err := tgt.Open(strings.TrimPrefix(path, "/"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// dialRPC connects go-nfs-client to addr. It binds a random local port of its own
// choosing, which another socket may hold: that is tried again.
func dialRPC(addr string) (*rpc.Client, error) {
	for try := 0; ; try++ {
		c, err := rpc.DialTCP("tcp", addr, false)
		if err == nil || try == 20 || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
	}
}
