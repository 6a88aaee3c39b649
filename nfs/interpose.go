package nfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// go-nfs lacks some procedures (MOUNTPROC3_EXPORT), decodes LINK wrongly,
// and flattens most errors of the changing procedures into ACCESS or IO. The
// interposer sits at the RPC record layer between each client connection
// and go-nfs: it reads every call record, answers the procedures listed in
// procs itself, and passes the rest through to go-nfs unchanged. Its
// replies and go-nfs's are whole records, never interleaved.
const (
	progNFS   = 100003
	progMount = 100005
)

type procKey struct{ prog, proc uint32 }

// rpcCall is one decoded call.
type rpcCall struct {
	xid     uint32
	prog    uint32
	vers    uint32
	proc    uint32
	args    []byte
	conn    net.Conn
	handled bool
}

type procFunc func(h *handler, c *rpcCall) ([]byte, error)

// interposed wraps one client connection. go-nfs reads the calls it
// should answer through Read and writes its replies through Write.
type interposed struct {
	net.Conn
	h *handler

	pr *io.PipeReader // what go-nfs reads
	pw *io.PipeWriter

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
	ic := &interposed{Conn: c, h: h, pr: pr, pw: pw, pending: map[uint32]pendingCall{}}
	go ic.readCalls()
	return ic
}

func (ic *interposed) Read(p []byte) (int, error) { return ic.pr.Read(p) }

func (ic *interposed) Close() error {
	ic.pr.Close()
	return ic.Conn.Close()
}

// readCalls reads call records from the client, answering or forwarding
// each.
func (ic *interposed) readCalls() {
	defer ic.pw.Close()
	for {
		rec, err := readRecord(ic.Conn)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				ic.h.log.Debug("nfs: connection ended", "client", ic.RemoteAddr().String(), "err", err)
			}
			return
		}
		start := time.Now()
		if reply, ok := ic.h.answer(rec, ic.Conn); ok {
			if reply == nil {
				continue // a call so malformed that no reply is owed
			}
			if err := ic.writeRecord(reply); err != nil {
				return
			}
			continue
		}
		if xid, key, ok := callOf(rec); ok {
			ic.pmu.Lock()
			ic.pending[xid] = pendingCall{proc: key, start: start}
			ic.pmu.Unlock()
		}
		// go-nfs reassembles no fragments: hand it each record whole.
		hdr := binary.BigEndian.AppendUint32(nil, uint32(len(rec))|1<<31)
		if _, err := ic.pw.Write(append(hdr, rec...)); err != nil {
			return
		}
	}
}

// maxRecord bounds a call record: a WRITE of 1 MiB and its header.
const maxRecord = 4 << 20

func readRecord(r io.Reader) ([]byte, error) {
	var rec []byte
	for {
		var h [4]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return nil, err
		}
		v := binary.BigEndian.Uint32(h[:])
		n := int(v &^ (1 << 31))
		if len(rec)+n > maxRecord {
			return nil, fmt.Errorf("nfs: a call record of more than %d bytes", maxRecord)
		}
		start := len(rec)
		rec = append(rec, make([]byte, n)...)
		if _, err := io.ReadFull(r, rec[start:]); err != nil {
			return nil, err
		}
		if v&(1<<31) != 0 {
			return rec, nil
		}
	}
}

// writeRecord sends one of the interposer's replies between go-nfs's.
func (ic *interposed) writeRecord(body []byte) error {
	ic.wmu.Lock()
	defer ic.wmu.Unlock()
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body))|1<<31)
	_, err := ic.Conn.Write(append(b, body...))
	return err
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
	var err error
	if binary.BigEndian.Uint32(head[20:]) != 0 {
		err = errRPCFailed
	} else if pc.proc.prog == progNFS && len(head) >= 28 && binary.BigEndian.Uint32(head[24:]) != 0 {
		err = errNFSStatus
	}
	ic.h.observer.Request("nfs", pc.proc.name(), pc.start, err)
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
	return fmt.Sprintf("prog%d_proc%d", k.prog, k.proc)
}

// answer decodes a call and, when the interposer handles its procedure,
// returns the reply record.
func (h *handler) answer(rec []byte, conn net.Conn) ([]byte, bool) {
	r := &xdrReader{b: rec}
	c := &rpcCall{conn: conn}
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
	fn := procs[procKey{c.prog, c.proc}]
	if fn == nil || (c.prog == progNFS && c.vers != 3) || (c.prog == progMount && c.vers != 3) {
		return nil, false
	}
	c.args = r.b
	start := time.Now()
	body, err := fn(h, c)
	h.observer.Request("nfs", procKey{c.prog, c.proc}.name(), start, replyStatus(body, err))
	if err != nil {
		// Arguments that do not decode: GARBAGE_ARGS.
		h.log.Debug("nfs: garbage arguments", "prog", c.prog, "proc", c.proc, "err", err)
		return acceptedReply(c.xid, 4, nil), true
	}
	return acceptedReply(c.xid, 0, body), true
}

// replyStatus is a reply's outcome for the metrics: NFS results start with
// their status.
func replyStatus(body []byte, err error) error {
	if err != nil {
		return err
	}
	if len(body) >= 4 && binary.BigEndian.Uint32(body) != 0 {
		return errNFSStatus
	}
	return nil
}

// acceptedReply frames a reply: MSG_ACCEPTED with AUTH_NONE verifier.
func acceptedReply(xid, acceptStat uint32, body []byte) []byte {
	w := &xdrWriter{b: make([]byte, 0, 24+len(body))}
	w.u32(xid)
	w.u32(1) // REPLY
	w.u32(0) // MSG_ACCEPTED
	w.u32(0) // AUTH_NONE
	w.u32(0)
	w.u32(acceptStat)
	w.b = append(w.b, body...)
	return w.b
}
