package nfs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// A raw NFSv3 client for the tests: it sends calls and reads replies on its
// own, so that calls can be pipelined and replies matched by xid.
type rawConn struct {
	t   testing.TB
	c   net.Conn
	br  *bufio.Reader
	wmu sync.Mutex
	xid atomic.Uint32
	// The credential of its calls.
	flavor uint32
	cred   []byte
}

// dialRaw connects as root (AUTH_SYS uid 0, gid 0).
func dialRaw(t testing.TB, addr string) *rawConn { return dialAs(t, addr, 0, 0) }

// dialAs connects as the AUTH_SYS identity uid, gid, groups.
func dialAs(t testing.TB, addr string, uid, gid uint32, groups ...uint32) *rawConn {
	return dialFlavor(t, addr, sunrpc.AuthSys, authSys(uid, gid, groups...))
}

// dialFlavor connects with a credential of the flavour and body given.
func dialFlavor(t testing.TB, addr string, flavor uint32, cred []byte) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c), flavor: flavor, cred: cred}
}

// authSys is the body of an AUTH_SYS credential.
func authSys(uid, gid uint32, groups ...uint32) []byte {
	w := &xdrWriter{}
	w.u32(0) // stamp
	w.opaque([]byte("test"))
	w.u32(uid)
	w.u32(gid)
	w.u32(uint32(len(groups)))
	for _, g := range groups {
		w.u32(g)
	}
	return w.b
}

// send sends one call and returns its xid.
func (r *rawConn) send(prog, proc uint32, args []byte) uint32 {
	xid := r.xid.Add(1)
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if _, err := r.c.Write(encodeCallAuth(xid, prog, 3, proc, r.flavor, r.cred, args)); err != nil {
		r.t.Fatalf("send: %v", err)
	}
	return xid
}

// burst writes the call records in buf in one segment and reads a reply to
// each xid in want, once, handing check the value want has for it and the
// reply's body.
func (r *rawConn) burst(buf []byte, want map[uint32]int, check func(v int, body []byte)) {
	r.t.Helper()
	if _, err := r.c.Write(buf); err != nil {
		r.t.Fatal(err)
	}
	for len(want) > 0 {
		xid, st, body := r.recv()
		v, ok := want[xid]
		if !ok || st != 0 {
			r.t.Fatalf("reply to xid %d (accept_stat %d): not a call sent or not answered once", xid, st)
		}
		delete(want, xid)
		check(v, body)
	}
}

// encodeCall is the record of one call as root, with its record mark.
func encodeCall(xid, prog, proc uint32, args []byte) []byte {
	return encodeCallVers(xid, prog, 3, proc, args)
}

func encodeCallVers(xid, prog, vers, proc uint32, args []byte) []byte {
	return encodeCallAuth(xid, prog, vers, proc, sunrpc.AuthSys, authSys(0, 0), args)
}

func encodeCallAuth(xid, prog, vers, proc, flavor uint32, cred, args []byte) []byte {
	w := &xdrWriter{}
	w.u32(0) // record mark, below
	w.u32(xid)
	w.u32(0) // CALL
	w.u32(2)
	w.u32(prog)
	w.u32(vers)
	w.u32(proc)
	w.u32(flavor)
	w.opaque(cred)
	w.u32(0) // AUTH_NONE verifier
	w.u32(0)
	w.b = append(w.b, args...)
	binary.BigEndian.PutUint32(w.b, uint32(len(w.b)-4)|1<<31)
	return w.b
}

// recvRecord reads one reply record.
func (r *rawConn) recvRecord() ([]byte, error) {
	r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var rec []byte
	for {
		var h [4]byte
		if _, err := io.ReadFull(r.br, h[:]); err != nil {
			return nil, err
		}
		v := binary.BigEndian.Uint32(h[:])
		frag := make([]byte, v&^(1<<31))
		if _, err := io.ReadFull(r.br, frag); err != nil {
			return nil, err
		}
		rec = append(rec, frag...)
		if v&(1<<31) != 0 {
			return rec, nil
		}
	}
}

// recv reads one reply, which must be accepted: its xid, accept status
// and body.
func (r *rawConn) recv() (uint32, uint32, []byte) {
	rec, err := r.recvRecord()
	if err != nil {
		r.t.Fatalf("recv: %v", err)
	}
	x := &xdrReader{b: rec}
	xid := x.u32()
	if x.u32() != 1 || x.u32() != 0 {
		r.t.Fatalf("xid %d: not an accepted reply", xid)
	}
	x.u32()
	x.opaque(400)
	st := x.u32()
	if x.err != nil {
		r.t.Fatalf("xid %d: short reply", xid)
	}
	return xid, st, x.b
}

