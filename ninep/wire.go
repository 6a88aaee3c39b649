package ninep

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hugelgupf/p9/linux"
)

// The wire sits between a client's connection and p9's server, at the
// message layer, for what p9 v0.4.1 cannot express through its File
// interface. p9 reads whole messages from it in order (one reader at a
// time) and writes each reply as one run of Writes (one writer at a time);
// the wire relies on exactly that and on nothing else of p9's internals.
//
// On the way in:
//
//   - Tauth is answered here with Rlerror ENOENT, the answer diod gives
//     when it needs no authentication: p9 hardcodes ENOSYS, which Debian's
//     diod tools (diodls, diodcat, diodload) take as a failure.
//   - Tgetlock, which p9 does not know (its reply would be an error, and
//     fcntl(F_GETLK) on a v9fs mount would fail), is answered here "no
//     conflicting lock": like Tlock, accepted with no real locking.
//   - Tattach's name is made of components p9 accepts: empty and "."
//     components are dropped and ".." becomes dotdot, which file.Walk reads
//     as "..", so every name fs.Resolve accepts attaches.
//   - Twalk's ".." and "." components become dotdot and dot (p9 refuses
//     both itself).
//   - Tsetattr's and Tlcreate's setuid and setgid bits, which p9 masks off
//     when it decodes the mode, are carried in bits the protocol leaves
//     unused in a field p9 passes through untouched (see stash below).
//
// On the way out:
//
//   - Rattach carries the qid of what was attached: p9 answers with the
//     qid of the root it walked from.
//   - Rlerror to Txattrwalk carries the errno fs gave (ENODATA for a
//     missing attribute, EACCES, ...): p9 answers EINVAL for every error.
//   - Rxattrwalk for an empty attribute list has size 0: p9 lists the names
//     NUL-terminated and joined, which for no name is one NUL byte.
type wire struct {
	c  net.Conn
	s  *session
	br *bufio.Reader

	// Reader state; p9 reads from one goroutine at a time.
	pending   []byte // a frame rewritten here, for p9 to read next
	remaining int    // bytes of the current frame p9 has yet to read from br

	// Replies to patch, by tag, noted when the request goes in.
	npatch  atomic.Int32
	pmu     sync.Mutex
	patches map[uint16]patch

	// Writer state; p9 writes one reply at a time.
	out []byte     // the reply p9 is writing, until it is complete
	wmu sync.Mutex // one whole frame at a time goes on c

	closeOnce sync.Once

	// For metrics: requests in flight by tag.
	tmu     sync.Mutex
	started map[uint16]started
}

type started struct {
	typ byte
	at  time.Time
}

type patch struct {
	req  byte   // the request's type
	name string // Txattrwalk's attribute name, Tattach's attach name
}

// 9P2000.L message types the wire looks at.
const (
	msgRlerror    = 7
	msgTlcreate   = 14
	msgTsetattr   = 26
	msgTxattrwalk = 30
	msgRxattrwalk = 31
	msgTgetlock   = 54
	msgRgetlock   = 55
	msgTauth      = 102
	msgTattach    = 104
	msgRattach    = 105
	msgTwalk      = 110
)

const (
	hdrLen = 7 // size[4] type[1] tag[2]
	// inspectMax bounds the requests the wire reads whole; larger ones
	// (none of the inspected types is, legitimately) go to p9 as they are.
	inspectMax = 64 << 10
	// copyMax: reply pieces up to this size are gathered into one write;
	// a larger final piece (a read's data) goes out with the gathered
	// header in one vectored write, uncopied.
	copyMax = 16 << 10

	lockTypeUnlck = 2 // P9_LOCK_TYPE_UNLCK
	setattrMode   = 1 // P9_SETATTR_MODE
)

// dotdot and dot stand for ".." and "." in walks and attach names: p9
// refuses both before the server sees them (diodls walks ".").
const (
	dotdot = "\x00.."
	dot    = "\x00."
)

