package ninep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// env is a store, an fs on it and a 9P server. Its clients attach as the
// test process's user, and the fs squashes no one, so that e.cred, what fs
// calls in the tests act as, is what the clients act as.
type env struct {
	store *history.Store
	f     *fs.FS
	uid   uint32
	cred  fs.Cred
	addr  string
}

func processUID() uint32 { return uint32(os.Getuid()) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newEnv starts a store, an fs on it that squashes no one and a 9P server
// on 127.0.0.1:0.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, fs.Options{Squash: fs.SquashNone}, Options{})
}

// newEnvWith is newEnv with the given fs and server options.
func newEnvWith(t *testing.T, fo fs.Options, o Options) *env {
	t.Helper()
	s, err := history.Open(t.TempDir(), history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if fo.Logger == nil {
		fo.Logger = testLogger(t)
	}
	e := &env{store: s, f: fs.New(s, fo), uid: processUID()}
	e.cred = e.f.LocalUser(e.uid)
	e.addr = e.serve(t, e.f, o)
	return e
}

// serve runs Serve on a new listener until the test ends, and checks that
// it returns nil once the listener is closed.
func (e *env) serve(t *testing.T, f *fs.FS, opts Options) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(l, f, opts) }()
	t.Cleanup(func() {
		l.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v after the listener closed", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after the listener closed")
		}
	})
	return l.Addr().String()
}

func (e *env) client(t *testing.T) *p9.Client {
	t.Helper()
	return dialClient(t, e.addr, e.uid)
}

// dialClient connects p9's client, whose attaches then act as uid.
func dialClient(t *testing.T, addr string, uid uint32) *p9.Client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := p9.NewClient(&attachAs{Conn: c, uid: uid})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// attachAs gives the Tattachs p9's client sends (uname "", n_uname unset)
// a uid: p9's client has no way to name one.
type attachAs struct {
	net.Conn
	uid uint32
	buf []byte // a frame being written, until it is whole
}

func (a *attachAs) Write(p []byte) (int, error) {
	a.buf = append(a.buf, p...)
	for len(a.buf) >= hdrLen {
		size := int(binary.LittleEndian.Uint32(a.buf))
		if len(a.buf) < size {
			break
		}
		frame := a.buf[:size]
		if frame[4] == msgTattach {
			binary.LittleEndian.PutUint32(frame[size-4:], a.uid)
		}
		if _, err := a.Conn.Write(frame); err != nil {
			return 0, err
		}
		a.buf = a.buf[size:]
	}
	return len(p), nil
}

func (e *env) attach(t *testing.T, aname string) p9.File {
	t.Helper()
	root, err := e.client(t).Attach(aname)
	if err != nil {
		t.Fatalf("attach %q: %v", aname, err)
	}
	return root
}

func (e *env) commit(t *testing.T) string {
	t.Helper()
	tid, err := e.store.Commit()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // the next change gets a later transaction
	return fs.FormatTID(uint64(tid))
}

func walk(t *testing.T, f p9.File, names ...string) p9.File {
	t.Helper()
	_, nf, err := f.Walk(names)
	if err != nil {
		t.Fatalf("walk %q: %v", names, err)
	}
	return nf
}

func wantErrno(t *testing.T, what string, err error, want linux.Errno) {
	t.Helper()
	var got linux.Errno
	if !errors.As(err, &got) || got != want {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

func create(t *testing.T, dir p9.File, name, data string) {
	t.Helper()
	d := walk(t, dir)
	f, _, _, err := d.Create(name, p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if _, err := f.WriteAt([]byte(data), 0); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	f.Close()
}

func readAll(t *testing.T, dir p9.File, names ...string) string {
	t.Helper()
	f := walk(t, dir, names...)
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("open %q: %v", names, err)
	}
	var out []byte
	buf := make([]byte, 4096)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if n == 0 || errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %q: %v", names, err)
		}
	}
	return string(out)
}

