package nfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asof/asof/fs"
)

// go-nfs lacks some procedures (MOUNTPROC3_EXPORT), decodes LINK wrongly,
// flattens most errors of the changing procedures into ACCESS or IO, and
// serves the requests of a connection one at a time. The interposer sits
// at the RPC record layer between each client connection and go-nfs: it
// reads every call record, answers the procedures listed in procs itself,
// several at once, and passes the rest through to go-nfs unchanged, in
// order. Its replies and go-nfs's are whole records, never
// interleaved, in whatever order they are ready (RPC matches them by xid).
const (
	progNFS   = 100003
	progMount = 100005
)

type procKey struct{ prog, proc uint32 }

// rpcCall is one decoded call.
type rpcCall struct {
	xid   uint32
	prog  uint32
	vers  uint32
	proc  uint32
	args  []byte
	start time.Time // when its record arrived
	fn    procFunc  // what answers it
	conn  net.Conn  // whom from
	// nowait asks a READ not to wait for the disk: answered by the reader
	// goroutine, it hands such a call to a goroutine of its own instead.
	nowait bool
	// pooled is a buffer from the pool that the reply was built in, given
	// back once the reply is sent.
	pooled *[]byte
	// data is file data (a READ's) that follows the reply's bytes,
	// padded: sent from where it lies, and released once it is out.
	data fs.View
}

// procFunc answers a call by appending the body of its reply to w, which
// holds the record mark and the RPC reply header already (READ puts file
// data straight into the reply this way); an error means the arguments did
// not decode (GARBAGE_ARGS).
type procFunc func(h *handler, c *rpcCall, w *xdrWriter) error

// maxInflight bounds the calls of one connection being answered at once,
// and so the call records one connection holds: at most maxInflight, each
// at most maxRecord bytes (in practice a 1 MiB WRITE).
const maxInflight = 16

// interposed wraps one client connection. go-nfs reads the calls it
// should answer through Read and writes its replies through Write.
type interposed struct {
	net.Conn
	h *handler

	pr *io.PipeReader // what go-nfs reads
	pw *io.PipeWriter

	raw     syscall.RawConn // to ask whether more calls wait to be read
	slots   chan struct{}   // one per call being answered or waiting for go-nfs
	forward chan *[]byte    // call records for go-nfs, in arrival order
	workers sync.WaitGroup

	qmu     sync.Mutex    // guards queue, spare, writing
	queue   []queuedReply // replies of the interposer's waiting to be written
	spare   []queuedReply // the previous batch's slice, for the next
	writing bool          // a goroutine is writing the queue

	wmu     sync.Mutex // held from the first byte of a reply to its last
	out     []byte     // a partial fragment header of go-nfs's output
	left    int        // bytes of the current fragment still to come
	last    bool       // the current fragment ends its record
	holding bool

	// For metrics: the calls passed to go-nfs, by xid, and the start of
	// the reply being written.
	pmu     sync.Mutex
	pending map[uint32]pendingCall
	head    []byte
}

type pendingCall struct {
	proc  procKey
	start time.Time
}

func newInterposed(c net.Conn, h *handler) *interposed {
	pr, pw := io.Pipe()
	ic := &interposed{Conn: c, h: h, pr: pr, pw: pw, pending: map[uint32]pendingCall{},
		slots: make(chan struct{}, maxInflight), forward: make(chan *[]byte, maxInflight)}
	if sc, ok := c.(syscall.Conn); ok {
		ic.raw, _ = sc.SyscallConn()
	}
	go ic.forwardCalls()
	go ic.readCalls(bufio.NewReaderSize(c, 64<<10))
	return ic
}

func (ic *interposed) Read(p []byte) (int, error) { return ic.pr.Read(p) }

func (ic *interposed) Close() error {
	ic.pr.Close()
	return ic.Conn.Close()
}

// testHook, when set (by tests), runs in a call's worker before the call
// is answered.
var testHook atomic.Pointer[func(c *rpcCall)]

