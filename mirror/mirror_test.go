package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// Real stores on both ends, real TCP on loopback, changes made through fs.

var root = fs.Cred{}

// logs collects log lines, for the tests that count them.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

type source struct {
	store *history.Store
	fs    *fs.FS
	src   *Source
	addr  string
	token []byte
	logs  *logs
	l     net.Listener

	cancel context.CancelFunc // ends the targets' connections
	wg     sync.WaitGroup     // the accept loop and the connections
}

func startSource(t testing.TB, dir string) *source {
	t.Helper()
	lg := &logs{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(lg, testWriter{t}), nil))
	s, err := history.Open(dir, history.Options{FlushInterval: 50 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	token := []byte("secret-token-of-the-test")
	src := NewSource(s, SourceOptions{Token: token, Logger: log})
	ctx, cancel := context.WithCancel(context.Background())
	so := &source{store: s, fs: fs.New(s, fs.Options{Logger: log}), src: src, addr: l.Addr().String(), token: token, logs: lg, l: l, cancel: cancel}
	so.wg.Add(1)
	go func() {
		defer so.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			so.wg.Add(1)
			go func() {
				defer so.wg.Done()
				if err := src.ServeConn(ctx, c); err != nil {
					log.Info("target connection ended by an I/O error", "err", err)
				}
			}()
		}
	}()
	t.Cleanup(func() { so.close() })
	return so
}