func TestCreateWriteReadRenameUnlink(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")

	if _, err := walk(t, root).Mkdir("docs", 0o755, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	docs := walk(t, root, "docs")
	create(t, docs, "a.txt", "hello, 9p")
	if got := readAll(t, root, "docs", "a.txt"); got != "hello, 9p" {
		t.Fatalf("read %q", got)
	}
	// The change is visible through fs at once (and so through NFS).
	n, err := e.f.Resolve(e.cred, "/docs/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := e.f.Getattr(n)
	qids, f, err := root.Walk([]string{"docs", "a.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if len(qids) != 2 || qids[1].Path != a.Ino || qids[1].Type != p9.TypeRegular || qids[0].Type != p9.TypeDir {
		t.Fatalf("qids %v, want path %d", qids, a.Ino)
	}
	_, _, attr, err := f.GetAttr(p9.AttrMaskAll)
	if err != nil || attr.Size != 9 || !attr.Mode.IsRegular() || attr.Mode.Permissions() != 0o644 || attr.UID != p9.UID(e.cred.Uid) {
		t.Fatalf("getattr %+v %v", attr, err)
	}

	// Version changes on every change; the path does not.
	q1, _, _, _ := f.GetAttr(p9.AttrMaskAll)
	create(t, docs, "b.txt", "x")
	time.Sleep(time.Millisecond)
	w := walk(t, root, "docs", "a.txt")
	if _, _, err := w.Open(p9.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("HELLO"), 0); err != nil {
		t.Fatal(err)
	}
	q2, _, _, _ := f.GetAttr(p9.AttrMaskAll)
	if q1.Path != q2.Path || q1.Version == q2.Version {
		t.Fatalf("qid before %v after %v", q1, q2)
	}
	if err := w.FSync(); err != nil {
		t.Fatal(err)
	}
	w.Close()

	// Rename (Trenameat) and the older Trename.
	if err := walk(t, root).RenameAt("docs", walk(t, root), "papers"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, root, "papers", "a.txt"); got != "HELLO, 9p" {
		t.Fatalf("after rename %q", got)
	}
	if err := walk(t, root, "papers", "b.txt").Rename(walk(t, root), "b2.txt"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, root, "b2.txt"); got != "x" {
		t.Fatalf("after Trename %q", got)
	}
	// The fid walked before the rename still names the same object.
	if got := readAll(t, f); got != "HELLO, 9p" {
		t.Fatalf("old fid reads %q", got)
	}

	// rmdir of a non-empty directory.
	wantErrno(t, "rmdir non-empty", walk(t, root).UnlinkAt("papers", atRemoveDir), linux.ENOTEMPTY)
	wantErrno(t, "unlink dir", walk(t, root).UnlinkAt("papers", 0), linux.EISDIR)
	if err := walk(t, root, "papers").UnlinkAt("a.txt", 0); err != nil {
		t.Fatal(err)
	}
	if err := walk(t, root).UnlinkAt("papers", atRemoveDir); err != nil {
		t.Fatal(err)
	}
	_, _, err = root.Walk([]string{"papers"})
	wantErrno(t, "walk removed", err, linux.ENOENT)

	// Errors fs decides.
	_, err = walk(t, root).Mkdir("b2.txt", 0o755, p9.NoUID, p9.NoGID)
	wantErrno(t, "mkdir existing", err, linux.EEXIST)
	_, _, _, err = walk(t, root).Create("b2.txt", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	wantErrno(t, "create existing", err, linux.EEXIST)
	_, err = walk(t, root).Mkdir(strings.Repeat("n", 256), 0o755, p9.NoUID, p9.NoGID)
	wantErrno(t, "long name", err, linux.ENAMETOOLONG)
	_, err = walk(t, root).Mkdir("x@@y", 0o755, p9.NoUID, p9.NoGID)
	wantErrno(t, "@@ name", err, linux.EINVAL)
}

func TestAttachAndTimeTravel(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "/")
	walk(t, root).Mkdir("sub", 0o755, p9.NoUID, p9.NoGID)
	walk(t, root, "sub").Mkdir("dir", 0o755, p9.NoUID, p9.NoGID)
	create(t, walk(t, root, "sub", "dir"), "f.txt", "old")
	tid := e.commit(t)
	w := walk(t, root, "sub", "dir", "f.txt")
	if _, _, err := w.Open(p9.WriteOnly | dotlTrunc); err != nil {
		t.Fatal(err)
	}
	w.WriteAt([]byte("new!"), 0)
	w.Close()
	create(t, walk(t, root, "sub", "dir"), "later.txt", "")

	for _, c := range []struct{ aname, path, want string }{
		{"", "sub/dir/f.txt", "new!"},
		{"/sub/dir", "f.txt", "new!"},
		{"//sub/./dir/", "f.txt", "new!"},
		{"/sub/dir/..", "dir/f.txt", "new!"},
		{"/@@" + tid, "sub/dir/f.txt", "old"},
		{"/sub/dir@@" + tid, "f.txt", "old"},
		{"/sub/@@" + tid, "dir/f.txt", "old"},
	} {
		r := e.attach(t, c.aname)
		if got := readAll(t, r, strings.Split(c.path, "/")...); got != c.want {
			t.Errorf("attach %q read %s: %q, want %q", c.aname, c.path, got, c.want)
		}
	}
	// Walk components with @@ through fs.Lookup, each separately.
	if got := readAll(t, root, "sub", "dir", "f.txt@@"+tid); got != "old" {
		t.Errorf("f.txt@@: %q", got)
	}
	if got := readAll(t, root, "sub", "@@"+tid, "dir", "f.txt"); got != "old" {
		t.Errorf("sub/@@: %q", got)
	}
	_, _, err := root.Walk([]string{"sub", "dir@@" + tid, "later.txt"})
	wantErrno(t, "walk to a name that did not exist then", err, linux.ENOENT)
	_, _, err = root.Walk([]string{"sub@@not-a-time"})
	wantErrno(t, "bad WHEN", err, linux.EINVAL)

	// name@@ lists the versions; each entry is that version.
	e.commit(t)
	vd := walk(t, root, "sub", "dir", "f.txt@@")
	if _, _, err := vd.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	vents, err := vd.Readdir(0, 4096)
	if err != nil || len(vents) < 4 { // ., .., two versions
		t.Fatalf("versions listing %v %v", vents, err)
	}
	if got := readAll(t, root, "sub", "dir", "f.txt@@", vents[2].Name); got != "old" {
		t.Errorf("first version reads %q", got)
	}

	// Inode numbers: the past differs from the live tree.
	live, _, _ := root.Walk([]string{"sub", "dir", "f.txt"})
	past, _, _ := root.Walk([]string{"sub", "dir@@" + tid, "f.txt"})
	if live[2].Path == past[2].Path {
		t.Errorf("live and past qid paths agree: %v", live[2])
	}

	// The past is read-only.
	pastRoot := e.attach(t, "/@@"+tid)
	pf := walk(t, pastRoot, "sub", "dir", "f.txt")
	_, _, err = pf.Open(p9.WriteOnly)
	wantErrno(t, "open for write in the past", err, linux.EROFS)
	_, _, _, err = walk(t, pastRoot, "sub", "dir").Create("n", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	wantErrno(t, "create in the past", err, linux.EROFS)
	_, err = walk(t, pastRoot, "sub").Mkdir("n", 0o755, p9.NoUID, p9.NoGID)
	wantErrno(t, "mkdir in the past", err, linux.EROFS)
	wantErrno(t, "unlink in the past", walk(t, pastRoot, "sub", "dir").UnlinkAt("f.txt", 0), linux.EROFS)
	wantErrno(t, "setattr in the past", walk(t, pastRoot, "sub", "dir", "f.txt").SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}), linux.EROFS)
	wantErrno(t, "rename in the past", walk(t, pastRoot, "sub", "dir").RenameAt("f.txt", walk(t, pastRoot, "sub", "dir"), "g"), linux.EROFS)

	// Attach names that do not resolve.
	_, err = e.client(t).Attach("/nope")
	wantErrno(t, "attach missing", err, linux.ENOENT)
	_, err = e.client(t).Attach("/@@garbage")
	wantErrno(t, "attach bad WHEN", err, linux.EINVAL)
}

func TestWalkDotDot(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	walk(t, root).Mkdir("a", 0o755, p9.NoUID, p9.NoGID)
	walk(t, root, "a").Mkdir("b", 0o755, p9.NoUID, p9.NoGID)
	qa, _, _ := root.Walk([]string{"a"})
	qids, _, err := root.Walk([]string{"a", "b", ".."})
	if err != nil {
		t.Fatal(err)
	}
	if qids[2].Path != qa[0].Path {
		t.Fatalf(".. of a/b is %v, want %v", qids[2], qa[0])
	}
	qr, _, _, _ := root.GetAttr(p9.AttrMaskAll)
	qids, _, err = root.Walk([]string{".."})
	if err != nil || qids[0].Path != qr.Path {
		t.Fatalf(".. of the root: %v %v", qids, err)
	}
}

func TestReaddirPagedWhileChanging(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	walk(t, root).Mkdir("big", 0o755, p9.NoUID, p9.NoGID)
	dirNode, err := e.f.Resolve(e.cred, "/big")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, _, err := e.f.Create(e.cred, dirNode, fmt.Sprintf("f%04d", i), 0o644, true); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // entries added (and some removed) while the listing pages
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e.f.Create(e.cred, dirNode, fmt.Sprintf("g%05d", i), 0o644, true)
			e.f.Create(e.cred, dirNode, fmt.Sprintf("e%05d", i), 0o644, true)
			if i%3 == 0 {
				e.f.Remove(e.cred, dirNode, fmt.Sprintf("e%05d", i), false)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	d := walk(t, root, "big")
	if _, _, err := d.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var last string
	off := uint64(0)
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatal("readdir does not end")
		}
		ents, err := d.Readdir(off, 200) // a few entries a page
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			break
		}
		for _, de := range ents {
			seen[de.Name]++
			if de.Name != "." && de.Name != ".." {
				if de.Name <= last {
					t.Fatalf("%q after %q", de.Name, last)
				}
				last = de.Name
			}
			if de.Name == "." || de.Name == ".." {
				if de.Type != syscall.DT_DIR {
					t.Errorf("%s has d_type %d", de.Name, de.Type)
				}
			} else if de.Type != syscall.DT_REG {
				t.Errorf("%s has d_type %d", de.Name, de.Type)
			}
		}
		off = ents[len(ents)-1].Offset
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%q listed %d times", name, n)
		}
	}
	for i := range 1000 {
		if seen[fmt.Sprintf("f%04d", i)] != 1 {
			t.Fatalf("f%04d missing", i)
		}
	}
	if seen["."] != 1 || seen[".."] != 1 {
		t.Errorf(". and .. seen %d, %d times", seen["."], seen[".."])
	}

	// Offsets stay valid: reading again from a middle offset resumes there.
	ents, err := d.Readdir(0, 2000)
	if err != nil || len(ents) < 10 {
		t.Fatal(ents, err)
	}
	if _, _, err := e.f.Create(e.cred, dirNode, "a-first", 0o644, true); err != nil {
		t.Fatal(err)
	}
	again, err := d.Readdir(ents[5].Offset, 200)
	if err != nil || len(again) == 0 || again[0].Name != ents[6].Name {
		t.Fatalf("resume after %q gave %v %v", ents[5].Name, again, err)
	}
	// A new listing (rewinddir) shows what was added since.
	ents, err = d.Readdir(0, 200)
	if err != nil || len(ents) < 3 || ents[2].Name != "a-first" {
		t.Fatalf("rewound listing starts %v %v", ents, err)
	}
}

