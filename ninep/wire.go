package ninep

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
)

// The wire sits between a client's connection and p9's server, at the
// message layer, for what p9 v0.4.1 cannot express through its File
// interface. p9 reads whole messages from it in order (one reader at a
// time) and writes each reply as one run of Writes (one writer at a time);
// p9 serves the requests it has read concurrently, each in its own
// goroutine. The wire relies on exactly that and on nothing else of p9's
// internals.
//
// What the wire learns of a request it keeps by the request's tag, in the
// table of calls in flight: a tag names one request from when it arrives
// until its reply is written, and the client may reuse it only once it has
// that reply, so the table needs no order of arrival or of service. The
// File method serving a request finds its call by a name the wire gives p9
// to pass down, and leaves there what the reply needs.
//
// On the way in:
//
//   - Tversion is let through only as the first request of a connection,
//     and the wire reads no other until it has its reply: p9 resets the
//     connection's buffers without a lock while serving it, which races
//     with the requests it serves meanwhile. A later Tversion is answered
//     EINVAL (Linux's v9fs and diod's tools send one, first). One asking
//     for p9's gVisor extensions gets plain 9P2000.L.
//   - A request that changes what p9 keeps for a fid without a lock is
//     let through only when no other request naming that fid is in
//     flight, and the wire reads no request naming the fid until it has
//     its reply (see exclusion below). A rename likewise waits for every
//     request in flight, and holds back every other.
//   - A request reusing the tag of one in flight is dropped, as p9 would
//     drop it (a client may reuse a tag only once it has the reply).
//   - Requests other than 9P2000.L's are answered ENOSYS here: no Linux
//     client sends them, and p9 would serve them around what the wire does
//     below (Twalkgetattr walks "..", Tucreate drops the setuid bit).
//   - Tauth is answered here with Rlerror ENOENT, the answer diod gives
//     when it needs no authentication: p9 hardcodes ENOSYS, which Debian's
//     diod tools (diodls, diodcat, diodload) take as a failure.
//   - Tflush is answered here, after the reply to the request it flushes
//     when that is in flight (p9 serves no request any faster for it):
//     p9 waits in a goroutine for the flushed tag, for ever when a Tflush
//     names its own tag or two name each other.
//   - Tgetlock, which p9 does not know (its reply would be an error, and
//     fcntl(F_GETLK) on a v9fs mount would fail), is answered here "no
//     conflicting lock": like Tlock, accepted with no real locking.
//   - Tattach: p9 gives the server neither uname, n_uname nor the attach
//     name whole. The call keeps all three, and p9 is given an attach name
//     of one component naming the call, which it walks from the unattached
//     root (session.Attach); file.walk attaches there.
//   - Txattrwalk: p9 answers EINVAL for every error. The call keeps the
//     attribute's name and p9 walks one naming the call; file.GetXattr
//     leaves fs's errno in the call for the reply.
//   - Twalk's ".." and "." components become dotdot and dot, which p9
//     passes to file.walk (p9 refuses ".." and "." itself). A walk naming
//     a component with a NUL in it is refused here: the names the wire
//     makes begin with one, and no client can make them.
//   - Tsetattr's and Tlcreate's setuid and setgid bits, which p9 masks off
//     when it decodes the mode, are carried in the message itself, in bits
//     the protocol leaves unused in a field p9 passes through untouched
//     (see the stash below).
//
// On the way out:
//
//   - Rattach carries the qid of what was attached (p9 answers with the
//     qid of the root it walked from), which file.walk left in the call.
//   - Rlerror to Txattrwalk carries the errno fs gave (ENODATA for a
//     missing attribute, EACCES, ...), which file.GetXattr left in the call.
//   - Rflushes follow the replies they wait for.
//   - An Rlerror p9 sends without a tag, for a message it could not
//     decode, ends the connection once it is out.
type wire struct {
	c  net.Conn
	s  *session
	br *bufio.Reader

	// Reader state; p9 reads from one goroutine at a time.
	pending   []byte        // a frame rewritten here, for p9 to read next
	remaining int           // bytes of the current frame p9 has yet to read from br
	begun     bool          // a request has been read
	versioned chan struct{} // closed once the Tversion p9 serves has its reply
	stopping  atomic.Bool

	// cmu guards calls (the requests in flight, by tag), fids, barrier
	// and closed; ended, on cmu, wakes the reader waiting for a call to
	// end. Lock order: wmu, then cmu.
	cmu     sync.Mutex
	calls   map[uint16]call
	fids    map[uint32]fidState // the fids whose state is not the zero one
	barrier bool                // a request that excludes every other is in flight
	closed  bool                // Close was called: the reader waits no more
	waiting bool                // the reader waits on ended
	ended   *sync.Cond

	// Writer state; p9 writes one reply at a time.
	out []byte     // the reply p9 is writing, until it is complete
	wmu sync.Mutex // one whole frame at a time goes on c

	closeOnce sync.Once

	// broke is the first read or write error that was not the end of the
	// connection, for ServeConn to return: the lifecycle logs it once.
	broke atomic.Pointer[error]
}

