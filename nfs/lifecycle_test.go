package nfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// A record the engine finds damaged answers EIO, not STALE (the object
// exists), and the failure is logged once, as an error naming it; an
// object that does not exist is STALE and logs nothing.
func TestDamagedRecordIsEIO(t *testing.T) {
	dir := t.TempDir()
	s, err := history.Open(dir, history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f := fs.New(s, fs.Options{Squash: fs.SquashNone})
	marker := strings.Repeat("damage-marker-", 8)
	link, err := f.Symlink(root, f.Root(), "link", marker)
	if err != nil {
		t.Fatal(err)
	}
	// A file whose inode record holds a byte string found nowhere else:
	// its owner and group.
	file := mustCreate(t, f, f.Root(), "file", 0o644)
	uid, gid := uint32(0x5afec0de), uint32(0x0ddba115)
	if _, err := f.Setattr(root, file, fs.SetAttr{Uid: &uid, Gid: &gid}); err != nil {
		t.Fatal(err)
	}
	owner := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uid), gid)
	gone := mustCreate(t, f, f.Root(), "gone", 0o644)
	if err := f.Remove(root, f.Root(), "gone", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Every copy of the records in the index (bbolt leaves stale copies in
	// free pages) gets a flipped byte.
	path := filepath.Join(dir, "index.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{[]byte(marker), owner} {
		hits := 0
		for off := 0; ; {
			i := bytes.Index(b[off:], m)
			if i < 0 {
				break
			}
			b[off+i+len(m)/2] ^= 0x40
			hits++
			off += i + len(m)
		}
		if hits == 0 {
			t.Fatalf("%x is not in index.db", m)
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = history.Open(dir, history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f = fs.New(s, fs.Options{Squash: fs.SquashNone})
	logs := &logBuf{}
	addr := listenServe(t, f, Options{Key: testKey, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	h := &handler{f: f, key: testKey}
	c := dialRaw(t, addr)

	for _, tc := range []struct {
		what string
		proc uint32
		n    fs.Node
	}{
		{"GETATTR of the file whose inode is damaged", procGetattr, file},
		{"READLINK of the symlink whose target is damaged", procReadlink, link},
	} {
		if st := c.call(tc.proc, xdrHandle(h.encode(tc.n, false))).u32(); st != nfsErrIO {
			t.Errorf("%s: status %d, want EIO (5)", tc.what, st)
		}
		l := logs.take()
		if n := strings.Count(l, `msg="nfs: I/O error"`); n != 1 || !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "checksum") {
			t.Errorf("%s: logged %d times, want once as an error naming the damage:\n%s", tc.what, n, l)
		}
	}
	if st := c.call(procGetattr, xdrHandle(h.encode(gone, false))).u32(); st != nfsErrStale {
		t.Errorf("GETATTR of a removed file: status %d, want STALE", st)
	}
	if l := logs.take(); l != "" {
		t.Errorf("a stale handle logged:\n%s", l)
	}
}

// When ServeConn's context ends, the connection reads no more calls; a
// call in flight completes and its reply is sent; then the connection is
// closed and ServeConn returns.
func TestServeConnDrainsOnCancel(t *testing.T) {
	f := newFS(t)
	h := &handler{f: f, key: testKey}
	fh := h.encode(mustCreate(t, f, f.Root(), "f", 0o644), false)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := New(f, Options{Key: testKey})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc, err := l.Accept()
		if err != nil {
			return
		}
		srv.ServeConn(ctx, sc)
	}()

	entered, release := make(chan struct{}), make(chan struct{})
	hook := func(c *sunrpc.Call) {
		if c.Proc == procCommit {
			close(entered)
			<-release
		}
	}
	testHook.Store(&hook)
	t.Cleanup(func() { testHook.Store(nil) })

	c := dialRaw(t, l.Addr().String())
	xid := c.send(progNFS, procCommit, commitArgs(fh))
	<-entered
	cancel()
	select {
	case <-done:
		t.Fatal("ServeConn returned with a call in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	got, st, body := c.recv()
	x := &xdrReader{b: body}
	if got != xid || st != 0 || x.u32() != nfsOK {
		t.Fatalf("the COMMIT in flight: reply to %d, accept_stat %d; want %d answered NFS3_OK", got, st, xid)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return after the call in flight was answered")
	}
	// A call sent now is not answered: the connection is closed.
	c.send(progNFS, procGetattr, xdrHandle(fh))
	if rec, err := c.recvRecord(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after ServeConn returned: %x, %v; want the connection closed", rec, err)
	}
}

// A call of another RPC version than 2 is refused MSG_DENIED,
// RPC_MISMATCH (2 to 2) and the connection goes on; a record that is no
// call closes the connection, and other connections are served as before.
func TestRPCMismatchAndRecordsThatAreNoCalls(t *testing.T) {
	ts := serveFS(t, newFS(t))
	fh := xdrHandle(ts.fh(ts.f.Root()))
	c := dialRaw(t, ts.addr)
	rec := encodeCall(5, progNFS, procGetattr, fh)
	binary.BigEndian.PutUint32(rec[12:], 3) // rpcvers
	if _, err := c.c.Write(rec); err != nil {
		t.Fatal(err)
	}
	got, err := c.recvRecord()
	x := &xdrReader{b: got}
	if xid, mtype, stat, rstat, lo, hi := x.u32(), x.u32(), x.u32(), x.u32(), x.u32(), x.u32(); err != nil || xid != 5 || mtype != 1 ||
		stat != 1 || rstat != 0 || lo != 2 || hi != 2 || x.err != nil || len(x.b) != 0 {
		t.Fatalf("RPC version 3: %x (%v); want MSG_DENIED RPC_MISMATCH 2 to 2", got, err)
	}
	if st := c.call(procGetattr, fh).u32(); st != nfsOK {
		t.Fatalf("GETATTR after it: %d", st)
	}
	other := dialRaw(t, ts.addr)
	for _, bad := range [][]byte{
		func() []byte {
			r := encodeCall(6, progNFS, procGetattr, fh)
			binary.BigEndian.PutUint32(r[8:], 1)
			return r
		}(), // a REPLY
		{0x80, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0},                                                // too short for a call
		func() []byte { r := encodeCall(7, progNFS, procGetattr, nil); return r[:len(r)-4] }(), // no verifier
	} {
		c := dialRaw(t, ts.addr)
		binary.BigEndian.PutUint32(bad, uint32(len(bad)-4)|1<<31)
		if _, err := c.c.Write(bad); err != nil {
			t.Fatal(err)
		}
		if rec, err := c.recvRecord(); !errors.Is(err, io.EOF) {
			t.Errorf("a record that is no call (%x): got %x, %v; want the connection closed", bad, rec, err)
		}
		if st := other.call(procGetattr, fh).u32(); st != nfsOK {
			t.Fatalf("GETATTR on another connection: %d", st)
		}
	}
}

// countingObserver records the calls it is told of.
type countingObserver struct {
	mu  sync.Mutex
	ops []string
}

func (o *countingObserver) Request(proto, op string, _ time.Time, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, fmt.Sprintf("%s %s %v", proto, op, err != nil))
}

func (o *countingObserver) Bytes(string, int, int) {}

// Every call is counted once, at dispatch, by its procedure's name and
// whether it failed: answered, refused or not decoded alike.
func TestEveryCallObservedOnce(t *testing.T) {
	f := newFS(t)
	obs := &countingObserver{}
	addr := listenServe(t, f, Options{Key: testKey, Observer: obs})
	h := &handler{f: f, key: testKey}
	fh := xdrHandle(h.encode(mustCreate(t, f, f.Root(), "f", 0o644), false))
	c := dialRaw(t, addr)
	c.call(procNull, nil)
	c.call(procGetattr, fh)
	c.read(h.encode(mustCreate(t, f, f.Root(), "g", 0o644), false), 0, 10)
	c.call(procLookup, diropArgs(h.encode(f.Root(), true), "missing"))
	c.callProg(progMount, mountProcUmntAll, nil)
	c.send(progNFS, procGetattr, []byte{1})
	c.recv()
	if _, err := c.c.Write(encodeCallAuth(99, progNFS, 3, procGetattr, 6, nil, fh)); err != nil {
		t.Fatal(err)
	}
	c.recvRecord()
	c.call(procNull, nil) // the calls before it are counted by now
	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := []string{"nfs null false", "nfs getattr false", "nfs read false", "nfs lookup true",
		"nfs umountall false", "nfs getattr true", "nfs getattr true", "nfs null false"}
	if !slices.Equal(obs.ops, want) {
		t.Errorf("observed %q, want %q", obs.ops, want)
	}
}