func TestSymlinkLinkMknodStatfsFsync(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	create(t, root, "target", "data")
	if _, err := walk(t, root).Symlink("target", "ln", p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	qids, l, err := root.Walk([]string{"ln"})
	if err != nil || qids[0].Type != p9.TypeSymlink {
		t.Fatalf("walk symlink %v %v", qids, err)
	}
	if s, err := l.Readlink(); err != nil || s != "target" {
		t.Fatalf("readlink %q %v", s, err)
	}
	if err := walk(t, root).Link(walk(t, root, "target"), "hard"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, root, "hard"); got != "data" {
		t.Fatalf("hard link reads %q", got)
	}
	_, _, a, _ := walk(t, root, "target").GetAttr(p9.AttrMaskAll)
	if a.NLink != 2 {
		t.Fatalf("nlink %d", a.NLink)
	}
	if _, err := walk(t, root).Mknod("fifo", p9.ModeNamedPipe|0o600, 0, 0, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	if _, err := walk(t, root).Mknod("tty", p9.ModeCharacterDevice|0o600, 4, 300, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	_, _, a, _ = walk(t, root, "tty").GetAttr(p9.AttrMaskAll)
	if !a.Mode.IsCharacterDevice() || a.RDev != p9.Dev(4<<8|300&0xff|(300&^0xff)<<12) {
		t.Fatalf("char device %v rdev %#x", a.Mode, a.RDev)
	}
	st, err := root.StatFS()
	if err != nil || st.Type != 0x01021997 || st.BlockSize == 0 || st.Blocks == 0 || st.NameLength != 255 {
		t.Fatalf("statfs %+v %v", st, err)
	}

	// fsync: durable before the reply.
	f := walk(t, root)
	nf, _, _, err := f.Create("synced", p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatal(err)
	}
	nf.WriteAt([]byte("kept"), 0)
	if err := nf.FSync(); err != nil {
		t.Fatal(err)
	}
	nf.Close()

}

func TestSetattr(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	create(t, root, "f", "0123456789")
	f := walk(t, root, "f")
	mt := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	err := f.SetAttr(p9.SetAttrMask{Permissions: true, Size: true, MTime: true, MTimeNotSystemTime: true, ATime: true},
		p9.SetAttr{Permissions: 0o600, Size: 4, MTimeSeconds: uint64(mt.Unix()), MTimeNanoSeconds: 7})
	if err != nil {
		t.Fatal(err)
	}
	_, _, a, _ := f.GetAttr(p9.AttrMaskAll)
	if a.Mode.Permissions() != 0o600 || a.Size != 4 || a.MTimeSeconds != uint64(mt.Unix()) || a.MTimeNanoSeconds != 7 {
		t.Fatalf("after setattr %+v", a)
	}
	if time.Since(time.Unix(int64(a.ATimeSeconds), 0)) > time.Minute {
		t.Fatalf("atime not now: %d", a.ATimeSeconds)
	}
	if got := readAll(t, root, "f"); got != "0123" {
		t.Fatalf("truncated to %q", got)
	}
}

func TestOpenUnlinkedAndAppend(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	create(t, root, "log", "one\n")

	a := walk(t, root, "log")
	if _, _, err := a.Open(p9.WriteOnly | dotlAppend); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt([]byte("two\n"), 0); err != nil { // O_APPEND: at the end
		t.Fatal(err)
	}
	a.Close()
	if got := readAll(t, root, "log"); got != "one\ntwo\n" {
		t.Fatalf("append gave %q", got)
	}

	n, _ := e.f.Resolve(e.cred, "/log")
	r := walk(t, root, "log")
	if _, _, err := r.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if err := walk(t, root).UnlinkAt("log", 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	k, err := r.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) || string(buf[:k]) != "one\ntwo\n" {
		t.Fatalf("read after unlink: %q %v", buf[:k], err)
	}
	if _, err := e.f.Getattr(n); err != nil {
		t.Fatalf("open unlinked file gone before close: %v", err)
	}
	r.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := e.f.Getattr(n); fs.Errno(err) == syscall.ENOENT {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unlinked file still exists after its last close")
		}
		time.Sleep(10 * time.Millisecond) // the clunk's reply races Close
	}
}

func TestPermissionsAndReadOnly(t *testing.T) {
	e := newEnv(t)
	priv, err := e.f.Mkdir(e.cred, e.f.Root(), "private", 0o700)
	if err != nil {
		t.Fatal(err)
	}
	e.f.Create(e.cred, priv, "secret", 0o600, true)
	if _, err := e.f.Mkdir(e.cred, e.f.Root(), "public", 0o755); err != nil {
		t.Fatal(err)
	}
	other := e.uid + 4242
	addr := e.addr
	root, err := dialClient(t, addr, other).Attach("")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = root.Walk([]string{"private", "secret"})
	wantErrno(t, "walk into 0700 dir of another user", err, linux.EACCES)
	_, err = walk(t, root, "public").Mkdir("mine", 0o755, p9.NoUID, p9.NoGID)
	wantErrno(t, "mkdir in a 0755 dir of another user", err, linux.EACCES)
	_, err = dialClient(t, addr, other).Attach("/private")
	if err != nil {
		t.Fatalf("attach to a dir one may not search is allowed (as lookup is): %v", err)
	}

	ro := fs.New(e.store, fs.Options{ReadOnly: true, Squash: fs.SquashNone})
	roAddr := e.serve(t, ro, Options{})
	rr, err := dialClient(t, roAddr, e.uid).Attach("")
	if err != nil {
		t.Fatal(err)
	}
	_, err = walk(t, rr).Mkdir("x", 0o755, p9.NoUID, p9.NoGID)
	wantErrno(t, "mkdir on a read-only export", err, linux.EROFS)
	_, _, err = walk(t, rr, "private", "secret").Open(p9.WriteOnly)
	wantErrno(t, "open for write on a read-only export", err, linux.EROFS)
}

func TestManyClients(t *testing.T) {
	e := newEnv(t)
	const clients, files = 16, 30
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				conn, err := net.Dial("tcp", e.addr)
				if err != nil {
					return err
				}
				cl, err := p9.NewClient(&attachAs{Conn: conn, uid: e.uid})
				if err != nil {
					return err
				}
				defer cl.Close()
				root, err := cl.Attach("")
				if err != nil {
					return err
				}
				dir := fmt.Sprintf("c%02d", c)
				if _, err := root.Mkdir(dir, 0o755, p9.NoUID, p9.NoGID); err != nil {
					return err
				}
				for i := range files {
					_, d, err := root.Walk([]string{dir})
					if err != nil {
						return err
					}
					f, _, _, err := d.Create(fmt.Sprint(i), p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
					if err != nil {
						return err
					}
					want := bytes.Repeat([]byte{byte(c), byte(i)}, 1000)
					if _, err := f.WriteAt(want, 0); err != nil {
						return err
					}
					got := make([]byte, len(want))
					if _, err := f.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
						return err
					}
					if !bytes.Equal(got, want) {
						return fmt.Errorf("client %d file %d: data differs", c, i)
					}
					f.Close()
					// Everyone lists the root meanwhile.
					_, r, err := root.Walk(nil)
					if err != nil {
						return err
					}
					if _, _, err := r.Open(p9.ReadOnly); err != nil {
						return err
					}
					if _, err := r.Readdir(0, 4096); err != nil {
						return err
					}
					r.Close()
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// raw speaks 9P frame by frame, for what p9's client does not send: Tauth,
// Tgetlock, xattrs, setattr with setuid bits.
type raw struct {
	t   *testing.T
	c   net.Conn
	tag uint16
}

const (
	msgTgetattr = 24
	msgTreaddir = 40
	msgTread    = 116
	msgTlock    = 52
	noFID       = ^uint32(0)
)

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c}
	r.must(msgTversion, func(e *encoder) { e.u32(65536); e.str("9P2000.L") })
	return r
}

// rpc sends one request and returns the reply's type and body.
func (r *raw) rpc(typ byte, body func(*encoder)) (byte, *decoder) {
	r.t.Helper()
	r.tag++
	var e encoder
	e.header(typ, r.tag)
	body(&e)
	if _, err := r.c.Write(e.frame()); err != nil {
		r.t.Fatal(err)
	}
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, hdrLen)
	if _, err := io.ReadFull(r.c, hdr); err != nil {
		r.t.Fatalf("reply to type %d: %v", typ, err)
	}
	b := make([]byte, binary.LittleEndian.Uint32(hdr)-hdrLen)
	if _, err := io.ReadFull(r.c, b); err != nil {
		r.t.Fatal(err)
	}
	if tag := binary.LittleEndian.Uint16(hdr[5:]); tag != r.tag {
		r.t.Fatalf("reply tag %d, want %d", tag, r.tag)
	}
	return hdr[4], &decoder{b: b}
}

func (r *raw) must(typ byte, body func(*encoder)) *decoder {
	r.t.Helper()
	rt, d := r.rpc(typ, body)
	if rt == msgRlerror {
		r.t.Fatalf("request type %d: %v", typ, linux.Errno(d.u32()))
	}
	if rt != typ+1 {
		r.t.Fatalf("request type %d: reply type %d", typ, rt)
	}
	return d
}

func (r *raw) errno(typ byte, body func(*encoder)) linux.Errno {
	r.t.Helper()
	rt, d := r.rpc(typ, body)
	if rt != msgRlerror {
		return 0
	}
	return linux.Errno(d.u32())
}

func (r *raw) attach(fid uint32, aname string) p9.QID {
	r.t.Helper()
	d := r.must(msgTattach, func(e *encoder) { e.u32(fid); e.u32(noFID); e.str(""); e.str(aname); e.u32(processUID()) })
	return p9.QID{Type: p9.QIDType(d.u8()), Version: d.u32(), Path: d.u64()}
}

func (r *raw) walk(fid, newfid uint32, names ...string) {
	r.t.Helper()
	r.must(msgTwalk, func(e *encoder) {
		e.u32(fid)
		e.u32(newfid)
		e.u16(uint16(len(names)))
		for _, n := range names {
			e.str(n)
		}
	})
}

func (r *raw) clunk(fid uint32) linux.Errno {
	return r.errno(msgTclunk, func(e *encoder) { e.u32(fid) })
}

// setxattr is what Linux's v9fs sends: Txattrcreate on a clone, the value
// in Twrites, and Tclunk, which does the change.
func (r *raw) setxattr(fid, tmp uint32, name, value string, flags uint32) linux.Errno {
	r.t.Helper()
	r.walk(fid, tmp)
	if e := r.errno(msgTxattrcreate, func(e *encoder) { e.u32(tmp); e.str(name); e.u64(uint64(len(value))); e.u32(flags) }); e != 0 {
		r.clunk(tmp)
		return e
	}
	if value != "" {
		r.must(msgTwrite, func(e *encoder) { e.u32(tmp); e.u64(0); e.u32(uint32(len(value))); e.b = append(e.b, value...) })
	}
	return r.clunk(tmp)
}

// getxattr walks an xattr (or the list, for name "") and reads it.
func (r *raw) getxattr(fid, tmp uint32, name string) (string, linux.Errno) {
	r.t.Helper()
	rt, d := r.rpc(msgTxattrwalk, func(e *encoder) { e.u32(fid); e.u32(tmp); e.str(name) })
	if rt == msgRlerror {
		return "", linux.Errno(d.u32())
	}
	size := d.u64()
	var out string
	if size > 0 {
		d := r.must(msgTread, func(e *encoder) { e.u32(tmp); e.u64(0); e.u32(uint32(size)) })
		out = string(d.take(int(d.u32())))
	}
	r.clunk(tmp)
	return out, 0
}

func TestAuthAttachGetlock(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	walk(t, root).Mkdir("sub", 0o755, p9.NoUID, p9.NoGID)
	walk(t, root, "sub").Mkdir("dir", 0o755, p9.NoUID, p9.NoGID)
	tid := e.commit(t)

	r := dialRaw(t, e.addr)
	if got := r.errno(msgTauth, func(e *encoder) { e.u32(1); e.str("u"); e.str("/"); e.u32(0) }); got != linux.ENOENT {
		t.Fatalf("Tauth: %v, want ENOENT", got)
	}
	ino := func(path string) uint64 {
		n, err := e.f.Resolve(e.cred, path)
		if err != nil {
			t.Fatal(err)
		}
		return n.Ino()
	}
	for i, c := range []struct{ aname, path string }{
		{"", "/"}, {"/", "/"}, {"/sub/dir", "/sub/dir"}, {"/sub/dir/..", "/sub"},
		{"/@@" + tid, "/@@" + tid}, {"/sub/dir@@" + tid, "/sub/dir@@" + tid},
	} {
		q := r.attach(uint32(10+i), c.aname)
		if q.Path != ino(c.path) || q.Type != p9.TypeDir {
			t.Errorf("Rattach for %q: %v, want path %d", c.aname, q, ino(c.path))
		}
	}
	if ino("/@@"+tid) == ino("/") {
		t.Error("the past root has the live root's inode number")
	}

	// Tgetlock: no conflicting lock.
	r.walk(10, 30, "sub")
	d := r.must(msgTgetlock, func(e *encoder) {
		e.u32(30)
		e.u8(1)
		e.u64(5)
		e.u64(10)
		e.u32(77)
		e.str("host")
	})
	if typ, start, length, pid, client := d.u8(), d.u64(), d.u64(), d.u32(), d.str(); typ != lockTypeUnlck || start != 5 || length != 10 || pid != 77 || client != "host" {
		t.Fatalf("Rgetlock %d %d %d %d %q", typ, start, length, pid, client)
	}
	// Tlock: accepted (p9's client sends no fid with it, so raw here).
	r.must(msgTlopen, func(e *encoder) { e.u32(30); e.u32(uint32(p9.ReadOnly)) })
	d = r.must(msgTlock, func(e *encoder) {
		e.u32(30)
		e.u8(1)
		e.u32(0)
		e.u64(0)
		e.u64(0)
		e.u32(77)
		e.str("host")
	})
	if st := d.u8(); st != uint8(p9.LockStatusOK) {
		t.Fatalf("Rlock status %d", st)
	}
	// The connection still works after answers made below p9.
	r.must(msgTgetattr, func(e *encoder) { e.u32(30); e.u64(0x3fff) })
}

func TestXattrs(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	create(t, root, "f", "x")
	r := dialRaw(t, e.addr)
	r.attach(1, "")
	r.walk(1, 2, "f")

	if v, errno := r.getxattr(2, 3, ""); errno != 0 || v != "" {
		t.Fatalf("empty list: %q %v", v, errno)
	}
	if _, errno := r.getxattr(2, 3, "user.missing"); errno != linux.ENODATA {
		t.Fatalf("missing xattr: %v, want ENODATA", errno)
	}
	if errno := r.setxattr(2, 3, "user.k", "hello", 0); errno != 0 {
		t.Fatal(errno)
	}
	if errno := r.setxattr(2, 3, "user.empty", "", 0); errno != 0 {
		t.Fatal(errno)
	}
	if v, errno := r.getxattr(2, 3, "user.k"); errno != 0 || v != "hello" {
		t.Fatalf("get: %q %v", v, errno)
	}
	if v, errno := r.getxattr(2, 3, ""); errno != 0 || v != "user.empty\x00user.k\x00" {
		t.Fatalf("list: %q %v", v, errno)
	}
	if errno := r.setxattr(2, 3, "user.k", "again", fs.XattrCreate); errno != linux.EEXIST {
		t.Fatalf("XATTR_CREATE on an existing one: %v", errno)
	}
	// Through fs: the same attribute.
	n, _ := e.f.Resolve(e.cred, "/f")
	if v, err := e.f.GetXattr(e.cred, n, "user.k"); err != nil || string(v) != "hello" {
		t.Fatalf("fs sees %q %v", v, err)
	}
	tid := e.commit(t)
	// removexattr: size 0 with XATTR_REPLACE.
	if errno := r.setxattr(2, 3, "user.k", "", fs.XattrReplace); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := r.getxattr(2, 3, "user.k"); errno != linux.ENODATA {
		t.Fatalf("after remove: %v", errno)
	}
	// The past keeps it, read-only.
	r.walk(1, 4, "f@@"+tid)
	if v, errno := r.getxattr(4, 3, "user.k"); errno != 0 || v != "hello" {
		t.Fatalf("past xattr %q %v", v, errno)
	}
	if errno := r.setxattr(4, 3, "user.k", "no", 0); errno != linux.EROFS {
		t.Fatalf("setxattr in the past: %v", errno)
	}

	// An xattr walk on an open fid does not end its open early.
	r.must(msgTlopen, func(e *encoder) { e.u32(2); e.u32(uint32(p9.ReadOnly)) })
	r.getxattr(2, 3, "")
	if err := e.f.Remove(e.cred, e.f.Root(), "f", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Getattr(n); err != nil {
		t.Fatalf("open file ended by an xattr walk's clunk: %v", err)
	}
	r.clunk(2)
}

func TestSetuidBitsSurvive(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	create(t, root, "prog", "#!/bin/sh\n")
	walk(t, root).Mkdir("shared", 0o775, p9.NoUID, p9.NoGID)
	r := dialRaw(t, e.addr)
	r.attach(1, "")
	r.walk(1, 2, "prog")
	setattr := func(fid uint32, valid, mode uint32, nsec uint64) {
		r.must(msgTsetattr, func(e *encoder) {
			e.u32(fid)
			e.u32(valid)
			e.u32(mode)
			e.u32(0)
			e.u32(0)
			e.u64(0)
			e.u64(1000) // atime sec
			e.u64(nsec) // atime nsec
			e.u64(0)
			e.u64(0)
		})
	}
	setattr(2, setattrMode, 0o4755, 0)
	mode := func(path string) uint32 {
		n, _ := e.f.Resolve(e.cred, path)
		a, err := e.f.Getattr(n)
		if err != nil {
			t.Fatal(err)
		}
		return a.Mode
	}
	if m := mode("/prog"); m != 0o4755 {
		t.Fatalf("chmod 4755 gave %o", m)
	}
	r.walk(1, 3, "shared")
	// mode | atime given (0x10 ATIME, 0x80 ATIME_SET): the time is kept exact.
	setattr(3, setattrMode|0x10|0x80, 0o2775, 123)
	if m := mode("/shared"); m != 0o2775 {
		t.Fatalf("chmod 2775 gave %o", m)
	}
	n, _ := e.f.Resolve(e.cred, "/shared")
	if a, _ := e.f.Getattr(n); a.Atime.UnixNano() != 1000*1e9+123 {
		t.Fatalf("atime %v", a.Atime)
	}
	// Tlcreate with setgid.
	d := r.must(msgTlcreate, func(e *encoder) { e.u32(3); e.str("new"); e.u32(uint32(p9.WriteOnly)); e.u32(0o2755); e.u32(0) })
	_ = d
	if m := mode("/shared/new"); m != 0o2755 {
		t.Fatalf("create 2755 gave %o", m)
	}
}

// TestDiodTools lists and reads through Debian's diod tools, which ask for
// authentication first and attach as they are.
func TestDiodTools(t *testing.T) {
	diodls, err1 := exec.LookPath("/usr/sbin/diodls")
	diodcat, err2 := exec.LookPath("/usr/sbin/diodcat")
	if err1 != nil || err2 != nil {
		t.Skip("diod tools not installed (Debian package diod)")
	}
	e := newEnv(t)
	d, err := e.f.Mkdir(e.cred, e.f.Root(), "docs", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := e.f.Create(e.cred, d, "hello.txt", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("written through fs\n", 5000) // several reads
	if _, err := e.f.Write(e.cred, n, []byte(want), 0, false); err != nil {
		t.Fatal(err)
	}
	tid := e.commit(t)
	e.f.Write(e.cred, n, []byte("CHANGED"), 0, false)

	run := func(bin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"-s", e.addr, "-t", "20"}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %q: %v\nstdout: %s\nstderr: %s", bin, args, err, out.String(), errb.String())
		}
		return out.String()
	}
	if out := run(diodls, "-a", "/", "docs"); !strings.Contains(out, "hello.txt") {
		t.Fatalf("diodls: %q", out)
	}
	if out := run(diodls, "-a", "/docs", "-l", "."); !strings.Contains(out, "hello.txt") {
		t.Fatalf("diodls -l: %q", out)
	}
	if out := run(diodcat, "-a", "/docs@@"+tid, "hello.txt"); out != want {
		t.Fatalf("diodcat of the past: %d bytes, want %d", len(out), len(want))
	}
	if out := run(diodcat, "-a", "/", "docs/hello.txt"); !strings.HasPrefix(out, "CHANGED") || len(out) != len(want) {
		t.Fatalf("diodcat live: %q...", out[:min(len(out), 40)])
	}
}