// readCalls reads call records from the client and answers or forwards
// them. A hand-off to another goroutine costs more than a READ from the
// page cache on a small VM (fio's 4 KiB random reads took 40 % more server
// CPU per call with one), so:
//
//   - a call that only reads, or only buffers (an UNSTABLE WRITE of up to
//     64 KiB), is answered by the reader itself, and while another whole
//     call is already buffered its reply waits, to go out with the next
//     ones in one writev;
//   - a call that waits for an fsync (a change) goes to a goroutine of its
//     own when more calls wait, so that changes in flight together share
//     one fsync (group commit); alone it is answered inline. Stable and
//     large WRITEs and COMMIT always go to a goroutine (mayWait);
//   - the reader answers a READ only from memory (the page cache); one
//     that needs the disk goes to a goroutine of its own, and for a second
//     the reads after it do too when more calls wait, so that the disk
//     sees them at once, not one by one. A large READ (largeRead) goes to
//     a goroutine when more calls wait: its check of every byte is worth
//     spreading over the cores (1 MiB reads at qd8, 14-22 % faster). (An
//     UNSTABLE WRITE may wait for a commit when too much is buffered, and
//     the connection with it: the writer is held back either way.)
//
// A call holds one of maxInflight slots from before its record is read
// until its reply is written (or go-nfs has taken it), so a client that
// sends faster than it reads its replies is held back by TCP, not by the
// server's memory.
func (ic *interposed) readCalls(br *bufio.Reader) {
	defer func() {
		// go-nfs closes the connection when its input ends: only after
		// every reply of the interposer's is out.
		ic.workers.Wait()
		close(ic.forward)
	}()
	var parallelUntil time.Time
	for {
		if !recordBuffered(br) {
			ic.flush() // the next read may wait for the client
		}
		select {
		case ic.slots <- struct{}{}:
		default:
			ic.flush() // replies held back hold slots
			ic.slots <- struct{}{}
		}
		rb, err := readRecord(br)
		if err != nil {
			<-ic.slots
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				ic.h.log.Debug("nfs: connection ended", "client", ic.RemoteAddr().String(), "err", err)
			}
			return
		}
		start := time.Now()
		if c, ok := ic.h.decodeCall(*rb); ok {
			c.start, c.conn = start, ic.Conn
			ic.workers.Add(1)
			more := recordBuffered(br)
			switch {
			case mayWait(c) || syncs(c) && (more || unread(ic.raw)):
				go ic.serveCall(c, rb)
			case syncs(c):
				ic.serveCall(c, rb)
			case more && (start.Before(parallelUntil) || largeRead(c)):
				go ic.serveCall(c, rb)
			default:
				c.nowait = true
				if !ic.answer(c, rb, !more) {
					// It needs the disk: from now on a while, so do the
					// reads after it, and they should reach it together.
					c.nowait = false
					go ic.serveCall(c, rb)
					parallelUntil = time.Now().Add(time.Second)
				}
			}
			continue
		}
		if xid, key, ok := callOf(*rb); ok {
			ic.pmu.Lock()
			ic.pending[xid] = pendingCall{proc: key, start: start}
			ic.pmu.Unlock()
		}
		ic.forward <- rb
	}
}

// mayWait tells the calls that go to a goroutine of their own: those that
// may wait long for the engine (a stable WRITE for an fsync, COMMIT for the
// fsync of everything) and large WRITEs, whose copying is better spread
// over the cores (1 MiB writes at qd8 went 12 % faster than answered one
// after another by the reader; 4 KiB writes took 10 % less CPU answered
// by the reader).
func mayWait(c *rpcCall) bool {
	if c.prog != progNFS {
		return false
	}
	switch c.proc {
	case procCommit:
		return true
	case procWrite:
		count, stable := writeArgsOf(c)
		return stable != stableUnstable || count > inlineWriteMax
	}
	return false
}

// largeRead tells a READ large enough that checking its blocks (CRC-32C
// over every byte) is better spread over the cores than done by the
// reader, when more calls wait.
func largeRead(c *rpcCall) bool {
	if c.prog != progNFS || c.proc != procRead {
		return false
	}
	count, r := ioArgs(c)
	return count >= largeReadMin && r.err == nil
}

// largeReadMin is the smallest READ that largeRead tells.
const largeReadMin = 128 << 10

// inlineWriteMax is the largest UNSTABLE WRITE the reader answers itself.
const inlineWriteMax = 64 << 10

// syncs tells the calls that make their change durable before replying.
func syncs(c *rpcCall) bool {
	if c.prog != progNFS {
		return false
	}
	switch c.proc {
	case procSetattr, procCreate, procMkdir, procSymlink, procMknod, procRemove, procRmdir, procRename, procLink:
		return true
	}
	return false
}

