package ninep

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
)

// mux speaks 9P frame by frame like raw, but many requests at once: each
// goroutine's request gets its own tag and waits for the reply with that
// tag, as Linux's v9fs sends them.
type mux struct {
	c net.Conn

	wmu sync.Mutex // one frame at a time on c

	mu      sync.Mutex // guards waiting, next, err
	waiting map[uint16]chan muxReply
	next    uint16
	err     error

	fids atomic.Uint32
}

type muxReply struct {
	typ  byte
	body []byte
	seq  int // the order in which replies arrived
}

func dialMux(t testing.TB, addr string) *mux {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return newMux(t, c)
}

// newMux speaks 9P on c, which it closes when the test ends.
func newMux(t testing.TB, c net.Conn) *mux {
	t.Helper()
	m := &mux{c: c, waiting: map[uint16]chan muxReply{}}
	m.fids.Store(100)
	done := make(chan struct{})
	go func() { defer close(done); m.readReplies() }()
	t.Cleanup(func() { c.Close(); <-done })
	if typ, _, err := m.rpc(msgTversion, func(e *encoder) { e.u32(65536); e.str("9P2000.L") }); err != nil || typ != msgTversion+1 {
		t.Fatalf("Tversion: reply type %d, %v", typ, err)
	}
	return m
}

func (m *mux) readReplies() {
	for seq := 0; ; seq++ {
		hdr := make([]byte, hdrLen)
		_, err := io.ReadFull(m.c, hdr)
		var body []byte
		if err == nil {
			body = make([]byte, binary.LittleEndian.Uint32(hdr)-hdrLen)
			_, err = io.ReadFull(m.c, body)
		}
		m.mu.Lock()
		if err != nil {
			m.err = err
			for _, ch := range m.waiting {
				close(ch)
			}
			m.waiting = nil
			m.mu.Unlock()
			return
		}
		tag := binary.LittleEndian.Uint16(hdr[5:])
		ch, ok := m.waiting[tag]
		delete(m.waiting, tag)
		m.mu.Unlock()
		if ok {
			ch <- muxReply{typ: hdr[4], body: body, seq: seq}
		}
	}
}

// fid is a fid number no other request of this connection uses.
func (m *mux) fid() uint32 { return m.fids.Add(1) }

// rpc sends one request and waits for the reply with its tag.
func (m *mux) rpc(typ byte, body func(*encoder)) (byte, *decoder, error) {
	r, err := m.batch(muxReq{typ, func(e *encoder, _ []uint16) { body(e) }})
	if err != nil {
		return 0, nil, err
	}
	return r[0].typ, &decoder{b: r[0].body}, nil
}

// muxReq is one request of a batch; body is given the tags of the whole
// batch (for a Tflush to name another).
type muxReq struct {
	typ  byte
	body func(e *encoder, tags []uint16)
}

// batch sends the requests in one write, so that the server has all of
// them in flight at once, and waits for their replies, returned in the
// order of the requests.
func (m *mux) batch(reqs ...muxReq) ([]muxReply, error) {
	tags := make([]uint16, len(reqs))
	chs := make([]chan muxReply, len(reqs))
	m.mu.Lock()
	if m.waiting == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("connection ended: %v", m.err)
	}
	for i := range reqs {
		for {
			m.next++
			if _, busy := m.waiting[m.next]; !busy && m.next != ^uint16(0) {
				break
			}
		}
		tags[i], chs[i] = m.next, make(chan muxReply, 1)
		m.waiting[tags[i]] = chs[i]
	}
	m.mu.Unlock()

	var out []byte
	for i, r := range reqs {
		var e encoder
		e.header(r.typ, tags[i])
		r.body(&e, tags)
		out = append(out, e.frame()...)
	}
	m.wmu.Lock()
	m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := m.c.Write(out)
	m.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	replies := make([]muxReply, len(reqs))
	timeout := time.After(20 * time.Second)
	for i, ch := range chs {
		select {
		case r, ok := <-ch:
			if !ok {
				return nil, fmt.Errorf("connection ended: %v", m.err)
			}
			replies[i] = r
		case <-timeout:
			return nil, fmt.Errorf("no reply to type %d tag %d", reqs[i].typ, tags[i])
		}
	}
	return replies, nil
}

// do is rpc for a request expected to succeed or fail with an errno:
// the errno of an Rlerror, 0 and the body otherwise.
func (m *mux) do(typ byte, body func(*encoder)) (linux.Errno, *decoder, error) {
	rt, d, err := m.rpc(typ, body)
	switch {
	case err != nil:
		return 0, nil, err
	case rt == msgRlerror:
		return linux.Errno(d.u32()), nil, nil
	case rt != typ+1:
		return 0, nil, fmt.Errorf("request type %d: reply type %d", typ, rt)
	}
	return 0, d, nil
}

