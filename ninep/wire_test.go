package ninep

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
)

// TestClientsCannotForgeWhatTheWireMakes: the names the wire makes and the
// bits it stashes are the wire's alone.
func TestClientsCannotForgeWhatTheWireMakes(t *testing.T) {
	e := newEnv(t)
	root := e.attach(t, "")
	create(t, root, "f", "x")
	walk(t, root).Mkdir("d", 0o755, p9.NoUID, p9.NoGID)
	m := dialMux(t, e.addr)
	top := attachAt(t, m, "", e.uid)

	for _, name := range []string{dotdot, dot, mark(attachMark, 1), "a\x00b"} {
		if _, errno, err := m.walk(top, m.fid(), "d", name); err != nil || errno != linux.EINVAL {
			t.Errorf("walk naming %q: %v %v, want EINVAL", name, errno, err)
		}
	}

	// A Tsetattr whose atime_nsec carries the stash's bits, with no
	// setuid in its mode, sets no setuid.
	f := m.fid()
	if _, errno, err := m.walk(top, f, "f"); err != nil || errno != 0 {
		t.Fatal(errno, err)
	}
	if _, err := m.must(msgTsetattr, func(e *encoder) {
		e.u32(f)
		e.u32(setattrMode)
		e.u32(0o755)
		e.u32(0)
		e.u32(0)
		e.u64(0)
		e.u64(0)
		e.u64(stashSetattrMark | 0o4000<<stashSetattrShift)
		e.u64(0)
		e.u64(0)
	}); err != nil {
		t.Fatal(err)
	}
	if mode, _, _, _, err := m.getattr(f); err != nil || mode&0o7777 != 0o755 {
		t.Fatalf("setattr 0755 with forged stash bits gave %o %v", mode&0o7777, err)
	}
	// Likewise Tlcreate's flags.
	d := m.fid()
	if _, errno, err := m.walk(top, d, "d"); err != nil || errno != 0 {
		t.Fatal(errno, err)
	}
	flags := uint32(p9.WriteOnly) | stashCreateMark | 0o4000<<stashCreateShift
	if _, err := m.must(msgTlcreate, func(e *encoder) { e.u32(d); e.str("g"); e.u32(flags); e.u32(0o644); e.u32(0) }); err != nil {
		t.Fatal(err)
	}
	n, _ := e.f.Resolve(e.cred, "/d/g")
	if a, _ := e.f.Getattr(n); a.Mode != 0o644 {
		t.Fatalf("create 0644 with forged stash bits gave %o", a.Mode)
	}

	// p9's gVisor extensions would walk around the wire: refused.
	const msgTwalkgetattr = 126
	if errno, _, err := m.do(msgTwalkgetattr, func(e *encoder) { e.u32(top); e.u32(m.fid()); e.u16(1); e.str("..") }); err != nil || errno != linux.ENOSYS {
		t.Fatalf("Twalkgetattr: %v %v, want ENOSYS", errno, err)
	}
	// ... and a client asking for them is answered plain 9P2000.L.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &raw{t: t, c: c}
	if d := r.must(msgTversion, func(e *encoder) { e.u32(65536); e.str("9P2000.L.Google.7") }); d.u32() == 0 || d.str() != "9P2000.L" {
		t.Fatal("Tversion for 9P2000.L.Google.7 was not answered 9P2000.L")
	}
	// A Tversion after the first request is refused: p9 would reset the
	// connection's buffers under the requests in flight.
	if errno := r.errno(msgTversion, func(e *encoder) { e.u32(8192); e.str("9P2000.L") }); errno != linux.EINVAL {
		t.Fatalf("a second Tversion: %v, want EINVAL", errno)
	}
	r.attach(1, "")
}

// TestServeConnStopsWhenItsContextEnds: a request sent before the end is
// answered, the connection is then closed, and ServeConn returns.
func TestServeConnStopsWhenItsContextEnds(t *testing.T) {
	e := newEnv(t)
	srv := New(e.f, Options{Logger: testLogger(t)})
	client, server := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	go func() { srv.ServeConn(ctx, server); close(returned) }()

	r := &raw{t: t, c: client}
	r.must(msgTversion, func(e *encoder) { e.u32(65536); e.str("9P2000.L") })
	r.attach(1, "")
	cancel()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return once its context ended")
	}
	// The server's end is closed: the client reads its end.
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection is still open")
	}
}