// note keeps err as what broke the connection, if it is the first.
func (w *wire) note(err error) error {
	if err != nil && !w.stopping.Load() {
		w.broke.CompareAndSwap(nil, &err)
	}
	return err
}

// brokenBy is the first I/O error the connection met, or nil.
func (w *wire) brokenBy() error {
	if p := w.broke.Load(); p != nil {
		return *p
	}
	return nil
}

// call is one request in flight: what the wire noted on its way in, and
// what the File method serving it left for the reply.
type call struct {
	typ byte
	at  time.Time

	// The fids the request names (nfid of them), and what it excludes
	// while in flight.
	fid  [2]uint32
	nfid int
	excl exclusion

	// Tversion: closed when its reply is written.
	replied chan struct{}
	// The tags of the Tflushes of this request: their Rflushes follow its
	// reply.
	flushes []uint16

	// Tattach: who attaches to what, and the qid of what was attached.
	uname    string
	nuname   uint32
	aname    string
	qid      p9.QID
	attached bool

	// Txattrwalk: the attribute ("" for the list of names), and the errno
	// fs gave when the walk failed.
	xname string
	errno linux.Errno
}

// 9P2000.L message types the wire looks at.
const (
	msgRlerror      = 7
	msgTlopen       = 12
	msgTlcreate     = 14
	msgTrename      = 20
	msgTsetattr     = 26
	msgTxattrwalk   = 30
	msgTxattrcreate = 32
	msgTgetlock     = 54
	msgRgetlock     = 55
	msgTlink        = 70
	msgTrenameat    = 74
	msgTversion     = 100
	msgTauth        = 102
	msgTattach      = 104
	msgRattach      = 105
	msgTflush       = 108
	msgRflush       = 109
	msgTwalk        = 110
	msgTwrite       = 118
	msgTclunk       = 120
	msgTremove      = 122
)

// requests names the requests of 9P2000.L, the only ones the wire lets
// through to p9.
var requests = map[byte]string{
	8: "statfs", 12: "lopen", 14: "lcreate", 16: "symlink", 18: "mknod", 20: "rename", 22: "readlink",
	24: "getattr", 26: "setattr", 30: "xattrwalk", 32: "xattrcreate", 40: "readdir", 50: "fsync",
	52: "lock", 54: "getlock", 70: "link", 72: "mkdir", 74: "renameat", 76: "unlinkat", 100: "version",
	102: "auth", 104: "attach", 108: "flush", 110: "walk", 116: "read", 118: "write", 120: "clunk", 122: "remove",
}

// opName names a request type, for the metrics.
func opName(t byte) string {
	if n, ok := requests[t]; ok {
		return n
	}
	return fmt.Sprintf("type%d", t)
}

