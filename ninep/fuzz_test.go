package ninep

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// The fuzz targets send what a client might to a real server (wire, p9,
// fs, store) and hold it to this: no panic, no hang, and a bystander
// client on the same server is answered throughout. A malformed message
// may close its connection or get an Rlerror; anything else it may do to
// its own connection is its own business.

// fuzzServer is a server on a small tree, shared by every input of one
// fuzz run, with a bystander connection attached to it.
type fuzzServer struct {
	srv       *Server
	bystander *mux
	top       uint32
}

// fuzzHangAfter is how long an input may keep its connection busy after
// the client has closed it.
const fuzzHangAfter = 10 * time.Second

func newFuzzServer(f *testing.F) *fuzzServer {
	s, err := history.Open(f.TempDir(), history.Options{FlushInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	fsys := fs.New(s, fs.Options{Squash: fs.SquashNone, Logger: discardLogger()})
	root := fs.Cred{}
	d, err := fsys.Mkdir(root, fsys.Root(), "d", 0o755)
	if err != nil {
		f.Fatal(err)
	}
	n, _, err := fsys.Create(root, d, "f", 0o644, true)
	if err != nil {
		f.Fatal(err)
	}
	fsys.Write(root, n, []byte("contents"), 0, false)
	fsys.SetXattr(root, n, "user.k", []byte("v"), 0)
	fsys.Symlink(root, d, "l", "f")

	fz := &fuzzServer{srv: New(fsys, Options{Logger: discardLogger()})}
	client, server := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fz.srv.ServeConn(ctx, server); close(done) }()
	f.Cleanup(func() { cancel(); client.Close(); <-done })
	fz.bystander = newMux(f, client)
	fz.top = fz.bystander.fid()
	if _, errno, err := fz.bystander.attach(fz.top, "", "", 0); err != nil || errno != 0 {
		f.Fatal(errno, err)
	}
	return fz
}

// prelude is what every fuzzed connection begins with: Tversion, and
// Tattach of fid 0 to the root as uid 0.
func prelude() []byte {
	var b []byte
	var e encoder
	e.header(msgTversion, 0xffff)
	e.u32(1 << 16)
	e.str("9P2000.L")
	b = append(b, e.frame()...)
	e.header(msgTattach, 1)
	e.u32(0)
	e.u32(noFID)
	e.str("")
	e.str("")
	e.u32(0)
	return append(b, e.frame()...)
}

// run sends stream after the prelude on a connection of its own, closes
// it, and checks that the server let go of it and still answers the
// bystander.
func (fz *fuzzServer) run(t *testing.T, stream []byte) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() { fz.srv.ServeConn(context.Background(), server); close(done) }()
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, client); close(drained) }()

	client.SetWriteDeadline(time.Now().Add(fuzzHangAfter))
	if _, err := client.Write(prelude()); err != nil {
		t.Fatalf("the prelude was not read: %v", err)
	}
	client.Write(stream) // the server may close the connection at a malformed message
	client.Close()
	select {
	case <-done:
	case <-time.After(fuzzHangAfter):
		t.Fatalf("ServeConn still serves %d bytes %x after the client closed", len(stream), stream[:min(len(stream), 64)])
	}
	<-drained
	if _, _, _, _, err := fz.bystander.getattr(fz.top); err != nil {
		t.Fatalf("the bystander is not answered: %v", err)
	}
}

// FuzzStream fuzzes the byte stream itself: sizes, types, tags, framing.
func FuzzStream(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		var stream []byte
		for i, m := range seed {
			stream = append(stream, m.frame(uint16(i+2))...)
		}
		f.Add(stream)
	}
	fz := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, stream []byte) { fz.run(t, stream) })
}

// FuzzMessages fuzzes what messages say: the input is a run of messages,
// each as type[1] length[2] body[length], framed here with a right size
// and a tag of its own, so that mutations reach the fields rather than
// break the framing.
func FuzzMessages(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		var in []byte
		for _, m := range seed {
			in = append(in, m.typ)
			in = binary.LittleEndian.AppendUint16(in, uint16(len(m.body)))
			in = append(in, m.body...)
		}
		f.Add(in)
	}
	fz := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		var stream []byte
		for tag := uint16(2); len(in) >= 3; tag++ {
			typ, n := in[0], int(binary.LittleEndian.Uint16(in[1:]))
			in = in[3:]
			n = min(n, len(in))
			stream = append(stream, fuzzMsg{typ, in[:n]}.frame(tag)...)
			in = in[n:]
		}
		fz.run(t, stream)
	})
}

type fuzzMsg struct {
	typ  byte
	body []byte
}

func (m fuzzMsg) frame(tag uint16) []byte {
	var e encoder
	e.header(m.typ, tag)
	e.b = append(e.b, m.body...)
	return e.frame()
}

func msg(typ byte, body func(*encoder)) fuzzMsg {
	var e encoder
	body(&e)
	return fuzzMsg{typ, e.b}
}

func walkMsg(fid, newfid uint32, names ...string) fuzzMsg {
	return msg(msgTwalk, func(e *encoder) {
		e.u32(fid)
		e.u32(newfid)
		e.u16(uint16(len(names)))
		for _, n := range names {
			e.str(n)
		}
	})
}