// must is do for a request expected to succeed.
func (m *mux) must(typ byte, body func(*encoder)) (*decoder, error) {
	errno, d, err := m.do(typ, body)
	if err == nil && errno != 0 {
		err = fmt.Errorf("request type %d: %v", typ, errno)
	}
	return d, err
}

// attach attaches fid as the user uname/nuname names.
func (m *mux) attach(fid uint32, uname, aname string, nuname uint32) (p9.QID, linux.Errno, error) {
	errno, d, err := m.do(msgTattach, func(e *encoder) { e.u32(fid); e.u32(noFID); e.str(uname); e.str(aname); e.u32(nuname) })
	if err != nil || errno != 0 {
		return p9.QID{}, errno, err
	}
	return readQID(d), 0, nil
}

func readQID(d *decoder) p9.QID {
	return p9.QID{Type: p9.QIDType(d.u8()), Version: d.u32(), Path: d.u64()}
}

// walk walks fid to newfid and returns the qids.
func (m *mux) walk(fid, newfid uint32, names ...string) ([]p9.QID, linux.Errno, error) {
	errno, d, err := m.do(msgTwalk, func(e *encoder) {
		e.u32(fid)
		e.u32(newfid)
		e.u16(uint16(len(names)))
		for _, n := range names {
			e.str(n)
		}
	})
	if err != nil || errno != 0 {
		return nil, errno, err
	}
	qids := make([]p9.QID, d.u16())
	for i := range qids {
		qids[i] = readQID(d)
	}
	return qids, 0, nil
}

func (m *mux) clunk(fid uint32) error {
	_, err := m.must(msgTclunk, func(e *encoder) { e.u32(fid) })
	return err
}

// getxattr walks fid's attribute name ("" for the list) to a new fid,
// reads it and clunks it.
func (m *mux) getxattr(fid uint32, name string) (string, linux.Errno, error) {
	tmp := m.fid()
	errno, d, err := m.do(msgTxattrwalk, func(e *encoder) { e.u32(fid); e.u32(tmp); e.str(name) })
	if err != nil || errno != 0 {
		return "", errno, err
	}
	size := d.u64()
	var out string
	if size > 0 {
		d, err := m.must(msgTread, func(e *encoder) { e.u32(tmp); e.u64(0); e.u32(uint32(size)) })
		if err != nil {
			return "", 0, err
		}
		out = string(d.take(int(d.u32())))
	}
	return out, 0, m.clunk(tmp)
}

// getattr returns fid's mode, uid, gid and atime.
func (m *mux) getattr(fid uint32) (mode, uid, gid uint32, atime time.Time, err error) {
	d, err := m.must(msgTgetattr, func(e *encoder) { e.u32(fid); e.u64(0x3fff) })
	if err != nil {
		return 0, 0, 0, time.Time{}, err
	}
	d.u64() // valid
	readQID(d)
	mode, uid, gid = d.u32(), d.u32(), d.u32()
	d.u64() // nlink
	d.u64() // rdev
	d.u64() // size
	d.u64() // blksize
	d.u64() // blocks
	sec, nsec := d.u64(), d.u64()
	return mode, uid, gid, time.Unix(int64(sec), int64(nsec)), nil
}

// chmod sets fid's mode, and its atime to the given moment.
func (m *mux) chmod(fid, mode uint32, atime time.Time) error {
	const atimeGiven = 0x10 | 0x80 // P9_SETATTR_ATIME | P9_SETATTR_ATIME_SET
	_, err := m.must(msgTsetattr, func(e *encoder) {
		e.u32(fid)
		e.u32(setattrMode | atimeGiven)
		e.u32(mode)
		e.u32(0)
		e.u32(0)
		e.u64(0)
		e.u64(uint64(atime.Unix()))
		e.u64(uint64(atime.Nanosecond()))
		e.u64(0)
		e.u64(0)
	})
	return err
}

// create makes name in the directory at fid, opened for writing, and
// clunks it.
func (m *mux) create(dirFid uint32, name string, mode uint32) error {
	fid := m.fid()
	if _, _, err := m.walk(dirFid, fid); err != nil {
		return err
	}
	if _, err := m.must(msgTlcreate, func(e *encoder) { e.u32(fid); e.str(name); e.u32(uint32(p9.WriteOnly)); e.u32(mode); e.u32(0) }); err != nil {
		m.clunk(fid)
		return err
	}
	return m.clunk(fid)
}