const (
	hdrLen = 7 // size[4] type[1] tag[2]
	// maxFrame is p9's own bound on a message (its maximumLength): a
	// larger one is malformed and closes the connection, as p9 would.
	maxFrame = 4 << 20
	// copyMax: reply pieces up to this size are gathered into one write;
	// a larger final piece (a read's data) goes out with the gathered
	// header in one vectored write, uncopied.
	copyMax = 16 << 10

	noTag         = ^uint16(0) // NOTAG
	lockTypeUnlck = 2          // P9_LOCK_TYPE_UNLCK
	setattrMode   = 1          // P9_SETATTR_MODE
)

// Names the wire makes for p9 to pass to file.walk and file.GetXattr. Each
// begins with a NUL, which no name a client sends to be walked has (the
// wire refuses such walks): a NUL ends a name in every client's C strings.
// An attach or xattr walk's name ends with the tag of its call.
const (
	dotdot     = "\x00.."
	dot        = "\x00."
	attachMark = "\x00attach:"
	xattrMark  = "\x00xattr:"
)

func mark(prefix string, tag uint16) string { return prefix + strconv.Itoa(int(tag)) }

// unmark reads the tag from a name mark made with prefix.
func unmark(prefix, name string) (uint16, bool) {
	s, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	tag, err := strconv.ParseUint(s, 10, 16)
	return uint16(tag), err == nil
}

// The stash: p9 decodes Tsetattr's and Tlcreate's mode with
// ReadPermissions, which keeps only the 01777 bits, so chmod u+s or g+s
// would silently lose its bit. The wire copies the 07000 bits into bits of
// a field p9 hands to the File unchanged and the protocol never sets, and
// clears those bits first, so that what the File finds there is the
// wire's:
//
//   - Tsetattr: atime_nsec (below 1e9 when meaningful, so bits 40 and up
//     are free): marker bit 63, mode bits at 40.
//   - Tlcreate: flags (Linux open flags end at bit 22): marker bit 31,
//     mode bits at 16 (so at 25..27).
//
// file.SetAttr and file.Create take them out again (unstash*).
const (
	stashSetattrMark  = uint64(1) << 63
	stashSetattrShift = 40
	stashSetattrClear = ^(uint64(1)<<stashSetattrShift - 1)
	stashCreateMark   = uint32(1) << 31
	stashCreateShift  = 16
	stashCreateClear  = stashCreateMark | stashBits<<stashCreateShift
	stashBits         = 0o7000
)

func newWire(c net.Conn, s *session) *wire {
	w := &wire{c: c, s: s, br: bufio.NewReaderSize(c, 64<<10), calls: map[uint16]call{}, fids: map[uint32]fidState{}}
	w.ended = sync.NewCond(&w.cmu)
	return w
}

// Close closes the connection (p9 closes both of its ends: once is
// enough), and ends the reader's wait for a call to end.
func (w *wire) Close() error {
	var err error
	w.closeOnce.Do(func() { err = w.c.Close() })
	w.cmu.Lock()
	w.closed = true
	w.ended.Broadcast()
	w.cmu.Unlock()
	return err
}

// shutdown stops reading requests (p9 sees the end of the connection at
// the next one) and gives the replies still to come grace to be written.
func (w *wire) shutdown(grace time.Duration) {
	w.stopping.Store(true)
	w.c.SetReadDeadline(time.Now())
	w.c.SetWriteDeadline(time.Now().Add(grace))
	w.cmu.Lock()
	w.ended.Broadcast()
	w.cmu.Unlock()
}