// TestServeConnReturnsWhenTheClientCloses.
func TestServeConnReturnsWhenTheClientCloses(t *testing.T) {
	e := newEnv(t)
	srv := New(e.f, Options{Logger: testLogger(t)})
	client, server := net.Pipe()
	returned := make(chan struct{})
	go func() { srv.ServeConn(context.Background(), server); close(returned) }()
	r := &raw{t: t, c: client}
	r.must(msgTversion, func(e *encoder) { e.u32(65536); e.str("9P2000.L") })
	r.attach(1, "")
	client.Close()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return once the client closed")
	}
}

// TestFlush: a Tflush is answered after the reply to the request it
// flushes, and at once when that is not in flight, even when it names
// itself or another Tflush.
func TestFlush(t *testing.T) {
	e := newEnv(t)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &raw{t: t, c: c}
	r.must(msgTversion, func(e *encoder) { e.u32(65536); e.str("9P2000.L") })
	r.attach(1, "")

	frame := func(typ byte, tag uint16, body func(*encoder)) []byte {
		var e encoder
		e.header(typ, tag)
		body(&e)
		return e.frame()
	}
	readReply := func() (byte, uint16) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		hdr := make([]byte, hdrLen)
		if _, err := io.ReadFull(c, hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.LittleEndian.Uint32(hdr))-hdrLen); err != nil {
			t.Fatal(err)
		}
		return hdr[4], binary.LittleEndian.Uint16(hdr[5:])
	}
	flush := func(tag, old uint16) []byte { return frame(msgTflush, tag, func(e *encoder) { e.u16(old) }) }
	for i := range 50 {
		// A request and its flush, sent together: its reply comes first.
		var out []byte
		out = append(out, frame(msgTgetattr, 10, func(e *encoder) { e.u32(1); e.u64(0x3fff) })...)
		out = append(out, flush(11, 10)...)
		if _, err := c.Write(out); err != nil {
			t.Fatal(err)
		}
		if typ, tag := readReply(); tag != 10 || typ != msgTgetattr+1 {
			t.Fatalf("round %d: first reply type %d tag %d, want Rgetattr tag 10", i, typ, tag)
		}
		if typ, tag := readReply(); tag != 11 || typ != msgRflush {
			t.Fatalf("round %d: second reply type %d tag %d, want Rflush tag 11", i, typ, tag)
		}
	}
	// Flushes of themselves and of each other are answered.
	if _, err := c.Write(append(append(flush(20, 20), flush(21, 22)...), flush(22, 21)...)); err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for range 3 {
		typ, tag := readReply()
		if typ != msgRflush {
			t.Fatalf("reply type %d to a Tflush", typ)
		}
		seen[tag] = true
	}
	if !seen[20] || !seen[21] || !seen[22] {
		t.Fatalf("Rflushes for %v", seen)
	}
	r.must(msgTgetattr, func(e *encoder) { e.u32(1); e.u64(0x3fff) })
}

// TestMalformedMessages: a message too short for its type gets an Rlerror
// with its tag when the wire reads it, and otherwise (p9 would answer it
// without its tag) ends its connection; other clients go on.
func TestMalformedMessages(t *testing.T) {
	e := newEnv(t)
	other := e.attach(t, "")

	r := dialRaw(t, e.addr)
	if errno := r.errno(msgTwalk, func(e *encoder) { e.u32(0); e.u32(1); e.u16(3); e.str("a") }); errno != linux.EINVAL {
		t.Fatalf("a Twalk naming fewer names than it says: %v, want EINVAL", errno)
	}
	r.attach(1, "")

	var short encoder
	short.header(msgTgetattr, 5)
	short.u32(1) // and no request mask
	if _, err := r.c.Write(short.frame()); err != nil {
		t.Fatal(err)
	}
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, r.c); err != nil {
		t.Fatalf("the connection of a malformed message was not closed: %v", err)
	}
	if _, _, _, err := other.GetAttr(p9.AttrMaskAll); err != nil {
		t.Fatalf("another client after a malformed message: %v", err)
	}
}