// fuzzSeeds are conversations a client has after the prelude (fid 0 is
// the root): each kind of request, and the ones the wire rewrites.
func fuzzSeeds() [][]fuzzMsg {
	const (
		msgTstatfs   = 8
		msgTfsync    = 50
		msgTmkdir    = 72
		msgTsymlink  = 16
		msgTmknod    = 18
		msgTunlinkat = 76
		msgTreadlink = 22
	)
	open := func(fid uint32, flags p9.OpenFlags) fuzzMsg {
		return msg(msgTlopen, func(e *encoder) { e.u32(fid); e.u32(uint32(flags)) })
	}
	clunk := func(fid uint32) fuzzMsg { return msg(msgTclunk, func(e *encoder) { e.u32(fid) }) }
	return [][]fuzzMsg{
		{walkMsg(0, 1, "d", "f"), open(1, p9.ReadOnly), msg(msgTread, func(e *encoder) { e.u32(1); e.u64(0); e.u32(4096) }), clunk(1)},
		{walkMsg(0, 1, "d"), open(1, p9.ReadOnly), msg(msgTreaddir, func(e *encoder) { e.u32(1); e.u64(0); e.u32(8192) }), clunk(1)},
		{walkMsg(0, 1, "d", "..", ".", "d"), msg(msgTgetattr, func(e *encoder) { e.u32(1); e.u64(0x3fff) })},
		{walkMsg(0, 1, "d"), msg(msgTlcreate, func(e *encoder) { e.u32(1); e.str("new"); e.u32(uint32(p9.ReadWrite)); e.u32(0o6755); e.u32(0) }),
			msg(msgTwrite, func(e *encoder) { e.u32(1); e.u64(0); e.u32(5); e.b = append(e.b, "hello"...) }),
			msg(msgTfsync, func(e *encoder) { e.u32(1); e.u32(0) }), clunk(1),
			walkMsg(0, 2, "d"), msg(msgTunlinkat, func(e *encoder) { e.u32(2); e.str("new"); e.u32(0) })},
		{walkMsg(0, 1, "d", "f"), msg(msgTsetattr, func(e *encoder) {
			e.u32(1)
			e.u32(setattrMode | 0x10 | 0x80)
			e.u32(0o4755)
			e.u32(0)
			e.u32(0)
			e.u64(0)
			e.u64(1000)
			e.u64(5)
			e.u64(0)
			e.u64(0)
		})},
		{walkMsg(0, 1, "d", "f"), msg(msgTxattrwalk, func(e *encoder) { e.u32(1); e.u32(2); e.str("user.k") }),
			msg(msgTread, func(e *encoder) { e.u32(2); e.u64(0); e.u32(64) }), clunk(2),
			msg(msgTxattrwalk, func(e *encoder) { e.u32(1); e.u32(3); e.str("") }),
			msg(msgTxattrwalk, func(e *encoder) { e.u32(1); e.u32(4); e.str("user.missing") })},
		{walkMsg(0, 1, "d", "f"), msg(msgTxattrcreate, func(e *encoder) { e.u32(1); e.str("user.n"); e.u64(3); e.u32(0) }),
			msg(msgTwrite, func(e *encoder) { e.u32(1); e.u64(0); e.u32(3); e.b = append(e.b, "abc"...) }), clunk(1)},
		{msg(msgTattach, func(e *encoder) { e.u32(5); e.u32(noFID); e.str("nobody"); e.str("/d/.."); e.u32(noUID) }),
			msg(msgTattach, func(e *encoder) { e.u32(6); e.u32(noFID); e.str(""); e.str("/d@@"); e.u32(1000) }),
			msg(msgTauth, func(e *encoder) { e.u32(7); e.str("u"); e.str(""); e.u32(0) })},
		{walkMsg(0, 1, "d"), msg(msgTmkdir, func(e *encoder) { e.u32(1); e.str("sub"); e.u32(0o755); e.u32(0) }),
			msg(msgTsymlink, func(e *encoder) { e.u32(1); e.str("sl"); e.str("sub"); e.u32(0) }),
			msg(msgTmknod, func(e *encoder) {
				e.u32(1)
				e.str("dev")
				e.u32(0o20644)
				e.u32(4)
				e.u32(5)
				e.u32(0)
			}),
			walkMsg(0, 2, "d", "f"), msg(msgTlink, func(e *encoder) { e.u32(1); e.u32(2); e.str("hard") }),
			msg(msgTrenameat, func(e *encoder) { e.u32(1); e.str("hard"); e.u32(1); e.str("moved") }),
			walkMsg(1, 3, "sl"), msg(msgTreadlink, func(e *encoder) { e.u32(3) }),
			walkMsg(1, 4, "moved"), msg(msgTremove, func(e *encoder) { e.u32(4) })},
		{walkMsg(0, 1, "d"), open(1, p9.ReadOnly),
			msg(msgTlock, func(e *encoder) {
				e.u32(1)
				e.u8(1)
				e.u32(0)
				e.u64(0)
				e.u64(0)
				e.u32(7)
				e.str("h")
			}),
			msg(msgTgetlock, func(e *encoder) {
				e.u32(1)
				e.u8(1)
				e.u64(0)
				e.u64(0)
				e.u32(7)
				e.str("h")
			}),
			msg(msgTstatfs, func(e *encoder) { e.u32(1) }),
			msg(msgTflush, func(e *encoder) { e.u16(3) })},
		{msg(126, func(e *encoder) { e.u32(0); e.u32(1); e.u16(1); e.str("..") }),
			msg(msgTversion, func(e *encoder) { e.u32(8192); e.str("9P2000.L.Google.7") })},
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