// errMalformed ends a connection whose byte stream is no longer 9P.
var errMalformed = errors.New("ninep: malformed message")

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
			return n, w.readErr(err)
		}
		if w.versioned != nil {
			<-w.versioned
			w.versioned = nil
		}
		if w.stopping.Load() {
			return 0, io.EOF
		}
		hdr, err := w.br.Peek(hdrLen)
		if err != nil {
			return 0, w.readErr(err)
		}
		size, typ, tag := int(binary.LittleEndian.Uint32(hdr)), hdr[4], binary.LittleEndian.Uint16(hdr[5:])
		if size < hdrLen || size > maxFrame {
			return 0, errMalformed
		}
		c := call{typ: typ, at: time.Now()}
		head, err := w.br.Peek(min(size, hdrLen+8))
		if err != nil {
			return 0, w.readErr(err)
		}
		c.classify(head)
		admitted, err := w.admit(c, tag)
		if err != nil {
			return 0, err
		}
		if !admitted {
			if _, err := w.br.Discard(size); err != nil {
				return 0, w.readErr(err)
			}
			continue
		}
		if _, ok := requests[typ]; ok && !inspected(typ) {
			w.remaining = size
			continue
		}
		frame := make([]byte, size)
		if _, err := io.ReadFull(w.br, frame); err != nil {
			return 0, w.readErr(err)
		}
		first := !w.begun
		w.begun = true
		if w.pending, err = w.inbound(frame, first); err != nil {
			return 0, err
		}
	}
}

// readErr is the end of the connection once shutdown has begun, rather
// than the deadline that ended a read.
func (w *wire) readErr(err error) error {
	if err != nil && w.stopping.Load() {
		return io.EOF
	}
	return w.note(err)
}

// The exclusion. p9 serves a connection's requests concurrently, and some
// of them change what it keeps for a fid outside its locks, or under a
// lock shared with readers:
//
//   - Tlopen marks the fid opened, with its open flags, after releasing
//     the fid's lock; almost every request on the fid reads them (Tread,
//     Twrite, Treaddir, Tfsync, Twalk, Tlcreate, Tmkdir, another Tlopen).
//   - Twrite on a fid that Txattrcreate made an attribute to be written
//     appends to the attribute's buffer holding the fid's lock only for
//     reading, as concurrent Twrites, Treads and the Tclunk that sets the
//     attribute do.
//   - Tlcreate replaces the fid by the file it creates and opens, and
//     Txattrcreate makes it an attribute to be written; Tclunk and Tremove
//     end it.
//   - Trename and Trenameat move the fids under the renamed entry to their
//     new parent, which a walk of no names and the release of a fid's last
//     reference read without a lock.
//
// Linux's v9fs never sends a request on a fid whose Tlopen, Tlcreate,
// Txattrcreate or Tclunk has no reply yet, but any client can, so the wire
// lets a request that excludes its fid (exclFid) through to p9 only once
// no request naming the fid is in flight, and a rename (exclAll) only once
// no request at all is; while either is in flight, the reader holds back
// the requests it excludes. The wait ends at replies, which p9 writes
// whether or not the wire reads: it stalls only the connection that asked
// for it, and a Tflush read after it is answered after the request it
// flushes, as always. p9 holds a rename's lock against every other
// request on the connection anyway.
type exclusion uint8

const (
	exclNone exclusion = iota
	exclFid            // no other request naming fid[0] is in flight
	exclAll            // no other request is in flight
)

// fidState is what the wire keeps of a fid between requests; fids holds
// only those in a state other than the zero one.
type fidState struct {
	busy  bool // a request excluding the fid is in flight
	xattr bool // a Txattrcreate named it: its Twrites exclude it
}

// names says whether the request names fid.
func (c *call) names(fid uint32) bool {
	return c.nfid > 0 && c.fid[0] == fid || c.nfid > 1 && c.fid[1] == fid
}