// call sends one NFS call and returns the reply body, which must be
// accepted (SUCCESS).
func (r *rawConn) call(proc uint32, args []byte) *xdrReader {
	r.t.Helper()
	return r.callProg(progNFS, proc, args)
}

func (r *rawConn) callProg(prog, proc uint32, args []byte) *xdrReader {
	r.t.Helper()
	xid := r.send(prog, proc, args)
	got, st, body := r.recv()
	if got != xid {
		r.t.Fatalf("reply to xid %d, want %d", got, xid)
	}
	if st != 0 {
		r.t.Fatalf("proc %d: accept_stat %d", proc, st)
	}
	return &xdrReader{b: body}
}

func readArgs(fh []byte, off uint64, count uint32) []byte {
	w := &xdrWriter{}
	w.opaque(fh)
	w.u64(off)
	w.u32(count)
	return w.b
}

func writeArgs(fh []byte, off uint64, how uint32, data []byte) []byte {
	w := &xdrWriter{}
	w.opaque(fh)
	w.u64(off)
	w.u32(uint32(len(data)))
	w.u32(how)
	w.opaque(data)
	return w.b
}

func commitArgs(fh []byte) []byte { return readArgs(fh, 0, 0) }

// fattr is a fattr3.
type fattr struct {
	kind, mode, nlink, uid, gid uint32
	size                        uint64
	rdev                        [2]uint32
	fsid, ino                   uint64
	atime, mtime, ctime         time.Time
}

func (r *xdrReader) fattr() fattr {
	var a fattr
	a.kind, a.mode, a.nlink, a.uid, a.gid = r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
	a.size = r.u64()
	r.u64() // used
	a.rdev = [2]uint32{r.u32(), r.u32()}
	a.fsid, a.ino = r.u64(), r.u64()
	a.atime = time.Unix(int64(r.u32()), int64(r.u32()))
	a.mtime = time.Unix(int64(r.u32()), int64(r.u32()))
	a.ctime = time.Unix(int64(r.u32()), int64(r.u32()))
	return a
}

func (r *xdrReader) postOp() *fattr {
	if !r.bool() {
		return nil
	}
	a := r.fattr()
	return &a
}

// wccData returns the size before (or -1) and the attributes after.
func (r *xdrReader) wccData() (int64, *fattr) {
	pre := int64(-1)
	if r.bool() {
		pre = int64(r.u64())
		r.u64()
		r.u64()
	}
	return pre, r.postOp()
}

type readRes struct {
	status uint32
	attr   *fattr
	data   []byte
	eof    bool
	pad    []byte
}

func (r *rawConn) read(fh []byte, off uint64, count uint32) readRes {
	r.t.Helper()
	x := r.call(procRead, readArgs(fh, off, count))
	return parseRead(r.t, x)
}

func parseRead(t testing.TB, x *xdrReader) readRes {
	t.Helper()
	var res readRes
	res.status = x.u32()
	res.attr = x.postOp()
	if res.status != nfsOK {
		return res
	}
	n := x.u32()
	res.eof = x.bool()
	res.data = bytes.Clone(x.opaque(maxIO))
	if x.err != nil || int(n) != len(res.data) {
		t.Fatalf("READ reply: count %d, %d bytes of data, %v", n, len(res.data), x.err)
	}
	if len(x.b) != 0 {
		t.Fatalf("READ reply: %d bytes after the data", len(x.b))
	}
	// the padding is all the reply has left after the data's last byte
	res.pad = nil
	return res
}

type writeRes struct {
	status    uint32
	pre       int64
	post      *fattr
	count     uint32
	committed uint32
	verf      [8]byte
}

func (r *rawConn) write(fh []byte, off uint64, how uint32, data []byte) writeRes {
	r.t.Helper()
	return parseWrite(r.t, r.call(procWrite, writeArgs(fh, off, how, data)))
}

func parseWrite(t testing.TB, x *xdrReader) writeRes {
	t.Helper()
	var res writeRes
	res.status = x.u32()
	res.pre, res.post = x.wccData()
	if res.status == nfsOK {
		res.count = x.u32()
		res.committed = x.u32()
		copy(res.verf[:], x.fixed(8))
	}
	if x.err != nil || len(x.b) != 0 {
		t.Fatalf("WRITE reply: %v, %d bytes left", x.err, len(x.b))
	}
	return res
}

func (r *rawConn) commit(fh []byte) (uint32, [8]byte) {
	r.t.Helper()
	x := r.call(procCommit, commitArgs(fh))
	st := x.u32()
	x.wccData()
	var verf [8]byte
	if st == nfsOK {
		copy(verf[:], x.fixed(8))
	}
	if x.err != nil || len(x.b) != 0 {
		r.t.Fatalf("COMMIT reply: %v, %d bytes left", x.err, len(x.b))
	}
	return st, verf
}