// close stops accepting, has every target's connection end, and closes
// the store, as the server's shutdown does.
func (s *source) close() {
	s.l.Close()
	s.cancel()
	s.wg.Wait()
	s.store.Close()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

func openTarget(t testing.TB, dir string) *history.Store {
	t.Helper()
	if err := history.CreateMirror(dir); err != nil {
		t.Fatal(err)
	}
	s, err := history.Open(dir, history.Options{FlushInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// workload changes a tree through fs at random: files written, truncated,
// renamed, linked and removed, directories, symlinks, attributes and
// extended attributes.
type workload struct {
	f   *fs.FS
	rnd *rand.Rand
}

func (w *workload) path() string {
	dirs := []string{"", "/d0", "/d1", "/d0/e"}
	return fmt.Sprintf("%s/f%d", dirs[w.rnd.IntN(len(dirs))], w.rnd.IntN(6))
}

func (w *workload) dirOf(p string) (fs.Node, string, error) {
	i := strings.LastIndex(p, "/")
	dir := p[:i]
	if dir == "" {
		dir = "/"
	}
	n, err := w.f.Resolve(root, dir)
	return n, p[i+1:], err
}

func (w *workload) step() {
	f := w.f
	for _, d := range []string{"/d0", "/d1", "/d0/e"} {
		if _, err := f.Resolve(root, d); err != nil {
			parent, name, _ := w.dirOf(d)
			f.Mkdir(root, parent, name, 0o755)
		}
	}
	p := w.path()
	dir, name, err := w.dirOf(p)
	if err != nil {
		return
	}
	switch k := w.rnd.IntN(20); {
	case k < 9:
		n, _, err := f.Create(root, dir, name, 0o644, false)
		if err != nil {
			return
		}
		size := []int{1 + w.rnd.IntN(100), 1 + w.rnd.IntN(20000), 1 + w.rnd.IntN(100000)}[w.rnd.IntN(3)]
		data := make([]byte, size)
		seed := byte(w.rnd.IntN(250))
		for i := range data {
			data[i] = seed + byte(i/4096)
		}
		f.Write(root, n, data, int64(w.rnd.IntN(70000)), false)
	case k < 11:
		if n, err := f.Lookup(root, dir, name); err == nil {
			size := uint64(w.rnd.IntN(60000))
			f.Setattr(root, n, fs.SetAttr{Size: &size})
		}
	case k < 13:
		q := w.path()
		if ddir, dname, err := w.dirOf(q); err == nil {
			f.Rename(root, dir, name, ddir, dname)
		}
	case k < 14:
		if n, err := f.Lookup(root, dir, name); err == nil {
			q := w.path()
			if ddir, dname, err := w.dirOf(q); err == nil {
				f.Link(root, n, ddir, dname)
			}
		}
	case k < 16:
		f.Remove(root, dir, name, false)
	case k < 17:
		f.Symlink(root, dir, name+"-l", fmt.Sprintf("target-%d", w.rnd.IntN(100)))
	case k < 18:
		if n, err := f.Lookup(root, dir, name); err == nil {
			f.SetXattr(root, n, "user.x", []byte(fmt.Sprint(w.rnd.IntN(1000))), 0)
		}
	default:
		if n, err := f.Lookup(root, dir, name); err == nil {
			mode := uint32(0o600 + w.rnd.IntN(0o177))
			f.Setattr(root, n, fs.SetAttr{Mode: &mode})
		}
	}
}

// tree reads everything visible through fs at path@@tid: kind,
// attributes, data, symlink targets, extended attributes.
func tree(t *testing.T, f *fs.FS, tid history.TID) map[string]string {
	t.Helper()
	out := map[string]string{}
	top, err := f.Resolve(root, "/@@"+fs.FormatTID(uint64(tid)))
	if err != nil {
		t.Fatalf("resolve /@@%s: %v", fs.FormatTID(uint64(tid)), err)
	}
	var walk func(n fs.Node, path string)
	walk = func(n fs.Node, path string) {
		a, err := f.Getattr(n)
		if err != nil {
			t.Fatalf("getattr %s at %s: %v", path, tid, err)
		}
		desc := fmt.Sprintf("%s %o %d:%d n%d s%d m%d c%d", a.Kind, a.Mode, a.Uid, a.Gid, a.Nlink, a.Size, a.Mtime.UnixNano(), a.Ctime.UnixNano())
		switch a.Kind {
		case history.KindFile:
			p := make([]byte, a.Size)
			if _, err := f.Read(root, n, p, 0); err != nil {
				t.Fatalf("read %s at %s: %v", path, tid, err)
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(p))
		case history.KindSymlink:
			s, err := f.Readlink(n)
			if err != nil {
				t.Fatal(err)
			}
			desc += " -> " + s
		}
		if names, err := f.ListXattr(root, n); err == nil {
			sort.Strings(names)
			for _, x := range names {
				v, _ := f.GetXattr(root, n, x)
				desc += fmt.Sprintf(" %s=%q", x, v)
			}
		}
		out[path] = desc
		if a.Kind != history.KindDir {
			return
		}
		var kids []fs.Dirent
		if err := f.ReadDir(root, n, "", func(d fs.Dirent) bool { kids = append(kids, d); return true }); err != nil {
			t.Fatalf("readdir %s at %s: %v", path, tid, err)
		}
		for _, d := range kids {
			if d.Name == "." || d.Name == ".." {
				continue
			}
			walk(d.Node, path+"/"+d.Name)
		}
	}
	walk(top, "")
	return out
}

func sameTrees(t *testing.T, a, b *fs.FS, tid history.TID) {
	t.Helper()
	x, y := tree(t, a, tid), tree(t, b, tid)
	for p, d := range x {
		if y[p] != d {
			t.Fatalf("at %s, %q: source %q, target %q", tid, p, d, y[p])
		}
	}
	for p, d := range y {
		if _, ok := x[p]; !ok {
			t.Fatalf("at %s, %q is on the target only: %q", tid, p, d)
		}
	}
}

func TestTargetHoldsEveryMomentOfItsSource(t *testing.T) {
	src := startSource(t, t.TempDir())
	dst := openTarget(t, t.TempDir())
	defer dst.Close()
	tg := NewTarget(dst, src.addr, TargetOptions{Token: src.token, BatchFrames: 3})
	w := &workload{f: src.fs, rnd: rand.New(rand.NewPCG(1, 2))}
	var moments []history.TID
	for i := 0; i < 400; i++ {
		w.step()
		if i%7 == 0 {
			tid, err := src.fs.Commit()
			if err != nil {
				t.Fatal(err)
			}
			moments = append(moments, tid)
		}
		if i%60 == 0 {
			if err := tg.Pull(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	tid, err := src.fs.Commit()
	if err != nil {
		t.Fatal(err)
	}
	moments = append(moments, tid)
	if err := tg.Pull(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if dst.LastTID() < tid {
		t.Fatalf("target at %s, source at %s", dst.LastTID(), tid)
	}
	dfs := fs.New(dst, fs.Options{})
	for _, m := range moments {
		sameTrees(t, src.fs, dfs, m)
	}
	// Served read-only, with history.
	if _, err := dfs.Mkdir(root, dfs.Root(), "new", 0o755); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("mkdir on a mirror: %v, want EROFS", err)
	}
	st := tg.Status()
	if st.Position != dst.LastTID() || st.Frames == 0 || st.Bytes == 0 || st.Blocks == 0 {
		t.Fatalf("status %+v", st)
	}
}

// proxy forwards TCP connections to a target address and cuts each one
// after a random number of bytes.
type proxy struct {
	l     net.Listener
	to    string
	rnd   *rand.Rand
	mu    sync.Mutex
	cuts  atomic.Int64
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, to string, seed uint64) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, to: to, rnd: rand.New(rand.NewPCG(seed, 1)), conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.cutAll() })
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		budget := int64(200 + p.rnd.IntN(2<<20))
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		var left atomic.Int64
		left.Store(budget)
		cut := func() {
			c.Close()
			up.Close()
		}
		pipe := func(dst, src net.Conn) {
			buf := make([]byte, 4096)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if left.Add(-int64(n)) < 0 {
						p.cuts.Add(1)
						cut()
						return
					}
					if _, err := dst.Write(buf[:n]); err != nil {
						cut()
						return
					}
				}
				if err != nil {
					cut()
					return
				}
			}
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

func (p *proxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// A target following through a link that keeps breaking, and restarted
// now and then, ends with every moment of its source: nothing lost,
// nothing twice, no transaction in part.
func TestTargetResumesThroughACutLinkAndRestarts(t *testing.T) {
	src := startSource(t, t.TempDir())
	px := startProxy(t, src.addr, 3)
	dir := t.TempDir()
	dst := openTarget(t, dir)
	run := func(s *history.Store) (*Target, func()) {
		tg := NewTarget(s, px.l.Addr().String(), TargetOptions{Token: src.token, BatchFrames: 2, BatchBytes: 64 << 10})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { tg.Run(ctx); close(done) }()
		return tg, func() { cancel(); <-done }
	}
	_, stop := run(dst)
	w := &workload{f: src.fs, rnd: rand.New(rand.NewPCG(7, 8))}
	var moments []history.TID
	rnd := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 600; i++ {
		w.step()
		if i%5 == 0 {
			tid, err := src.fs.Commit()
			if err != nil {
				t.Fatal(err)
			}
			moments = append(moments, tid)
		}
		if rnd.IntN(100) == 0 { // the target restarts
			stop()
			if err := dst.Close(); err != nil {
				t.Fatal(err)
			}
			var err error
			if dst, err = history.Open(dir, history.Options{FlushInterval: 50 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			_, stop = run(dst)
		}
		if rnd.IntN(50) == 0 {
			time.Sleep(time.Duration(rnd.IntN(50)) * time.Millisecond)
		}
	}
	last, err := src.fs.Commit()
	if err != nil {
		t.Fatal(err)
	}
	moments = append(moments, last)
	deadline := time.Now().Add(60 * time.Second)
	for dst.LastTID() < last {
		if time.Now().After(deadline) {
			t.Fatalf("the target is at %s, the source at %s", dst.LastTID(), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	defer dst.Close()
	if px.cuts.Load() < 3 {
		t.Fatalf("the proxy cut the link %d times only", px.cuts.Load())
	}
	dfs := fs.New(dst, fs.Options{})
	for _, m := range moments {
		sameTrees(t, src.fs, dfs, m)
	}
	rep, err := dst.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify the target: %v %+v", err, rep)
	}
	t.Logf("%d moments, %d cuts", len(moments), px.cuts.Load())
}

func TestWrongTokenAndGarbageAreRefused(t *testing.T) {
	src := startSource(t, t.TempDir())
	dst := openTarget(t, t.TempDir())
	defer dst.Close()
	bad := NewTarget(dst, src.addr, TargetOptions{Token: []byte("not the token")})
	err := bad.Pull(context.Background(), nil)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("pull with a wrong token: %v", err)
	}
	if dst.Lineage() != "" {
		t.Fatal("a refused target learnt the source's lineage")
	}
	// Garbage, and a peer that says nothing then goes.
	for _, junk := range [][]byte{[]byte("GET / HTTP/1.0\r\n\r\n"), bytes.Repeat([]byte{0xff}, 10000), {msgAuth, 0xff, 0xff, 0xff, 0xff}, nil} {
		c, err := net.Dial("tcp", src.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.logs.count("mirror: refused a target") < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := src.logs.count("mirror: refused a target"); n != 5 {
		t.Fatalf("%d refusal lines logged, want 5 (one per peer):\n%s", n, src.logs.buf.String())
	}
	if strings.Contains(src.logs.buf.String(), string(src.token)) {
		t.Fatal("the token was logged")
	}
	// The source is unaffected: a good target pulls.
	if _, _, err := src.fs.Create(root, src.fs.Root(), "f", 0o644, false); err != nil {
		t.Fatal(err)
	}
	last, _ := src.fs.Commit()
	good := NewTarget(dst, src.addr, TargetOptions{Token: src.token})
	if err := good.Pull(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if dst.LastTID() != last || dst.Lineage() != src.store.Lineage() {
		t.Fatalf("target at %s lineage %q; source at %s lineage %q", dst.LastTID(), dst.Lineage(), last, src.store.Lineage())
	}
	// A target of another lineage is refused.
	other := startSource(t, t.TempDir())
	err = NewTarget(dst, other.addr, TargetOptions{Token: other.token}).Pull(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "lineage") {
		t.Fatalf("a target following another lineage: %v", err)
	}
}

func TestVerifyNamesAByteFlippedInATargetPack(t *testing.T) {
	src := startSource(t, t.TempDir())
	f := src.fs
	d, err := f.Mkdir(root, f.Root(), "docs", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		n, _, err := f.Create(root, d, fmt.Sprintf("file%d", i), 0o644, false)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte{byte('a' + i)}, 100000)
		if _, err := f.Write(root, n, data, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dst := openTarget(t, dir)
	tg := NewTarget(dst, src.addr, TargetOptions{Token: src.token})
	if err := tg.Pull(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	rep, err := tg.Verify(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Paths != 7 {
		t.Fatalf("verify of a good target: %+v", rep)
	}
	dst.Close()
	// Flip one byte in the data of a block in the middle of the pack.
	packs, _ := filepath.Glob(filepath.Join(dir, "volumes", "0", "*.pack"))
	if len(packs) == 0 {
		t.Fatal("no pack")
	}
	pk := packs[0]
	st, _ := os.Stat(pk)
	b, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}
	off := st.Size() / 2
	b[off] ^= 0x40
	if err := os.WriteFile(pk, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if dst, err = history.Open(dir, history.Options{}); err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	rep, err = NewTarget(dst, src.addr, TargetOptions{Token: src.token}).Verify(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Differences) != 1 || !strings.HasPrefix(rep.Differences[0].Path, "/docs/file") ||
		!strings.Contains(rep.Differences[0].Reason, "damaged on the target") {
		t.Fatalf("verify after a flipped byte: %+v", rep)
	}
	t.Logf("%+v", rep.Differences)
}

func TestPromoteThenWrites(t *testing.T) {
	src := startSource(t, t.TempDir())
	if _, err := src.fs.Mkdir(root, src.fs.Root(), "a", 0o755); err != nil {
		t.Fatal(err)
	}
	src.fs.Commit()
	dst := openTarget(t, t.TempDir())
	defer dst.Close()
	if err := NewTarget(dst, src.addr, TargetOptions{Token: src.token}).Pull(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	dfs := fs.New(dst, fs.Options{})
	if _, err := dfs.Mkdir(root, dfs.Root(), "b", 0o755); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("mkdir before promote: %v", err)
	}
	if err := dst.Promote(); err != nil {
		t.Fatal(err)
	}
	if _, err := dfs.Mkdir(root, dfs.Root(), "b", 0o755); err != nil {
		t.Fatalf("mkdir after promote: %v", err)
	}
	if _, err := dfs.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/a", "/b"} {
		if _, err := dfs.Resolve(root, p); err != nil {
			t.Fatalf("%s after promote: %v", p, err)
		}
	}
	// A promoted store follows no one.
	err := NewTarget(dst, src.addr, TargetOptions{Token: src.token}).Pull(context.Background(), nil)
	if err == nil {
		t.Fatal("a promoted store pulled from its old source")
	}
}

func TestSourceStatusListsTargets(t *testing.T) {
	src := startSource(t, t.TempDir())
	src.fs.Mkdir(root, src.fs.Root(), "a", 0o755)
	src.fs.Commit()
	dst := openTarget(t, t.TempDir())
	defer dst.Close()
	tg := NewTarget(dst, src.addr, TargetOptions{Token: src.token, Name: "backup-1"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := src.src.Status()
		if len(st.Targets) == 1 && st.Targets[0].Position == src.store.LastTID() {
			if st.Targets[0].Name != "backup-1" || st.Targets[0].Lag != 0 {
				t.Fatalf("status %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ts := tg.Status(); ts.State != "following" || ts.Position != src.store.LastTID() {
		t.Fatalf("target status %+v", ts)
	}
}