// classify notes which fids a request names, from head, the first bytes
// of its frame (up to hdrLen+8), and what its type excludes. A frame too
// short for its fids names fewer; p9 refuses it (the connection ends). A
// type outside 9P2000.L is answered here, whatever fids it seems to name.
func (c *call) classify(head []byte) {
	switch c.typ {
	case msgTversion, msgTauth, msgTflush, msgTgetlock:
		return // no fid, or answered here
	case msgTrename, msgTrenameat:
		c.excl = exclAll
		return
	}
	// Every other request names a fid first (Tlink, Tmkdir, Tsymlink,
	// Tmknod and Tunlinkat a directory's); Twalk and Txattrwalk name the
	// new fid next, and Tlink the linked file.
	for c.nfid < 2 && len(head) >= hdrLen+4*(c.nfid+1) {
		c.fid[c.nfid] = binary.LittleEndian.Uint32(head[hdrLen+4*c.nfid:])
		c.nfid++
		if c.typ != msgTwalk && c.typ != msgTxattrwalk && c.typ != msgTlink {
			break
		}
	}
	switch c.typ {
	case msgTlopen, msgTlcreate, msgTxattrcreate, msgTclunk, msgTremove:
		if c.nfid > 0 {
			c.excl = exclFid
		}
	}
}

// admit notes the request c under tag as in flight once the exclusion
// lets it through. It reports false, and notes nothing, for a tag already
// in flight; and io.EOF when the connection stops or closes meanwhile.
func (w *wire) admit(c call, tag uint16) (bool, error) {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	if _, dup := w.calls[tag]; dup {
		return false, nil
	}
	if c.typ == msgTwrite && c.nfid > 0 && w.fids[c.fid[0]].xattr {
		c.excl = exclFid
	}
	for !w.admissible(&c) {
		if w.closed || w.stopping.Load() {
			return false, io.EOF
		}
		w.waiting = true
		w.ended.Wait()
		w.waiting = false
	}
	switch c.excl {
	case exclAll:
		w.barrier = true
	case exclFid:
		st := w.fids[c.fid[0]]
		st.busy = true
		switch c.typ {
		case msgTxattrcreate:
			st.xattr = true
		case msgTclunk, msgTremove:
			st.xattr = false // p9 drops the fid whatever the outcome
		}
		w.fids[c.fid[0]] = st
	}
	w.calls[tag] = c
	return true, nil
}

// admissible says whether c may go to p9 now. Called with cmu held.
func (w *wire) admissible(c *call) bool {
	switch {
	case w.barrier:
		return false
	case c.excl == exclAll:
		return len(w.calls) == 0
	case c.excl == exclFid:
		for _, o := range w.calls {
			if o.names(c.fid[0]) {
				return false
			}
		}
		return true
	}
	for i := range c.nfid {
		if w.fids[c.fid[i]].busy {
			return false
		}
	}
	return true
}

// release undoes what admit noted for c, at its reply. Called with cmu
// held.
func (w *wire) release(c call) {
	switch c.excl {
	case exclAll:
		w.barrier = false
	case exclFid:
		st := w.fids[c.fid[0]]
		st.busy = false
		if st == (fidState{}) {
			delete(w.fids, c.fid[0])
		} else {
			w.fids[c.fid[0]] = st
		}
	}
	if w.waiting {
		w.ended.Signal()
	}
}

func inspected(t byte) bool {
	switch t {
	case msgTversion, msgTauth, msgTgetlock, msgTflush, msgTattach, msgTwalk, msgTsetattr, msgTlcreate, msgTxattrwalk:
		return true
	}
	return false
}

// end takes the request in flight under tag at its reply and reports it
// to the metrics.
func (w *wire) end(replyType byte, tag uint16) (call, bool) {
	w.cmu.Lock()
	c, ok := w.calls[tag]
	if ok {
		delete(w.calls, tag)
		w.release(c)
	}
	w.cmu.Unlock()
	if ok {
		var err error
		if replyType == msgRlerror {
			err = errReplied
		}
		w.s.obs.Request("9p", opName(c.typ), c.at, err)
	}
	return c, ok
}

var errReplied = errors.New("9p error reply")

// call is the request in flight under tag, for the File method serving it.
func (w *wire) call(tag uint16) (call, bool) {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	c, ok := w.calls[tag]
	return c, ok
}

// update changes the call in flight under tag, if it is one of typ.
func (w *wire) update(tag uint16, typ byte, fn func(*call)) {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	if c, ok := w.calls[tag]; ok && c.typ == typ {
		fn(&c)
		w.calls[tag] = c
	}
}