// The stash: p9 decodes Tsetattr's and Tlcreate's mode with
// ReadPermissions, which keeps only the 01777 bits, so chmod u+s or g+s
// would silently lose its bit. The wire copies the 07000 bits into bits of
// a field p9 hands to the File unchanged and the protocol never sets:
//
//   - Tsetattr: atime_nsec (below 1e9 when meaningful, so bits 40 and up
//     are free): marker bit 63, mode bits at 40.
//   - Tlcreate: flags (Linux open flags end at bit 20): marker bit 31,
//     mode bits at 16.
//
// file.SetAttr and file.Create take them out again (unstash*).
const (
	stashSetattrMark  = uint64(1) << 63
	stashSetattrShift = 40
	stashCreateMark   = uint32(1) << 31
	stashCreateShift  = 16
	stashBits         = 0o7000
)

func newWire(c net.Conn, s *session) *wire {
	return &wire{c: c, s: s, br: bufio.NewReaderSize(c, 64<<10), patches: map[uint16]patch{}, started: map[uint16]started{}}
}

// Close closes the connection (p9 closes both of its ends: once is enough).
func (w *wire) Close() error {
	var err error
	w.closeOnce.Do(func() { err = w.c.Close() })
	return err
}

// Read gives p9 the client's requests, frame by frame, after the changes
// described above.
func (w *wire) Read(p []byte) (int, error) {
	for {
		if len(w.pending) > 0 {
			n := copy(p, w.pending)
			w.pending = w.pending[n:]
			return n, nil
		}
		if w.remaining > 0 {
			if len(p) > w.remaining {
				p = p[:w.remaining]
			}
			n, err := w.br.Read(p)
			w.remaining -= n
			return n, err
		}
		hdr, err := w.br.Peek(hdrLen)
		if err != nil {
			return 0, err
		}
		size := int(binary.LittleEndian.Uint32(hdr))
		w.begin(hdr[4], binary.LittleEndian.Uint16(hdr[5:]))
		if size < hdrLen || size > inspectMax || !inspected(hdr[4]) {
			// p9 reads the header and judges the size itself.
			w.remaining = max(size, hdrLen)
			continue
		}
		frame := make([]byte, size)
		if _, err := io.ReadFull(w.br, frame); err != nil {
			return 0, err
		}
		if w.pending, err = w.inbound(frame); err != nil {
			return 0, err
		}
	}
}

// begin and end time each request for the metrics, by its tag.
func (w *wire) begin(typ byte, tag uint16) {
	w.tmu.Lock()
	w.started[tag] = started{typ: typ, at: time.Now()}
	w.tmu.Unlock()
}

func (w *wire) end(typ byte, tag uint16) {
	w.tmu.Lock()
	st, ok := w.started[tag]
	delete(w.started, tag)
	w.tmu.Unlock()
	if !ok {
		return
	}
	var err error
	if typ == msgRlerror {
		err = errReplied
	}
	w.s.obs.Request("9p", opName(st.typ), st.at, err)
}

var errReplied = errors.New("9p error reply")