// writeArgsOf reads a WRITE's count and stability (FILE_SYNC when the
// arguments do not decode: the procedure itself will say GARBAGE_ARGS).
func writeArgsOf(c *rpcCall) (count, stable uint32) {
	count, r := ioArgs(c)
	stable = r.u32()
	if r.err != nil {
		return 0, stableFileSync
	}
	return count, stable
}

// ioArgs reads the count that READ's and WRITE's arguments both begin
// with (after the handle and offset), and returns the reader past it.
func ioArgs(c *rpcCall) (uint32, *xdrReader) {
	r := &xdrReader{b: c.args}
	r.handle()
	r.u64() // offset
	return r.u32(), r
}

// recordBuffered tells whether a whole call record is in br already, so
// that reading it will not wait for the client.
func recordBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 4 {
		return false
	}
	h, err := br.Peek(4)
	if err != nil {
		return false
	}
	v := binary.BigEndian.Uint32(h)
	return v&(1<<31) != 0 && br.Buffered() >= 4+int(v&^(1<<31))
}

// serveCall answers one call and sends the reply. The call keeps its slot
// until the reply is written.
func (ic *interposed) serveCall(c *rpcCall, rb *[]byte) { ic.answer(c, rb, true) }

// errWouldBlock from a procedure: the call has nowait set and would wait
// for the disk; it has written nothing that counts.
var errWouldBlock = errors.New("nfs: would wait for the disk")

// answer answers a call; its reply goes out now, or with flush false waits
// for the next one that does. It reports false, having answered nothing,
// for a call with nowait set that would wait for the disk.
func (ic *interposed) answer(c *rpcCall, rb *[]byte, flush bool) bool {
	reply := ic.h.reply(c)
	if reply == nil {
		return false
	}
	putBuf(rb) // the arguments pointed into it
	q := queuedReply{rec: reply, pooled: c.pooled, data: c.data}
	c.data = fs.View{} // the queued reply releases it once it is out
	ic.send(q, flush)
	return true
}

// flush writes the replies held back, unless a goroutine is at it.
func (ic *interposed) flush() { ic.send(queuedReply{}, true) }

// A queuedReply waits to be written: the record's bytes, the pooled
// buffer they live in, and the file data that ends the record.
type queuedReply struct {
	rec    []byte
	pooled *[]byte
	data   fs.View
}

// xdrPad pads opaque data to a multiple of four bytes.
var xdrPad [3]byte

func padding(n int) []byte { return xdrPad[:(4-n%4)%4] }

// send writes a reply (with flush false, only queues it), or leaves it to
// the goroutine writing already, which takes every reply queued meanwhile
// into its next write: replies that are ready together go out in one
// system call (each costs about as much as a small READ's whole work on
// loopback). Once a reply is out its buffer goes back to the pool and its
// call's slot is freed.
func (ic *interposed) send(q queuedReply, flush bool) {
	ic.qmu.Lock()
	if q.rec != nil {
		ic.queue = append(ic.queue, q)
	}
	if ic.writing || !flush {
		ic.qmu.Unlock()
		return
	}
	ic.writing = true
	for len(ic.queue) > 0 {
		batch := ic.queue
		ic.queue = ic.spare[:0]
		ic.qmu.Unlock()
		bufs := make(net.Buffers, 0, len(batch))
		for _, q := range batch {
			bufs = append(bufs, q.rec)
			if q.data.N > 0 {
				bufs = append(bufs, q.data.Segs...)
				bufs = append(bufs, padding(q.data.N))
			}
		}
		ic.wmu.Lock()
		_, err := bufs.WriteTo(ic.Conn)
		ic.wmu.Unlock()
		if err != nil {
			ic.Conn.Close() // ends readCalls
		}
		for i, q := range batch {
			putBuf(q.pooled)
			q.data.Release()
			batch[i] = queuedReply{}
			<-ic.slots
			ic.workers.Done()
		}
		ic.qmu.Lock()
		ic.spare = batch
	}
	ic.writing = false
	ic.qmu.Unlock()
}