// testServer is an NFS server in this process, and a handler with its key
// to make handles with.
type testServer struct {
	f    *fs.FS
	h    *handler
	addr string
}

var testKey = make([]byte, 32)

func newTestStore(t *testing.T) *history.Store {
	t.Helper()
	s, err := history.Open(t.TempDir(), history.Options{FlushInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newFS is a file system over a new store where root is root
// (no_root_squash): the tests act as root unless they say otherwise.
func newFS(t *testing.T) *fs.FS {
	return fs.New(newTestStore(t), fs.Options{Squash: fs.SquashNone})
}

// serveFS serves f.
func serveFS(t *testing.T, f *fs.FS) *testServer {
	t.Helper()
	addr := listenServe(t, f, Options{Key: testKey})
	return &testServer{f: f, h: &handler{f: f, key: testKey}, addr: addr}
}

// listenServe serves f on a new loopback port until the test ends, and
// returns the address. The end of the test stops every connection, as
// the server's shutdown does, and waits for them.
func listenServe(t *testing.T, f *fs.FS, opts Options) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(f, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var conns sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				srv.ServeConn(ctx, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		cancel()
		conns.Wait()
	})
	return l.Addr().String()
}

func (ts *testServer) fh(n fs.Node) []byte {
	a, err := ts.f.Getattr(n)
	if err != nil {
		panic(err)
	}
	return ts.h.encode(n, a.Kind == history.KindDir)
}

var root = fs.Cred{}

func mustCreate(t *testing.T, f *fs.FS, dir fs.Node, name string, mode uint32) fs.Node {
	t.Helper()
	n, _, err := f.Create(root, dir, name, mode, true)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// WRITE honours its stability argument, answers with the process's write
// verifier and wcc data, READ returns what was written with its EOF, and
// COMMIT answers the same verifier.
func TestReadWriteCommit(t *testing.T) {
	ts := serveFS(t, newFS(t))
	n := mustCreate(t, ts.f, ts.f.Root(), "f", 0o644)
	fh := ts.fh(n)
	c := dialRaw(t, ts.addr)

	w := c.write(fh, 0, stableUnstable, []byte("hello world"))
	if w.status != nfsOK || w.count != 11 || w.committed != stableUnstable || w.verf != writeVerf {
		t.Fatalf("WRITE UNSTABLE: %+v", w)
	}
	if w.pre != 0 || w.post == nil || w.post.size != 11 {
		t.Errorf("WRITE wcc: before %d, after %+v; want 0 and 11", w.pre, w.post)
	}
	for _, tc := range []struct {
		off   uint64
		count uint32
		want  string
		eof   bool
	}{{0, 100, "hello world", true}, {6, 3, "wor", false}, {6, 5, "world", true}, {11, 10, "", true}, {1 << 40, 10, "", true}, {1 << 63, 10, "", true}, {0, 0, "", false}} {
		r := c.read(fh, tc.off, tc.count)
		if r.status != nfsOK || string(r.data) != tc.want || r.eof != tc.eof {
			t.Errorf("READ %d+%d: status %d %q eof %v; want %q eof %v", tc.off, tc.count, r.status, r.data, r.eof, tc.want, tc.eof)
		}
		if r.attr == nil || r.attr.size != 11 || r.attr.kind != 1 {
			t.Errorf("READ %d+%d: attributes %+v", tc.off, tc.count, r.attr)
		}
	}
	for i, how := range []uint32{stableDataSync, stableFileSync} {
		w := c.write(fh, 11+uint64(i), how, []byte("!"))
		if w.status != nfsOK || w.count != 1 || w.committed != stableFileSync || w.verf != writeVerf {
			t.Errorf("WRITE stable %d: %+v, want FILE_SYNC", how, w)
		}
	}
	if st, verf := c.commit(fh); st != nfsOK || verf != writeVerf {
		t.Errorf("COMMIT: %d %x, want OK %x", st, verf, writeVerf)
	}
	if r := c.read(fh, 0, 100); string(r.data) != "hello world!!" {
		t.Errorf("READ after the stable writes: %q", r.data)
	}

	// Large and odd-sized payloads, across chunks; a count above rtmax
	// gets rtmax.
	big := randBytes(3*maxIO + 5)
	for off := 0; off < len(big); off += maxIO {
		end := min(off+maxIO, len(big))
		if w := c.write(fh, uint64(off), stableUnstable, big[off:end]); w.status != nfsOK || int(w.count) != end-off {
			t.Fatalf("WRITE %d bytes at %d: %+v", end-off, off, w)
		}
	}
	var got []byte
	for len(got) < len(big) {
		r := c.read(fh, uint64(len(got)), 4*maxIO)
		if r.status != nfsOK || len(r.data) == 0 || len(r.data) > maxIO {
			t.Fatalf("READ at %d: status %d, %d bytes", len(got), r.status, len(r.data))
		}
		got = append(got, r.data...)
		if r.eof != (len(got) == len(big)) {
			t.Fatalf("READ at %d: eof %v", len(got), r.eof)
		}
	}
	if !bytes.Equal(got, big) {
		t.Fatal("READ gives other bytes than were written")
	}
	// The data is there for fs (and so 9P) at once, before any commit.
	p := make([]byte, 5)
	if k, err := ts.f.Read(root, n, p, int64(3*maxIO)); err != nil || k != 5 || !bytes.Equal(p, big[3*maxIO:]) {
		t.Errorf("fs.Read of the unstable write: %d %v", k, err)
	}
}

// The padding after odd-sized READ data is zero, though reply buffers are
// reused.
func TestReadPaddingIsZero(t *testing.T) {
	ts := serveFS(t, newFS(t))
	ones := mustCreate(t, ts.f, ts.f.Root(), "ones", 0o644)
	odd := mustCreate(t, ts.f, ts.f.Root(), "odd", 0o644)
	if _, err := ts.f.Write(root, ones, bytes.Repeat([]byte{0xff}, 64<<10), 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.f.Write(root, odd, []byte("abcde"), 0, false); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, ts.addr)
	for i := 0; i < 50; i++ {
		c.read(ts.fh(ones), 0, 64<<10)
		for k := uint32(1); k <= 4; k++ {
			xid := c.send(progNFS, procRead, readArgs(ts.fh(odd), 0, k))
			_, _, body := c.recv()
			pad := body[len(body)-int((4-k%4)%4):]
			if !bytes.Equal(pad, make([]byte, len(pad))) {
				t.Fatalf("xid %d: READ of %d bytes padded with %x", xid, k, pad)
			}
		}
	}
}

// Every status the data procedures answer.
func TestDataStatuses(t *testing.T) {
	s := newTestStore(t)
	f := fs.New(s, fs.Options{Squash: fs.SquashNone})
	ts := serveFS(t, f)
	ro := serveFS(t, fs.New(s, fs.Options{Squash: fs.SquashNone, ReadOnly: true}))

	file := mustCreate(t, f, f.Root(), "file", 0o644)
	if _, err := f.Write(root, file, []byte("old"), 0, false); err != nil {
		t.Fatal(err)
	}
	tid, err := s.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(root, file, []byte("new"), 0, false); err != nil {
		t.Fatal(err)
	}
	private := mustCreate(t, f, f.Root(), "private", 0o600)
	dir, err := f.Mkdir(root, f.Root(), "dir", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	link, err := f.Symlink(root, f.Root(), "link", "file")
	if err != nil {
		t.Fatal(err)
	}
	gone := mustCreate(t, f, f.Root(), "gone", 0o644)
	goneFH := ts.fh(gone)
	if err := f.Remove(root, f.Root(), "gone", false); err != nil {
		t.Fatal(err)
	}
	past := fs.Node{Obj: file.Obj, At: tid}
	versions := fs.Node{Obj: file.Obj, At: history.Live, Versions: true}
	forged := bytes.Repeat([]byte{7}, handleLen)

	c, cu, cro := dialRaw(t, ts.addr), dialAs(t, ts.addr, 1000, 1000), dialRaw(t, ro.addr)
	data := []byte("x")
	for _, tc := range []struct {
		what      string
		c         *rawConn
		fh        []byte
		read, wr  uint32
		commit    uint32
		writeHow  uint32
		writeOff  uint64
		readAttrs bool
	}{
		{"a forged handle", c, forged, nfsErrBadHandl, nfsErrBadHandl, nfsErrBadHandl, 0, 0, false},
		{"a removed file", c, goneFH, nfsErrStale, nfsErrStale, nfsErrStale, 0, 0, false},
		{"a directory", c, ts.fh(dir), 21, 21, nfsOK, 0, 0, true},
		{"a symlink", c, ts.fh(link), nfsErrInval, nfsErrInval, nfsOK, 0, 0, true},
		{"the past", c, ts.fh(past), nfsOK, 30, nfsOK, 0, 0, true},
		{"a versions directory", c, ts.fh(versions), 21, 30, nfsOK, 0, 0, true},
		{"a read-only export", cro, ts.fh(file), nfsOK, 30, nfsOK, 0, 0, true},
		{"another's private file", cu, ts.fh(private), 13, 13, nfsOK, 0, 0, true},
		{"a bad stable_how", c, ts.fh(file), nfsOK, nfsErrInval, nfsOK, 3, 0, true},
		{"an offset past the largest file", c, ts.fh(file), nfsOK, 27, nfsOK, 0, 1 << 62, true},
		{"an offset past int64", c, ts.fh(file), nfsOK, 27, nfsOK, 0, 1<<63 + 5, true},
	} {
		r := tc.c.read(tc.fh, 0, 10)
		if r.status != tc.read || (r.attr != nil) != tc.readAttrs {
			t.Errorf("READ of %s: status %d, attributes %v; want %d, %v", tc.what, r.status, r.attr != nil, tc.read, tc.readAttrs)
		}
		w := tc.c.write(tc.fh, tc.writeOff, tc.writeHow, data)
		if w.status != tc.wr {
			t.Errorf("WRITE to %s: status %d, want %d", tc.what, w.status, tc.wr)
		}
		if st, _ := tc.c.commit(tc.fh); st != tc.commit {
			t.Errorf("COMMIT of %s: status %d, want %d", tc.what, st, tc.commit)
		}
	}
	// Nothing above changed the file, and the past reads the past.
	if r := c.read(ts.fh(file), 0, 10); string(r.data) != "new" {
		t.Errorf("the file after the refused writes: %q", r.data)
	}
	if r := c.read(ts.fh(past), 0, 10); string(r.data) != "old" || r.attr == nil || r.attr.size != 3 {
		t.Errorf("the file's past: %q %+v", r.data, r.attr)
	}
	// A call that does not decode: GARBAGE_ARGS.
	xid := c.send(progNFS, procWrite, []byte{0, 0, 0, 32, 1})
	if got, st, _ := c.recv(); got != xid || st != 4 {
		t.Errorf("a truncated WRITE: xid %d accept_stat %d, want GARBAGE_ARGS(4)", got, st)
	}
}

// FSINFO advertises 1 MiB transfers, and CANSETTIME only where times can
// be set.
func TestFsinfo(t *testing.T) {
	s := newTestStore(t)
	f := fs.New(s, fs.Options{Squash: fs.SquashNone})
	ts := serveFS(t, f)
	ro := serveFS(t, fs.New(s, fs.Options{Squash: fs.SquashNone, ReadOnly: true}))
	for _, tc := range []struct {
		c     *rawConn
		props uint32
	}{{dialRaw(t, ts.addr), 0x1b}, {dialRaw(t, ro.addr), 0x0b}} {
		x := tc.c.call(procFsinfo, func() []byte { w := &xdrWriter{}; w.opaque(ts.fh(f.Root())); return w.b }())
		if st := x.u32(); st != nfsOK {
			t.Fatalf("FSINFO: %d", st)
		}
		if a := x.postOp(); a == nil || a.kind != 2 {
			t.Errorf("FSINFO attributes: %+v", a)
		}
		var v [7]uint32
		for i := range v {
			v[i] = x.u32()
		}
		maxSize := x.u64()
		delta := x.u64()
		props := x.u32()
		if x.err != nil || len(x.b) != 0 {
			t.Fatalf("FSINFO reply: %v, %d bytes left", x.err, len(x.b))
		}
		if v != [7]uint32{maxIO, maxIO, 4096, maxIO, maxIO, 4096, 8192} || maxSize != 1<<62 || delta != 1 || props != tc.props {
			t.Errorf("FSINFO: %v max %d delta %d properties %#x", v, maxSize, delta, props)
		}
	}
	x := dialRaw(t, ts.addr).call(procFsinfo, func() []byte { w := &xdrWriter{}; w.opaque(make([]byte, handleLen)); return w.b }())
	if st := x.u32(); st != nfsErrBadHandl {
		t.Errorf("FSINFO of a forged handle: %d", st)
	}
}

// Calls of one connection are answered at once, replies in the order they
// are ready; at most
// sunrpc.MaxInflight calls of a connection are taken in at a time. (A quick call
// with nothing after it may be answered by the reading goroutine itself:
// the calls held up here are COMMIT and WRITE, which never are.)
func TestConcurrentCalls(t *testing.T) {
	ts := serveFS(t, newFS(t))
	n := mustCreate(t, ts.f, ts.f.Root(), "f", 0o644)
	fh := ts.fh(n)
	c := dialRaw(t, ts.addr)

	// A COMMIT held up does not hold up a GETATTR sent after it.
	release := make(chan struct{})
	hook := func(c *sunrpc.Call) {
		if c.Proc == procCommit {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
	}
	testHook.Store(&hook)
	t.Cleanup(func() { testHook.Store(nil) })
	rx := c.send(progNFS, procCommit, commitArgs(fh))
	gx := c.send(progNFS, procGetattr, func() []byte { w := &xdrWriter{}; w.opaque(fh); return w.b }())
	fx := c.send(progNFS, procFsstat, func() []byte { w := &xdrWriter{}; w.opaque(fh); return w.b }())
	got := map[uint32]bool{}
	for i := 0; i < 2; i++ {
		xid, st, _ := c.recv()
		if st != 0 {
			t.Fatalf("xid %d: accept_stat %d", xid, st)
		}
		got[xid] = true
	}
	if !got[gx] || !got[fx] {
		t.Fatalf("with a COMMIT held up, replies to %v; want GETATTR %d and FSSTAT %d", got, gx, fx)
	}
	close(release)
	if xid, _, _ := c.recv(); xid != rx {
		t.Fatalf("reply to %d, want the COMMIT %d", xid, rx)
	}

	// Held-up WRITEs: no more than sunrpc.MaxInflight are taken in at once.
	var now, most atomic.Int32
	hold := make(chan struct{})
	hook2 := func(c *sunrpc.Call) {
		if c.Proc != procWrite {
			return
		}
		k := now.Add(1)
		for {
			m := most.Load()
			if k <= m || most.CompareAndSwap(m, k) {
				break
			}
		}
		select {
		case <-hold:
		case <-time.After(20 * time.Second):
		}
		now.Add(-1)
	}
	testHook.Store(&hook2)
	const calls = 3 * sunrpc.MaxInflight
	want := map[uint32]int{}
	for i := 0; i < calls; i++ {
		want[c.send(progNFS, procWrite, writeArgs(fh, uint64(i)*4096, stableFileSync, bytes.Repeat([]byte{byte(i)}, 4096)))] = i
	}
	deadline := time.Now().Add(10 * time.Second)
	for now.Load() < sunrpc.MaxInflight && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if k := now.Load(); k != sunrpc.MaxInflight {
		t.Errorf("%d WRITEs in progress at once, want %d", k, sunrpc.MaxInflight)
	}
	close(hold)
	for i := 0; i < calls; i++ {
		xid, st, body := c.recv()
		if _, ok := want[xid]; !ok || st != 0 {
			t.Fatalf("reply to xid %d (accept_stat %d): not a WRITE sent", xid, st)
		}
		delete(want, xid)
		if w := parseWrite(t, &xdrReader{b: body}); w.status != nfsOK || w.count != 4096 {
			t.Fatalf("WRITE: %+v", w)
		}
	}
	if m := most.Load(); m > sunrpc.MaxInflight {
		t.Errorf("%d WRITEs in progress at most, want at most %d", m, sunrpc.MaxInflight)
	}
	testHook.Store(nil)
	for i := 0; i < calls; i++ {
		r := c.read(fh, uint64(i)*4096, 4096)
		if !bytes.Equal(r.data, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("block %d: %x...", i, r.data[:8])
		}
	}
}

// Calls that arrive together, in one segment, are answered by the reader
// with their replies held back until the input runs dry (or the slots run
// out): every call gets its reply, also when more arrive than there are
// slots, and when the reads are slow.
func TestBurstInOneWrite(t *testing.T) {
	ts := serveFS(t, newFS(t))
	n := mustCreate(t, ts.f, ts.f.Root(), "f", 0o644)
	fh := ts.fh(n)
	c := dialRaw(t, ts.addr)
	data := randBytes(64 << 10)
	if w := c.write(fh, 0, stableUnstable, data); w.status != nfsOK {
		t.Fatalf("WRITE: %+v", w)
	}
	getattr := func() []byte { w := &xdrWriter{}; w.opaque(fh); return w.b }()
	burst := func(calls int) {
		t.Helper()
		var buf []byte
		want := map[uint32]int{} // xid -> offset read, -1 for a GETATTR
		for i := 0; i < calls; i++ {
			xid := c.xid.Add(1)
			proc, args, off := uint32(procGetattr), getattr, -1
			if i%2 == 1 {
				off = i % 16 * 4096
				proc, args = procRead, readArgs(fh, uint64(off), 4096)
			}
			want[xid] = off
			buf = append(buf, encodeCall(xid, progNFS, proc, args)...)
		}
		// Last, an FSSTAT: the replies held back must not wait for
		// another call from the client.
		xid := c.xid.Add(1)
		want[xid] = -2
		buf = append(buf, encodeCall(xid, progNFS, procFsstat, getattr)...)
		c.burst(buf, want, func(off int, body []byte) {
			if off >= 0 {
				r := parseRead(t, &xdrReader{b: body})
				if r.status != nfsOK || !bytes.Equal(r.data, data[off:off+4096]) {
					t.Fatalf("READ at %d in a burst: status %d, %d bytes, or not the data written", off, r.status, len(r.data))
				}
			} else if binary.BigEndian.Uint32(body) != nfsOK {
				t.Fatalf("GETATTR or FSSTAT in a burst: status %d", binary.BigEndian.Uint32(body))
			}
		})
	}
	burst(5)
	burst(3 * sunrpc.MaxInflight)
	// Slow reads, answered inline one after another, hold back nothing for good.
	hook := func(c *sunrpc.Call) {
		if c.Proc == procRead {
			time.Sleep(3 * time.Millisecond)
		}
	}
	testHook.Store(&hook)
	t.Cleanup(func() { testHook.Store(nil) })
	burst(3 * sunrpc.MaxInflight)
	testHook.Store(nil)
	burst(3 * sunrpc.MaxInflight)
}

// Many clients pipelining reads and writes of their own files and of a
// shared one, with -race watching.
func TestPipelinedLoad(t *testing.T) {
	ts := serveFS(t, newFS(t))
	shared := ts.fh(mustCreate(t, ts.f, ts.f.Root(), "shared", 0o644))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		fh := ts.fh(mustCreate(t, ts.f, ts.f.Root(), fmt.Sprintf("f%d", g), 0o644))
		c := dialRaw(t, ts.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			const blocks, size = 64, 16 << 10
			pending := map[uint32]int{}
			for i := 0; i < blocks; i++ {
				pending[c.send(progNFS, procWrite, writeArgs(fh, uint64(i*size), uint32(i%3), bytes.Repeat([]byte{byte(i + g)}, size)))] = i
				pending[c.send(progNFS, procWrite, writeArgs(shared, uint64(i*size), stableUnstable, bytes.Repeat([]byte{byte(g)}, size)))] = -1
				pending[c.send(progNFS, procRead, readArgs(shared, uint64(i*size), size))] = -2
			}
			pending[c.send(progNFS, procCommit, commitArgs(fh))] = -3
			for len(pending) > 0 {
				xid, st, body := c.recv()
				if _, ok := pending[xid]; !ok || st != 0 {
					t.Errorf("unexpected reply %d (%d)", xid, st)
					return
				}
				if binary.BigEndian.Uint32(body) != nfsOK {
					t.Errorf("xid %d: status %d", xid, binary.BigEndian.Uint32(body))
				}
				delete(pending, xid)
			}
			for i := 0; i < blocks; i++ {
				r := c.read(fh, uint64(i*size), size)
				if !bytes.Equal(r.data, bytes.Repeat([]byte{byte(i + g)}, size)) {
					t.Errorf("client %d block %d differs", g, i)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Handles whose MAC was checked are remembered, never forged ones, and the
// memory of them is bounded.
func TestHandleMACRemembered(t *testing.T) {
	f := newFS(t)
	h := &handler{f: f, key: testKey}
	n := mustCreate(t, f, f.Root(), "f", 0o644)
	fh := h.encode(n, false)
	for i := 0; i < 2; i++ {
		if got, _, err := h.decode(fh); err != nil || got != n {
			t.Fatalf("decode %d: %v %v", i, got, err)
		}
	}
	forged := bytes.Clone(fh)
	forged[5] ^= 1
	for i := 0; i < 2; i++ {
		if _, _, err := h.decode(forged); err != errBadHandle {
			t.Fatalf("a forged handle decoded (%d): %v", i, err)
		}
	}
	for i := 0; i < verifiedMax+10; i++ {
		if _, _, err := h.decode(h.encode(fs.Node{Obj: history.ObjID(i + 100), At: history.Live}, false)); err != nil {
			t.Fatal(err)
		}
	}
	if k := h.nverified.Load(); k > verifiedMax {
		t.Errorf("%d handles remembered, want at most %d", k, verifiedMax)
	}
}

// Large READs that arrive together are answered side by side, not one
// after another by the reader (checking their blocks is most of their
// cost), and each gets its own data.
func TestLargeReadsInABurstAnsweredSideBySide(t *testing.T) {
	ts := serveFS(t, newFS(t))
	fh := ts.fh(mustCreate(t, ts.f, ts.f.Root(), "f", 0o644))
	c := dialRaw(t, ts.addr)
	data := randBytes(4 << 20)
	for off := 0; off < len(data); off += 512 << 10 {
		if w := c.write(fh, uint64(off), stableUnstable, data[off:off+512<<10]); w.status != nfsOK {
			t.Fatalf("WRITE: %+v", w)
		}
	}
	var mu sync.Mutex
	inside, most := 0, 0
	hook := func(c *sunrpc.Call) {
		if c.Proc != procRead {
			return
		}
		mu.Lock()
		inside++
		most = max(most, inside)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inside--
		mu.Unlock()
	}
	testHook.Store(&hook)
	t.Cleanup(func() { testHook.Store(nil) })

	const size = largeReadMin * 3
	var buf []byte
	want := map[uint32]int{} // xid -> offset
	for i := 0; i < 8; i++ {
		xid := c.xid.Add(1)
		off := i * (len(data) / 7) // the last runs past the end
		want[xid] = off
		buf = append(buf, encodeCall(xid, progNFS, procRead, readArgs(fh, uint64(off), size))...)
	}
	c.burst(buf, want, func(off int, body []byte) {
		r := parseRead(t, &xdrReader{b: body})
		end := min(off+size, len(data))
		if r.status != nfsOK || !bytes.Equal(r.data, data[off:end]) || r.eof != (end == len(data)) {
			t.Fatalf("READ at %d: status %d, %d bytes, eof %v, or not the data written", off, r.status, len(r.data), r.eof)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	if most < 2 {
		t.Errorf("at most %d large READs were answered at once", most)
	}
}

// Clients that go away mid-call: one whose connection ends inside a WRITE
// record, and one that sends whole WRITEs and closes without reading the
// replies. The cut-off WRITE changes nothing; the whole ones are applied;
// the server's goroutines for those connections end; and other clients
// are served throughout, their committed data intact.
func TestClientsGoneMidCall(t *testing.T) {
	ts := serveFS(t, newFS(t))
	f := ts.fh(mustCreate(t, ts.f, ts.f.Root(), "f", 0o644))
	g := ts.fh(mustCreate(t, ts.f, ts.f.Root(), "g", 0o644))
	c := dialRaw(t, ts.addr)
	kept := randBytes(64 << 10)
	if w := c.write(f, 0, stableUnstable, kept); w.status != nfsOK {
		t.Fatalf("WRITE: %+v", w)
	}
	if st, _ := c.commit(f); st != nfsOK {
		t.Fatalf("COMMIT: status %d", st)
	}
	baseline := runtime.NumGoroutine()

	for i := 0; i < 20; i++ {
		// A 1 MiB WRITE over f, cut off after 100 KiB.
		cut := dialRaw(t, ts.addr)
		rec := encodeCall(1, progNFS, procWrite, writeArgs(f, 0, stableFileSync, randBytes(1<<20)))
		if _, err := cut.c.Write(rec[:100<<10]); err != nil {
			t.Fatal(err)
		}
		cut.c.Close()
		// Two whole WRITEs to g, and gone before the replies.
		gone := dialRaw(t, ts.addr)
		buf := encodeCall(1, progNFS, procWrite, writeArgs(g, uint64(i)*8, stableUnstable, []byte("unstable")))
		buf = append(buf, encodeCall(2, progNFS, procWrite, writeArgs(g, uint64(i)*8+4, stableFileSync, []byte("SYNC")))...)
		if _, err := gone.c.Write(buf); err != nil {
			t.Fatal(err)
		}
		gone.c.Close()
	}

	// The calls of one connection run side by side (a FILE_SYNC WRITE in a
	// goroutine of its own): wait for the last of them.
	want := bytes.Repeat([]byte("unstSYNC"), 20)
	for deadline := time.Now().Add(10 * time.Second); ; {
		r := c.read(g, 0, 1<<10)
		if r.status != nfsOK {
			t.Fatalf("READ g: status %d", r.status)
		}
		if bytes.Equal(r.data, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the whole WRITEs of clients gone before their replies: g is %q, want %q", r.data, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := c.read(f, 0, 1<<20)
	if r.status != nfsOK || !bytes.Equal(r.data, kept) || !r.eof {
		t.Fatalf("f after cut-off WRITEs: status %d, %d bytes (eof %v), want the 64 KiB committed before", r.status, len(r.data), r.eof)
	}
	if w := c.write(f, 0, stableFileSync, []byte("still served")); w.status != nfsOK {
		t.Fatalf("WRITE after them: %+v", w)
	}
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > baseline+2; {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before the 40 connections: theirs did not end", runtime.NumGoroutine(), baseline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A procedure that panics (a bug) fails its call with SYSTEM_ERR and logs
// why; the connection goes on, and the client is not left waiting for a
// reply.
func TestPanickingCallFailsAlone(t *testing.T) {
	f, logger, logs := mountFixture(t)
	hook := func(c *sunrpc.Call) {
		if c.Prog == progNFS && c.Proc == procFsinfo {
			panic("a bug")
		}
	}
	testHook.Store(&hook)
	t.Cleanup(func() { testHook.Store(nil) })
	addr := listenServe(t, f, Options{Key: testKey, Logger: logger})
	ts := &testServer{f: f, h: &handler{f: f, key: testKey}, addr: addr}
	c := dialRaw(t, addr)
	root := xdrHandle(ts.fh(f.Root()))
	xid := c.send(progNFS, procFsinfo, root)
	if got, st, _ := c.recv(); got != xid || st != 5 {
		t.Fatalf("FSINFO that panics: xid %d accept_stat %d, want %d and 5 (SYSTEM_ERR)", got, st, xid)
	}
	if st := c.call(procGetattr, root).u32(); st != nfsOK {
		t.Fatalf("GETATTR after it on the same connection: status %d", st)
	}
	if l := logs.take(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "a bug") {
		t.Errorf("the panic was not logged:\n%s", l)
	}
}
