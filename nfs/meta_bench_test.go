package nfs

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// diropArgs encodes diropargs3.
func diropArgs(fh []byte, name string) []byte {
	w := &xdrWriter{}
	w.opaque(fh)
	w.opaque([]byte(name))
	return w.b
}

// benchCall answers one call in process, as a connection does, without
// the network.
func benchCall(b *testing.B, h *handler, proc uint32, args []byte) {
	c := &sunrpc.Call{Prog: progNFS, Vers: 3, Proc: proc, Flavor: sunrpc.AuthSys, Cred: benchCred, Args: args, Start: time.Now()}
	rep, err := h.Answer(c, benchReply[:sunrpc.HeaderLen])
	if err != nil || len(rep) < sunrpc.HeaderLen+4 || binary.BigEndian.Uint32(rep[sunrpc.HeaderLen-4:]) != sunrpc.Success {
		b.Fatalf("proc %d: %v, reply %x", proc, err, rep)
	}
}

var (
	benchCred  = authSys(0, 0)
	benchReply = make([]byte, sunrpc.HeaderLen, 8<<10)
)

// The metadata procedures of the libnfs benchmark (integration/bench/
// nfsmeta.c), answered in process: what the server spends per call.
func BenchmarkMetaProcs(b *testing.B) {
	s, err := history.Open(b.TempDir(), history.Options{FlushInterval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	f := fs.New(s, fs.Options{Squash: fs.SquashNone})
	h := &handler{f: f, key: testKey, log: slog.New(slog.DiscardHandler), observer: fs.NopObserver{}}
	dir, err := f.Mkdir(root, f.Root(), "d", 0o755)
	if err != nil {
		b.Fatal(err)
	}
	const files = 1000
	for i := 0; i < files; i++ {
		mustCreateB(b, f, dir, fmt.Sprintf("f%d", i))
	}
	if _, err := s.Commit(); err != nil {
		b.Fatal(err)
	}
	rootFH := h.encode(f.Root(), true)
	dirFH := h.encode(dir, true)
	n, _ := f.Lookup(root, dir, "f1")
	fileFH := h.encode(n, false)
	b.Run("lookup", func(b *testing.B) {
		args := diropArgs(rootFH, "d")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			benchCall(b, h, procLookup, args)
		}
	})
	b.Run("lookup-missing", func(b *testing.B) {
		args := diropArgs(dirFH, "nothere")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			benchCall(b, h, procLookup, args)
		}
	})
	b.Run("getattr", func(b *testing.B) {
		w := &xdrWriter{}
		w.opaque(fileFH)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			benchCall(b, h, procGetattr, w.b)
		}
	})
	b.Run("create-remove", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			name := fmt.Sprintf("n%d", i)
			w := &xdrWriter{b: diropArgs(dirFH, name)}
			w.u32(1) // GUARDED
			w.b = append(w.b, make([]byte, 6*4)...)
			benchCall(b, h, procCreate, w.b)
			benchCall(b, h, procRemove, diropArgs(dirFH, name))
		}
	})
}

func mustCreateB(b *testing.B, f *fs.FS, dir fs.Node, name string) {
	if _, _, err := f.Create(root, dir, name, 0o644, true); err != nil {
		b.Fatal(err)
	}
}