// forwardCalls hands go-nfs its calls, one whole record at a time (go-nfs
// reassembles no fragments), in the order they came.
func (ic *interposed) forwardCalls() {
	defer ic.pw.Close()
	broken := false
	for rb := range ic.forward {
		if !broken {
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], uint32(len(*rb))|1<<31)
			_, err := ic.pw.Write(hdr[:])
			if err == nil {
				_, err = ic.pw.Write(*rb)
			}
			if err != nil {
				broken = true
				ic.Conn.Close() // go-nfs is gone: end the connection
			}
		}
		putBuf(rb)
		<-ic.slots
	}
}

// maxRecord bounds a call record: a WRITE of 1 MiB (wtmax) and its header,
// with room for clients that send more than they are told.
const maxRecord = 4 << 20

// readRecord reads one call record, reassembling its fragments, into a
// buffer from the pool.
func readRecord(r io.Reader) (*[]byte, error) {
	var bp *[]byte
	n := 0
	for {
		var h [4]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			putBuf(bp)
			return nil, err
		}
		v := binary.BigEndian.Uint32(h[:])
		k := int(v &^ (1 << 31))
		if n+k > maxRecord {
			putBuf(bp)
			return nil, fmt.Errorf("nfs: a call record of more than %d bytes", maxRecord)
		}
		if bp == nil || cap(*bp) < n+k {
			nb := getBuf(n + k)
			if bp != nil {
				*nb = append((*nb)[:0], (*bp)[:n]...)
				putBuf(bp)
			}
			bp = nb
		}
		*bp = (*bp)[:n+k]
		if _, err := io.ReadFull(r, (*bp)[n:]); err != nil {
			putBuf(bp)
			return nil, err
		}
		n += k
		if v&(1<<31) != 0 {
			return bp, nil
		}
	}
}

// Buffers for call records and replies: most are small; WRITE calls and
// READ replies are up to 1 MiB and a header.
const (
	smallBuf = 8 << 10
	bigBuf   = maxIO + 8<<10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, 0, smallBuf); return &b }}
	bigBufs   = sync.Pool{New: func() any { b := make([]byte, 0, bigBuf); return &b }}
)

// getBuf returns an empty buffer with room for n bytes.
func getBuf(n int) *[]byte {
	switch {
	case n <= smallBuf:
		return smallBufs.Get().(*[]byte)
	case n <= bigBuf:
		return bigBufs.Get().(*[]byte)
	}
	b := make([]byte, 0, n)
	return &b
}

// putBuf gives a buffer from getBuf back; nil is ignored.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	*b = (*b)[:0]
	switch cap(*b) {
	case smallBuf:
		smallBufs.Put(b)
	case bigBuf:
		bigBufs.Put(b)
	}
}

// Write passes go-nfs's output on, following its record marking so the
// lock is held from a reply's first byte to its last.
func (ic *interposed) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if !ic.holding {
			ic.wmu.Lock()
			ic.holding = true
		}
		if ic.left == 0 {
			// Inside a fragment header.
			k := min(4-len(ic.out), len(p))
			ic.out = append(ic.out, p[:k]...)
			if _, err := ic.Conn.Write(p[:k]); err != nil {
				return total - len(p), err
			}
			p = p[k:]
			if len(ic.out) == 4 {
				v := binary.BigEndian.Uint32(ic.out)
				ic.left, ic.last, ic.out = int(v&^(1<<31)), v&(1<<31) != 0, ic.out[:0]
				if ic.left == 0 && ic.last {
					ic.release()
				}
			}
			continue
		}
		k := min(ic.left, len(p))
		if len(ic.head) < replyHead {
			ic.head = append(ic.head, p[:min(k, replyHead-len(ic.head))]...)
		}
		if _, err := ic.Conn.Write(p[:k]); err != nil {
			return total - len(p), err
		}
		p, ic.left = p[k:], ic.left-k
		if ic.left == 0 && ic.last {
			ic.release()
		}
	}
	return total, nil
}

func (ic *interposed) release() {
	ic.holding = false
	ic.wmu.Unlock()
	ic.observeReply()
}

// replyHead is enough of a reply to read its xid, acceptance and, for NFS,
// its status: xid, REPLY, MSG_ACCEPTED, an AUTH_NONE verifier, accept_stat,
// nfsstat3.
const replyHead = 28

// observeReply reports a go-nfs reply to the metrics.
func (ic *interposed) observeReply() {
	head := ic.head
	ic.head = ic.head[:0]
	if len(head) < 24 {
		return
	}
	xid := binary.BigEndian.Uint32(head)
	ic.pmu.Lock()
	pc, ok := ic.pending[xid]
	delete(ic.pending, xid)
	ic.pmu.Unlock()
	if !ok {
		return
	}
	ic.h.observer.Request("nfs", pc.proc.name(), pc.start, replyStatus(pc.proc, head[20:], nil))
}