// opName names a 9P2000.L request type.
func opName(t byte) string {
	names := map[byte]string{
		8: "statfs", 12: "lopen", 14: "lcreate", 16: "symlink", 18: "mknod", 20: "rename", 22: "readlink",
		24: "getattr", 26: "setattr", 30: "xattrwalk", 32: "xattrcreate", 40: "readdir", 50: "fsync",
		52: "lock", 54: "getlock", 70: "link", 72: "mkdir", 74: "renameat", 76: "unlinkat", 100: "version",
		102: "auth", 104: "attach", 108: "flush", 110: "walk", 116: "read", 118: "write", 120: "clunk", 122: "remove",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type%d", t)
}

func inspected(t byte) bool {
	switch t {
	case msgTauth, msgTgetlock, msgTattach, msgTwalk, msgTsetattr, msgTlcreate, msgTxattrwalk:
		return true
	}
	return false
}

// inbound handles one whole request: it returns the frame p9 is to read,
// or nil when the request was answered here.
func (w *wire) inbound(frame []byte) ([]byte, error) {
	tag := binary.LittleEndian.Uint16(frame[5:])
	d := decoder{b: frame, off: hdrLen}
	switch frame[4] {
	case msgTauth:
		return nil, w.reply(rlerror(tag, linux.ENOENT))

	case msgTgetlock:
		d.u32() // fid
		d.u8()  // type
		start, length, proc, client := d.u64(), d.u64(), d.u32(), d.str()
		if d.bad {
			break
		}
		var e encoder
		e.header(msgRgetlock, tag)
		e.u8(lockTypeUnlck)
		e.u64(start)
		e.u64(length)
		e.u32(proc)
		e.str(client)
		return nil, w.reply(e.frame())

	case msgTattach:
		fid, afid, uname := d.u32(), d.u32(), d.str()
		aname := d.str()
		nuname := d.u32()
		if d.bad {
			break
		}
		w.note(tag, patch{req: msgTattach, name: aname})
		var e encoder
		e.header(msgTattach, tag)
		e.u32(fid)
		e.u32(afid)
		e.str(uname)
		e.str(attachName(aname))
		e.u32(nuname)
		return e.frame(), nil

	case msgTwalk:
		fid, newfid, n := d.u32(), d.u32(), int(d.u16())
		names := make([]string, 0, n)
		rewrite := false
		for range n {
			name := d.str()
			switch name {
			case "..":
				name, rewrite = dotdot, true
			case ".":
				name, rewrite = dot, true
			}
			names = append(names, name)
		}
		if d.bad || !rewrite {
			break
		}
		var e encoder
		e.header(msgTwalk, tag)
		e.u32(fid)
		e.u32(newfid)
		e.u16(uint16(len(names)))
		for _, name := range names {
			e.str(name)
		}
		return e.frame(), nil

	case msgTsetattr:
		// fid[4] valid[4] mode[4] uid[4] gid[4] size[8] atime_sec[8] atime_nsec[8] ...
		const validAt, modeAt, nsecAt = hdrLen + 4, hdrLen + 8, hdrLen + 36
		if len(frame) < nsecAt+8 {
			break
		}
		valid := binary.LittleEndian.Uint32(frame[validAt:])
		mode := binary.LittleEndian.Uint32(frame[modeAt:])
		if valid&setattrMode != 0 && mode&0o6000 != 0 {
			nsec := binary.LittleEndian.Uint64(frame[nsecAt:])
			nsec |= stashSetattrMark | uint64(mode&stashBits)<<stashSetattrShift
			binary.LittleEndian.PutUint64(frame[nsecAt:], nsec)
		}

	case msgTlcreate:
		// fid[4] name[s] flags[4] mode[4] gid[4]
		d.u32()
		d.str()
		flagsAt := d.off
		d.u32()
		mode := d.u32()
		if d.bad || mode&0o6000 == 0 {
			break
		}
		flags := binary.LittleEndian.Uint32(frame[flagsAt:])
		flags |= stashCreateMark | (mode&stashBits)<<stashCreateShift
		binary.LittleEndian.PutUint32(frame[flagsAt:], flags)

	case msgTxattrwalk:
		d.u32()
		d.u32()
		name := d.str()
		if !d.bad {
			w.note(tag, patch{req: msgTxattrwalk, name: name})
		}
	}
	return frame, nil
}

// attachName makes an attach name of components p9 accepts.
func attachName(aname string) string {
	var parts []string
	for _, c := range strings.Split(aname, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			c = dotdot
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/")
}

func (w *wire) note(tag uint16, p patch) {
	w.pmu.Lock()
	if _, ok := w.patches[tag]; !ok {
		w.npatch.Add(1)
	}
	w.patches[tag] = p
	w.pmu.Unlock()
}

// reply sends a reply made here.
func (w *wire) reply(frame []byte) error {
	if len(frame) >= hdrLen {
		w.end(frame[4], binary.LittleEndian.Uint16(frame[5:]))
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.c.Write(frame)
	return err
}

// Write takes p9's replies. p9 writes a reply as its header, its fixed
// part and its payload, in order and from one goroutine at a time; the
// wire gathers them and puts each reply on the connection in one write, so
// that replies made here never land inside one of p9's.
func (w *wire) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if len(w.out) < 4 {
			k := min(4-len(w.out), len(p))
			w.out = append(w.out, p[:k]...)
			p = p[k:]
			continue
		}
		size := max(int(binary.LittleEndian.Uint32(w.out)), hdrLen)
		rest := size - len(w.out)
		if len(p) >= rest && rest > copyMax && len(w.out) >= hdrLen {
			if err := w.flush(p[:rest]); err != nil {
				return total - len(p), err
			}
			p = p[rest:]
			continue
		}
		k := min(rest, len(p))
		w.out = append(w.out, p[:k]...)
		p = p[k:]
		if len(w.out) == size {
			if err := w.flush(nil); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

// flush writes the gathered reply, with tail (its payload) when given.
func (w *wire) flush(tail []byte) error {
	frame := w.out
	if len(frame) >= hdrLen {
		w.end(frame[4], binary.LittleEndian.Uint16(frame[5:]))
	}
	defer func() { w.out = w.out[:0] }()
	if tail == nil {
		w.outbound(frame)
	} else {
		w.forget(binary.LittleEndian.Uint16(frame[5:]))
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if tail == nil {
		_, err := w.c.Write(frame)
		return err
	}
	bufs := net.Buffers{frame, tail}
	_, err := bufs.WriteTo(w.c)
	return err
}

func (w *wire) take(tag uint16) (patch, bool) {
	if w.npatch.Load() == 0 {
		return patch{}, false
	}
	w.pmu.Lock()
	defer w.pmu.Unlock()
	p, ok := w.patches[tag]
	if ok {
		delete(w.patches, tag)
		w.npatch.Add(-1)
	}
	return p, ok
}

func (w *wire) forget(tag uint16) { w.take(tag) }

// outbound patches a whole (small) reply in place.
func (w *wire) outbound(frame []byte) {
	if len(frame) < hdrLen {
		return
	}
	p, ok := w.take(binary.LittleEndian.Uint16(frame[5:]))
	if !ok {
		return
	}
	typ := frame[4]
	switch {
	case p.req == msgTxattrwalk && typ == msgRlerror && len(frame) == hdrLen+4 &&
		binary.LittleEndian.Uint32(frame[hdrLen:]) == uint32(linux.EINVAL):
		if e, ok := w.s.takeXattrErr(p.name); ok {
			binary.LittleEndian.PutUint32(frame[hdrLen:], uint32(e))
		}
	case p.req == msgTxattrwalk && typ == msgRxattrwalk && len(frame) == hdrLen+8 && p.name == "" &&
		binary.LittleEndian.Uint64(frame[hdrLen:]) == 1:
		binary.LittleEndian.PutUint64(frame[hdrLen:], 0)
	case p.req == msgTattach && typ == msgRattach && len(frame) == hdrLen+13:
		n, err := w.s.f.Resolve(w.s.cred, p.name)
		if err != nil {
			return
		}
		a, err := w.s.f.Getattr(n)
		if err != nil {
			return
		}
		q := qidOf(a)
		frame[hdrLen] = byte(q.Type)
		binary.LittleEndian.PutUint32(frame[hdrLen+1:], q.Version)
		binary.LittleEndian.PutUint64(frame[hdrLen+5:], q.Path)
	}
}

func rlerror(tag uint16, e linux.Errno) []byte {
	var enc encoder
	enc.header(msgRlerror, tag)
	enc.u32(uint32(e))
	return enc.frame()
}

// decoder reads 9P's little-endian fields; bad is set on a short frame.
type decoder struct {
	b   []byte
	off int
	bad bool
}

func (d *decoder) take(n int) []byte {
	if d.bad || len(d.b)-d.off < n {
		d.bad = true
		return make([]byte, n)
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u8() uint8   { return d.take(1)[0] }
func (d *decoder) u16() uint16 { return binary.LittleEndian.Uint16(d.take(2)) }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.take(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.take(8)) }
func (d *decoder) str() string { return string(d.take(int(d.u16()))) }

// encoder builds one frame; frame fills in its size.
type encoder struct{ b []byte }

func (e *encoder) header(typ byte, tag uint16) {
	e.b = append(e.b[:0], 0, 0, 0, 0, typ)
	e.u16(tag)
}
func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *encoder) str(s string) {
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}
func (e *encoder) frame() []byte {
	binary.LittleEndian.PutUint32(e.b, uint32(len(e.b)))
	return e.b
}