// attached leaves the qid of what the Tattach under tag attached.
func (w *wire) attached(tag uint16, q p9.QID) {
	w.update(tag, msgTattach, func(c *call) { c.qid, c.attached = q, true })
}

// xattrFailed leaves the errno of the Txattrwalk under tag.
func (w *wire) xattrFailed(tag uint16, e linux.Errno) {
	w.update(tag, msgTxattrwalk, func(c *call) { c.errno = e })
}

// inbound handles one whole request: it returns the frame p9 is to read,
// or nil when the request was answered here.
func (w *wire) inbound(frame []byte, first bool) ([]byte, error) {
	typ, tag := frame[4], binary.LittleEndian.Uint16(frame[5:])
	if _, ok := requests[typ]; !ok {
		return nil, w.reply(rlerror(tag, linux.ENOSYS))
	}
	d := decoder{b: frame, off: hdrLen}
	var e encoder
	switch typ {
	case msgTversion:
		msize, version := d.u32(), d.str()
		if d.bad || !first {
			break
		}
		w.versioned = make(chan struct{})
		w.update(tag, msgTversion, func(c *call) { c.replied = w.versioned })
		if v, ext := strings.CutPrefix(version, "9P2000.L."); ext && v != "" {
			e.header(msgTversion, tag)
			e.u32(msize)
			e.str("9P2000.L")
			return e.frame(), nil
		}
		return frame, nil

	case msgTauth:
		return nil, w.reply(rlerror(tag, linux.ENOENT))

	case msgTflush:
		old := d.u16()
		if d.bad {
			break
		}
		return nil, w.flushAfter(tag, old)

	case msgTgetlock:
		d.u32() // fid
		d.u8()  // type
		start, length, proc, client := d.u64(), d.u64(), d.u32(), d.str()
		if d.bad {
			break
		}
		e.header(msgRgetlock, tag)
		e.u8(lockTypeUnlck)
		e.u64(start)
		e.u64(length)
		e.u32(proc)
		e.str(client)
		return nil, w.reply(e.frame())

	case msgTattach:
		fid, afid, uname, aname, nuname := d.u32(), d.u32(), d.str(), d.str(), d.u32()
		if d.bad {
			break
		}
		w.update(tag, msgTattach, func(c *call) { c.uname, c.aname, c.nuname = uname, aname, nuname })
		e.header(msgTattach, tag)
		e.u32(fid)
		e.u32(afid)
		e.str(uname)
		e.str(mark(attachMark, tag))
		e.u32(nuname)
		return e.frame(), nil

	case msgTxattrwalk:
		fid, newfid, name := d.u32(), d.u32(), d.str()
		if d.bad {
			break
		}
		w.update(tag, msgTxattrwalk, func(c *call) { c.xname = name })
		e.header(msgTxattrwalk, tag)
		e.u32(fid)
		e.u32(newfid)
		e.str(mark(xattrMark, tag))
		return e.frame(), nil

	case msgTwalk:
		fid, newfid, n := d.u32(), d.u32(), int(d.u16())
		names := make([]string, 0, min(n, 16))
		rewrite := false
		for i := 0; i < n && !d.bad; i++ {
			name := d.str()
			switch {
			case name == "..":
				name, rewrite = dotdot, true
			case name == ".":
				name, rewrite = dot, true
			case strings.IndexByte(name, 0) >= 0:
				return nil, w.reply(rlerror(tag, linux.EINVAL))
			}
			names = append(names, name)
		}
		if d.bad {
			break
		}
		if !rewrite {
			return frame, nil
		}
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
		nsec := binary.LittleEndian.Uint64(frame[nsecAt:]) &^ stashSetattrClear
		if valid&setattrMode != 0 && mode&0o6000 != 0 {
			nsec |= stashSetattrMark | uint64(mode&stashBits)<<stashSetattrShift
		}
		binary.LittleEndian.PutUint64(frame[nsecAt:], nsec)
		return frame, nil

	case msgTlcreate:
		// fid[4] name[s] flags[4] mode[4] gid[4]
		d.u32()
		d.str()
		flagsAt := d.off
		d.u32()
		mode := d.u32()
		d.u32()
		if d.bad {
			break
		}
		flags := binary.LittleEndian.Uint32(frame[flagsAt:]) &^ stashCreateClear
		if mode&0o6000 != 0 {
			flags |= stashCreateMark | (mode&stashBits)<<stashCreateShift
		}
		binary.LittleEndian.PutUint32(frame[flagsAt:], flags)
		return frame, nil
	}
	// Too short for what its type carries (p9 would answer it without its
	// tag, which leaves the client waiting), or a Tversion after the first
	// request.
	return nil, w.reply(rlerror(tag, linux.EINVAL))
}

