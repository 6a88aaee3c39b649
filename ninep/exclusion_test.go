package ninep

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
)

// TestRequestsWaitForWhatChangesTheirFid: requests a client sends on a fid
// without waiting for the reply to a Tlopen, Tlcreate, Txattrcreate or
// Tclunk of it, or to a rename, are served after that reply (so p9, which
// changes a fid's state for those outside its locks, never races on it),
// and each is answered; a Tflush of a held-back request is answered after
// its reply.
func TestRequestsWaitForWhatChangesTheirFid(t *testing.T) {
	e := newEnv(t)
	const workers, rounds = 4, 100
	d, err := e.f.Mkdir(e.cred, e.f.Root(), "d", 0o777)
	if err != nil {
		t.Fatal(err)
	}
	for w := range workers {
		if _, _, err := e.f.Create(e.cred, d, fmt.Sprintf("f%d", w), 0o666, true); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.f.Create(e.cred, d, fmt.Sprintf("r%d-0", w), 0o666, true); err != nil {
			t.Fatal(err)
		}
	}
	m := dialMux(t, e.addr)
	top := attachAt(t, m, "", e.uid)

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				for _, round := range []func(*mux, uint32, int, int) error{openRound, createRound, xattrCreateRound, renameRound} {
					if err := round(m, top, w, i); err != nil {
						errs <- fmt.Errorf("worker %d round %d: %w", w, i, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// What the rounds wrote is there.
	for w := range workers {
		n, err := e.f.Resolve(e.cred, fmt.Sprintf("/d/c%d-%d", w, rounds-1))
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := e.f.Getattr(n); a.Size != 5 {
			t.Errorf("c%d-%d has %d bytes, want 5", w, rounds-1, a.Size)
		}
		f, err := e.f.Resolve(e.cred, fmt.Sprintf("/d/f%d", w))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := e.f.GetXattr(e.cred, f, fmt.Sprintf("user.x%d", rounds-1)); err != nil || string(v) != "abcdef" {
			t.Errorf("f%d's user.x%d: %q %v, want abcdef", w, rounds-1, v, err)
		}
	}
}

// want checks a batch's replies against the reply types expected.
func want(replies []muxReply, types ...byte) error {
	for i, r := range replies {
		if r.typ != types[i] {
			errno := ""
			if r.typ == msgRlerror {
				errno = fmt.Sprint(" errno ", (&decoder{b: r.body}).u32())
			}
			return fmt.Errorf("reply %d: type %d%s, want %d", i, r.typ, errno, types[i])
		}
	}
	return nil
}

// openRound: Tlopen of a directory, Treaddir of it, a Tflush of the
// Treaddir and Tclunk, sent together.
func openRound(m *mux, top uint32, _, _ int) error {
	f := m.fid()
	if _, errno, err := m.walk(top, f, "d"); err != nil || errno != 0 {
		return fmt.Errorf("walk: %v %v", errno, err)
	}
	r, err := m.batch(
		muxReq{msgTlopen, func(e *encoder, _ []uint16) { e.u32(f); e.u32(uint32(p9.ReadOnly)) }},
		muxReq{msgTreaddir, func(e *encoder, _ []uint16) { e.u32(f); e.u64(0); e.u32(8192) }},
		muxReq{msgTflush, func(e *encoder, tags []uint16) { e.u16(tags[1]) }},
		muxReq{msgTclunk, func(e *encoder, _ []uint16) { e.u32(f) }},
	)
	if err != nil {
		return err
	}
	if err := want(r, msgTlopen+1, msgTreaddir+1, msgRflush, msgTclunk+1); err != nil {
		return err
	}
	if (&decoder{b: r[1].body}).u32() == 0 {
		return fmt.Errorf("Treaddir after Tlopen read no entries")
	}
	if r[2].seq < r[1].seq {
		return fmt.Errorf("the Rflush came before the reply to the Treaddir it flushed")
	}
	return nil
}

// createRound: Tlcreate in a directory, Twrite of what it created and
// Tclunk, on one fid, sent together.
func createRound(m *mux, top uint32, w, i int) error {
	f := m.fid()
	if _, errno, err := m.walk(top, f, "d"); err != nil || errno != 0 {
		return fmt.Errorf("walk: %v %v", errno, err)
	}
	r, err := m.batch(
		muxReq{msgTlcreate, func(e *encoder, _ []uint16) {
			e.u32(f)
			e.str(fmt.Sprintf("c%d-%d", w, i))
			e.u32(uint32(p9.ReadWrite))
			e.u32(0o644)
			e.u32(0)
		}},
		muxReq{msgTwrite, func(e *encoder, _ []uint16) { e.u32(f); e.u64(0); e.u32(5); e.b = append(e.b, "hello"...) }},
		muxReq{msgTclunk, func(e *encoder, _ []uint16) { e.u32(f) }},
	)
	if err != nil {
		return err
	}
	if err := want(r, msgTlcreate+1, msgTwrite+1, msgTclunk+1); err != nil {
		return err
	}
	if n := (&decoder{b: r[1].body}).u32(); n != 5 {
		return fmt.Errorf("Twrite after Tlcreate wrote %d bytes, want 5", n)
	}
	return nil
}

// xattrCreateRound: Txattrcreate, two Twrites of the value and the
// Tclunk that sets it, on one fid, sent together.
func xattrCreateRound(m *mux, top uint32, w, i int) error {
	f := m.fid()
	if _, errno, err := m.walk(top, f, "d", fmt.Sprintf("f%d", w)); err != nil || errno != 0 {
		return fmt.Errorf("walk: %v %v", errno, err)
	}
	r, err := m.batch(
		muxReq{msgTxattrcreate, func(e *encoder, _ []uint16) { e.u32(f); e.str(fmt.Sprintf("user.x%d", i)); e.u64(6); e.u32(0) }},
		muxReq{msgTwrite, func(e *encoder, _ []uint16) { e.u32(f); e.u64(0); e.u32(3); e.b = append(e.b, "abc"...) }},
		muxReq{msgTwrite, func(e *encoder, _ []uint16) { e.u32(f); e.u64(3); e.u32(3); e.b = append(e.b, "def"...) }},
		muxReq{msgTclunk, func(e *encoder, _ []uint16) { e.u32(f) }},
	)
	if err != nil {
		return err
	}
	return want(r, msgTxattrcreate+1, msgTwrite+1, msgTwrite+1, msgTclunk+1)
}

// renameRound: a walk of no names (which reads the parent of the fid it
// clones), a rename in the same directory, and the Tclunks of the fids,
// sent together.
func renameRound(m *mux, top uint32, w, i int) error {
	dir, f, clone := m.fid(), m.fid(), m.fid()
	if _, errno, err := m.walk(top, dir, "d"); err != nil || errno != 0 {
		return fmt.Errorf("walk: %v %v", errno, err)
	}
	from, to := fmt.Sprintf("r%d-%d", w, i%2), fmt.Sprintf("r%d-%d", w, (i+1)%2)
	if _, errno, err := m.walk(top, f, "d", from); err != nil || errno != 0 {
		return fmt.Errorf("walk: %v %v", errno, err)
	}
	r, err := m.batch(
		muxReq{msgTwalk, func(e *encoder, _ []uint16) { e.u32(f); e.u32(clone); e.u16(0) }},
		muxReq{msgTrenameat, func(e *encoder, _ []uint16) { e.u32(dir); e.str(from); e.u32(dir); e.str(to) }},
		muxReq{msgTclunk, func(e *encoder, _ []uint16) { e.u32(clone) }},
		muxReq{msgTclunk, func(e *encoder, _ []uint16) { e.u32(f) }},
		muxReq{msgTclunk, func(e *encoder, _ []uint16) { e.u32(dir) }},
	)
	if err != nil {
		return err
	}
	return want(r, msgTwalk+1, msgTrenameat+1, msgTclunk+1, msgTclunk+1, msgTclunk+1)
}

// TestHeldBackRequestEndsWithItsConnection: a request held back behind
// one that p9 cannot decode (which ends the connection, and is never
// answered) does not keep the connection's server waiting.
func TestHeldBackRequestEndsWithItsConnection(t *testing.T) {
	e := newEnv(t)
	bystander := dialMux(t, e.addr)
	top := attachAt(t, bystander, "", e.uid)
	for _, first := range []struct {
		typ  byte
		body func(*encoder)
	}{
		{msgTlopen, func(e *encoder) { e.u32(1) }},             // and no flags
		{msgTrenameat, func(e *encoder) { e.u32(1); e.u8(0) }}, // and no names
	} {
		r := dialRaw(t, e.addr)
		r.attach(1, "")
		var out encoder
		out.header(first.typ, 2)
		first.body(&out)
		stream := append([]byte(nil), out.frame()...)
		out.header(msgTgetattr, 3)
		out.u32(1)
		out.u64(0x3fff)
		stream = append(stream, out.frame()...)
		if _, err := r.c.Write(stream); err != nil {
			t.Fatal(err)
		}
		r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, r.c); err != nil {
			t.Fatalf("after a malformed type %d, the connection was not closed: %v", first.typ, err)
		}
	}
	if _, _, _, _, err := bystander.getattr(top); err != nil {
		t.Fatalf("the bystander is not answered: %v", err)
	}
}
