package nfs

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// fuzzFixture is a store with a directory, a file with data and a
// symlink, served by a handler with testKey: handles of its objects are
// the same in every run, so a corpus entry keeps naming them.
type fuzzFixture struct {
	h                  *handler
	root, dir, file, l []byte
}

func newFuzzFixture(f *testing.F) fuzzFixture {
	s, err := history.Open(f.TempDir(), history.Options{FlushInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	fsys := fs.New(s, fs.Options{Squash: fs.SquashNone})
	d, err := fsys.Mkdir(root, fsys.Root(), "d", 0o755)
	if err != nil {
		f.Fatal(err)
	}
	file, _, err := fsys.Create(root, d, "f", 0o644, true)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := fsys.Write(root, file, []byte("some data in a file"), 0, false); err != nil {
		f.Fatal(err)
	}
	l, err := fsys.Symlink(root, d, "l", "f")
	if err != nil {
		f.Fatal(err)
	}
	h := &handler{f: fsys, key: testKey, log: slog.New(slog.DiscardHandler), observer: fs.NopObserver{}}
	return fuzzFixture{h: h, root: h.encode(fsys.Root(), true), dir: h.encode(d, true),
		file: h.encode(file, false), l: h.encode(l, false)}
}

// fuzzProcs are the procedures FuzzProcedureArgs picks from.
var fuzzProcs = func() []procKey {
	var ks []procKey
	for k := range procedures {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b procKey) int {
		if a.prog != b.prog {
			return int(a.prog) - int(b.prog)
		}
		return int(a.proc) - int(b.proc)
	})
	return ks
}()

// seedArgs are well-formed arguments of every procedure, over the
// fixture's objects.
func seedArgs(fx fuzzFixture) map[procKey][]byte {
	w := func(fn func(w *xdrWriter)) []byte { x := &xdrWriter{}; fn(x); return x.b }
	fh := func(h []byte) func(w *xdrWriter) { return func(w *xdrWriter) { w.opaque(h) } }
	sattr := func(w *xdrWriter) {
		w.bool(true)
		w.u32(0o640)
		w.bool(true)
		w.u32(7)
		w.bool(false)
		w.bool(true)
		w.u64(3)
		w.u32(2)
		w.u64(1)
		w.u32(1)
	}
	dirop := func(name string) func(w *xdrWriter) {
		return func(w *xdrWriter) { w.opaque(fx.dir); w.opaque([]byte(name)) }
	}
	n := func(k uint32) procKey { return procKey{progNFS, k} }
	m := func(k uint32) procKey { return procKey{progMount, k} }
	return map[procKey][]byte{
		n(procNull):     nil,
		n(procGetattr):  w(fh(fx.file)),
		n(procSetattr):  w(func(w *xdrWriter) { w.opaque(fx.file); sattr(w); w.bool(true); w.u64(5) }),
		n(procLookup):   w(dirop("f")),
		n(procAccess):   w(func(w *xdrWriter) { w.opaque(fx.dir); w.u32(0x3f) }),
		n(procReadlink): w(fh(fx.l)),
		n(procRead):     readArgs(fx.file, 2, 100),
		n(procWrite):    writeArgs(fx.file, 4, stableUnstable, []byte("more")),
		n(procCreate):   w(func(w *xdrWriter) { dirop("new")(w); w.u32(1); sattr(w) }),
		n(procMkdir):    w(func(w *xdrWriter) { dirop("sub")(w); sattr(w) }),
		n(procSymlink):  w(func(w *xdrWriter) { dirop("sl")(w); sattr(w); w.opaque([]byte("target")) }),
		n(procMknod):    w(func(w *xdrWriter) { dirop("dev")(w); w.u32(4); sattr(w); w.u32(1); w.u32(3) }),
		n(procRemove):   w(dirop("new")),
		n(procRmdir):    w(dirop("sub")),
		n(procRename):   w(func(w *xdrWriter) { dirop("f")(w); dirop("g")(w) }),
		n(procLink):     w(func(w *xdrWriter) { w.opaque(fx.file); dirop("hard")(w) }),
		n(procReaddir):  w(func(w *xdrWriter) { w.opaque(fx.dir); w.u64(0); w.u64(0); w.u32(4096) }),
		n(procReaddirPlus): w(func(w *xdrWriter) {
			w.opaque(fx.dir)
			w.u64(0)
			w.u64(0)
			w.u32(4096)
			w.u32(8192)
		}),
		n(procFsstat):       w(fh(fx.root)),
		n(procFsinfo):       w(fh(fx.root)),
		n(procPathconf):     w(fh(fx.root)),
		n(procCommit):       commitArgs(fx.file),
		m(mountProcNull):    nil,
		m(mountProcMnt):     w(func(w *xdrWriter) { w.opaque([]byte("/d")) }),
		m(mountProcDump):    nil,
		m(mountProcUmnt):    w(func(w *xdrWriter) { w.opaque([]byte("/d")) }),
		m(mountProcUmntAll): nil,
		m(mountProcExport):  nil,
	}
}

// Any arguments to any procedure get a reply that is well formed:
// SUCCESS with results, or GARBAGE_ARGS; never SYSTEM_ERR (a panic
// caught), and in bounded time.
func FuzzProcedureArgs(f *testing.F) {
	fx := newFuzzFixture(f)
	seeds := seedArgs(fx)
	for i, k := range fuzzProcs {
		f.Add(uint8(i), seeds[k])
	}
	f.Fuzz(func(t *testing.T, sel uint8, args []byte) {
		k := fuzzProcs[int(sel)%len(fuzzProcs)]
		c := &sunrpc.Call{Xid: 1, Prog: k.prog, Vers: 3, Proc: k.proc, Flavor: sunrpc.AuthSys,
			Cred: authSys(0, 0), Args: args, Start: time.Now(), Remote: &net.TCPAddr{}}
		done := make(chan []byte, 1)
		go func() {
			reply, err := fx.h.Answer(c, make([]byte, sunrpc.HeaderLen))
			if err != nil {
				t.Errorf("Answer: %v", err)
			}
			if c.Tail != nil {
				c.Tail.Release()
			}
			done <- reply
		}()
		var reply []byte
		select {
		case reply = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("proc %v: no reply after 10 s", k)
		}
		switch st := binary.BigEndian.Uint32(reply[sunrpc.HeaderLen-4:]); st {
		case sunrpc.Success:
		case sunrpc.GarbageArgs:
			if len(reply) != sunrpc.HeaderLen {
				t.Fatalf("proc %v: GARBAGE_ARGS with %d bytes of results", k, len(reply)-sunrpc.HeaderLen)
			}
		default:
			t.Fatalf("proc %v: accept_stat %d", k, st)
		}
	})
}

// A connection that sends anything at all is served until it ends:
// ServeConn returns once the client has closed its side (or itself closes
// the connection on a record that is no call), and every reply it sent
// is a record of one fragment, long enough for a reply header.
func FuzzConnection(f *testing.F) {
	fx := newFuzzFixture(f)
	seeds := seedArgs(fx)
	var stream []byte
	for i, k := range fuzzProcs {
		stream = append(stream, encodeCallVers(uint32(i), k.prog, 3, k.proc, seeds[k])...)
	}
	f.Add(stream)
	f.Add(encodeCall(1, progNFS, procGetattr, xdrHandle(fx.file))[:30])
	f.Add(append(encodeCall(1, progNFS, procRead, readArgs(fx.file, 0, 4)), 0x80, 0, 0, 4, 1, 2, 3, 4))
	f.Add(encodeCallAuth(9, progNFS, 3, procGetattr, 6, []byte{1, 2, 3, 4}, xdrHandle(fx.root)))
	srv := &Server{h: fx.h}
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(context.Background(), server)
		}()
		replies := make(chan error, 1)
		go func() {
			br := bufio.NewReader(client)
			for {
				var h [4]byte
				if _, err := io.ReadFull(br, h[:]); err != nil {
					replies <- nil
					return
				}
				v := binary.BigEndian.Uint32(h[:])
				rec := make([]byte, v&^(1<<31))
				if v&(1<<31) == 0 || len(rec) < 12 {
					replies <- io.ErrUnexpectedEOF
					return
				}
				if _, err := io.ReadFull(br, rec); err != nil {
					replies <- nil // cut off by the client's close
					return
				}
			}
		}()
		client.SetWriteDeadline(time.Now().Add(10 * time.Second))
		client.Write(in) // the server may close first: what it read counts
		// A pipe has no half-close: the server sees the end when its next
		// read fails, and answers the calls it holds all the same.
		client.Close()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("ServeConn did not return after the client closed")
		}
		if err := <-replies; err != nil {
			t.Fatalf("a malformed reply: %v", err)
		}
	})
}