// reply sends a reply made here.
func (w *wire) reply(frame []byte) error { return w.send(frame, nil) }

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
	defer func() { w.out = w.out[:0] }()
	return w.send(w.out, tail)
}

// send ends the call a reply answers, patches the reply with what the
// call holds for it, writes it (with tail, its payload, when given), and
// then the Rflush of every Tflush that waited for it. The call leaves the
// table under wmu, so that a Tflush that finds its call gone has its
// Rflush written after the reply.
func (w *wire) send(frame, tail []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	flushes, found := w.outbound(frame)
	// p9 answers a message it cannot decode with an Rlerror without its
	// tag, which leaves the client waiting for one: the wire ends the
	// connection instead, once that reply is out.
	if !found && len(frame) >= hdrLen && frame[4] == msgRlerror && binary.LittleEndian.Uint16(frame[5:]) == noTag {
		defer w.Close()
	}
	var err error
	if tail == nil {
		_, err = w.c.Write(frame)
	} else {
		bufs := net.Buffers{frame, tail}
		_, err = bufs.WriteTo(w.c)
	}
	for len(flushes) > 0 && err == nil {
		r := rflush(flushes[0])
		more, _ := w.outbound(r)
		flushes = append(flushes[1:], more...)
		_, err = w.c.Write(r)
	}
	return w.note(err)
}

// outbound ends the call a reply answers, patches the reply in place with
// what the call holds for it, and returns the tags of the Tflushes that
// waited for it; found is false when no call was in flight under the
// reply's tag.
func (w *wire) outbound(frame []byte) (flushes []uint16, found bool) {
	if len(frame) < hdrLen {
		return nil, false
	}
	typ := frame[4]
	c, ok := w.end(typ, binary.LittleEndian.Uint16(frame[5:]))
	if !ok {
		return nil, false
	}
	if c.replied != nil {
		close(c.replied)
	}
	switch {
	case c.typ == msgTxattrwalk && typ == msgRlerror && len(frame) == hdrLen+4 && c.errno != 0:
		binary.LittleEndian.PutUint32(frame[hdrLen:], uint32(c.errno))
	case c.typ == msgTattach && typ == msgRattach && len(frame) == hdrLen+13 && c.attached:
		frame[hdrLen] = byte(c.qid.Type)
		binary.LittleEndian.PutUint32(frame[hdrLen+1:], c.qid.Version)
		binary.LittleEndian.PutUint64(frame[hdrLen+5:], c.qid.Path)
	}
	return c.flushes, true
}

// flushAfter answers a Tflush (under tag) of the request under old: at
// once if old is not in flight, or else right after old's reply.
func (w *wire) flushAfter(tag, old uint16) error {
	w.cmu.Lock()
	c, ok := w.calls[old]
	if ok && old != tag {
		c.flushes = append(c.flushes, tag)
		w.calls[old] = c
		w.cmu.Unlock()
		return nil
	}
	w.cmu.Unlock()
	return w.reply(rflush(tag))
}

func rflush(tag uint16) []byte {
	var enc encoder
	enc.header(msgRflush, tag)
	return enc.frame()
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