var (
	errRPCFailed = errors.New("rpc call not accepted")
	errNFSStatus = errors.New("nfs error status")
)

// callOf reads the program and procedure of a call record.
func callOf(rec []byte) (uint32, procKey, bool) {
	if len(rec) < 24 || binary.BigEndian.Uint32(rec[4:]) != 0 {
		return 0, procKey{}, false
	}
	return binary.BigEndian.Uint32(rec), procKey{binary.BigEndian.Uint32(rec[12:]), binary.BigEndian.Uint32(rec[20:])}, true
}

var nfsProcNames = []string{"null", "getattr", "setattr", "lookup", "access", "readlink", "read", "write", "create",
	"mkdir", "symlink", "mknod", "remove", "rmdir", "rename", "link", "readdir", "readdirplus", "fsstat", "fsinfo",
	"pathconf", "commit"}
var mountProcNames = []string{"mount_null", "mount", "mount_dump", "umount", "umountall", "export"}

func (k procKey) name() string {
	switch {
	case k.prog == progNFS && int(k.proc) < len(nfsProcNames):
		return nfsProcNames[k.proc]
	case k.prog == progMount && int(k.proc) < len(mountProcNames):
		return mountProcNames[k.proc]
	}
	return "other" // a metrics label: not one per number a client makes up
}

// decodeCall decodes a call record whose procedure the interposer answers;
// ok is false for a record to pass to go-nfs.
func (h *handler) decodeCall(rec []byte) (*rpcCall, bool) {
	r := &xdrReader{b: rec}
	c := &rpcCall{}
	c.xid = r.u32()
	if r.u32() != 0 { // not a CALL
		return nil, false
	}
	if r.u32() != 2 { // RPC version
		return nil, false
	}
	c.prog, c.vers, c.proc = r.u32(), r.u32(), r.u32()
	r.u32()
	r.opaque(400) // credentials: the export is all-squash
	r.u32()
	r.opaque(400) // verifier
	if r.err != nil {
		return nil, false
	}
	c.args = r.b
	if c.fn = versionless(c); c.fn != nil {
		return c, true
	}
	if c.vers != 3 {
		return nil, false // MOUNT v1 and v2's void procedures: go-nfs's
	}
	if c.fn = procs[procKey{c.prog, c.proc}]; c.fn == nil {
		return nil, false
	}
	return c, true
}

// versionless answers the calls that go-nfs, which looks at neither the
// program's version nor programs it lacks, would get wrong:
//   - NFS of another version than 3: PROG_MISMATCH (3 to 3), which tells a
//     client that asks for version 4 first (mount.nfs without vers=3) that
//     only version 3 is served; go-nfs took an NFSv4 COMPOUND for a GETATTR;
//   - MOUNT v1 and v2: EXPORT and DUMP answer as in v3 (the same format;
//     showmount asks with v1), MNT with PROG_MISMATCH (its v1 reply differs,
//     and what follows it would be NFSv2); the void ones go to go-nfs;
//   - programs other than NFS and MOUNT (NFS_ACL, which the Linux client
//     probes at every mount; NLM): PROG_UNAVAIL, where go-nfs answers
//     PROC_UNAVAIL and logs a warning for each.
func versionless(c *rpcCall) procFunc {
	switch {
	case c.prog == progNFS && c.vers != 3:
		return progMismatch
	case c.prog == progMount && (c.vers == 1 || c.vers == 2):
		switch c.proc {
		case mountProcExport, mountProcDump:
			return procs[procKey{c.prog, c.proc}]
		case mountProcMnt:
			return progMismatch
		}
	case c.prog == progMount && c.vers != 3:
		return progMismatch
	case c.prog != progNFS && c.prog != progMount:
		return progUnavail
	}
	return nil
}

// RPC accept_stat values (RFC 5531) other than SUCCESS and GARBAGE_ARGS.
const (
	acceptProgUnavail  = 1
	acceptProgMismatch = 2
)

// progMismatch replaces a call's SUCCESS with PROG_MISMATCH: only version 3
// is served.
func progMismatch(h *handler, c *rpcCall, w *xdrWriter) error {
	h.log.Debug("nfs: program version not served", "prog", c.prog, "vers", c.vers, "proc", c.proc, "client", c.conn.RemoteAddr().String())
	binary.BigEndian.PutUint32(w.b[replyHdrLen-4:], acceptProgMismatch)
	w.u32(3) // lowest version served
	w.u32(3) // highest
	return nil
}

// progUnavail replaces a call's SUCCESS with PROG_UNAVAIL.
func progUnavail(h *handler, c *rpcCall, w *xdrWriter) error {
	h.log.Debug("nfs: program not served", "prog", c.prog, "vers", c.vers, "proc", c.proc, "client", c.conn.RemoteAddr().String())
	binary.BigEndian.PutUint32(w.b[replyHdrLen-4:], acceptProgUnavail)
	return nil
}

// replyHdrLen is the record mark and an accepted reply's header: xid,
// REPLY, MSG_ACCEPTED, an AUTH_NONE verifier, accept_stat.
const replyHdrLen = 4 + 24

// reply answers a decoded call with its whole reply record, record mark
// included.
func (h *handler) reply(c *rpcCall) []byte {
	k := procKey{c.prog, c.proc}
	c.pooled = getBuf(smallBuf)
	w := &xdrWriter{b: (*c.pooled)[:0]}
	w.u32(0) // the record mark, below
	w.u32(c.xid)
	w.u32(1) // REPLY
	w.u32(0) // MSG_ACCEPTED
	w.u32(0) // AUTH_NONE
	w.u32(0)
	w.u32(0) // SUCCESS
	err := h.call(c, w)
	if err == errWouldBlock {
		putBuf(c.pooled)
		c.pooled = nil
		return nil
	}
	switch {
	case errors.Is(err, errPanicked):
		w.b = w.b[:replyHdrLen]
		binary.BigEndian.PutUint32(w.b[replyHdrLen-4:], 5) // SYSTEM_ERR
		c.data.Release()
	case err != nil:
		// Arguments that do not decode: GARBAGE_ARGS.
		h.log.Debug("nfs: garbage arguments", "prog", c.prog, "proc", c.proc, "err", err)
		w.b = w.b[:replyHdrLen]
		binary.BigEndian.PutUint32(w.b[replyHdrLen-4:], 4)
		c.data.Release()
	}
	op := k.name()
	if c.vers != 3 {
		op = "other"
	}
	h.observer.Request("nfs", op, c.start, replyStatus(k, w.b[replyHdrLen-4:], err))
	n := len(w.b) - 4
	if c.data.N > 0 {
		n += c.data.N + len(padding(c.data.N))
	}
	binary.BigEndian.PutUint32(w.b, uint32(n)|1<<31)
	if &w.b[:1][0] != &(*c.pooled)[:1][0] {
		// The reply outgrew the pooled buffer.
		putBuf(c.pooled)
		c.pooled = nil
	} else {
		*c.pooled = w.b
	}
	return w.b
}

var errPanicked = errors.New("nfs: the procedure panicked")

// call runs a call's procedure. A panic in it is a bug, and the call's
// failure rather than the server's: it is logged with its stack and the
// call answered SYSTEM_ERR (the client sees an I/O error), where it would
// otherwise leave the connection's reader waiting for a reply that never
// comes, and the client hung.
func (h *handler) call(c *rpcCall, w *xdrWriter) (err error) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("nfs: a call failed on a bug in the server; answered SYSTEM_ERR",
				"prog", c.prog, "proc", c.proc, "panic", r, "stack", string(debug.Stack()))
			err = errPanicked
		}
	}()
	if hook := testHook.Load(); hook != nil {
		(*hook)(c)
	}
	return c.fn(h, c, w)
}

// replyStatus is a reply's outcome for the metrics, read from its
// accept_stat on (the interposer's replies and go-nfs's alike): NFS
// results, and MOUNT's MNT result, start with their status.
func replyStatus(k procKey, reply []byte, err error) error {
	switch {
	case err != nil:
		return err
	case binary.BigEndian.Uint32(reply) != 0:
		return errRPCFailed
	case len(reply) >= 8 && (k.prog == progNFS || k.prog == progMount && k.proc == mountProcMnt) &&
		binary.BigEndian.Uint32(reply[4:]) != 0:
		return errNFSStatus
	}
	return nil
}
