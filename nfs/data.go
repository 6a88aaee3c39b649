package nfs

import (
	"crypto/rand"
	"errors"
	"math"
	"sync"
	"syscall"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/nfs/sunrpc"
)

// READ, WRITE, COMMIT, FSINFO and PATHCONF.
//
// A READ's file data goes out from where it lies (the engine's page-cache
// mappings), after the reply's bytes: no copy into the reply. A WRITE
// honours the client's stability: UNSTABLE is applied to the engine (in
// memory and its intent log, committed to history at the flush interval)
// and answered at once, FILE_SYNC and DATA_SYNC are made durable first, and
// COMMIT makes everything durable. The write verifier is new in every
// server process, so a client resends its uncommitted writes after a
// restart, as RFC 1813 intends.
const (
	// maxIO is the largest READ and WRITE payload, and the preferred one:
	// a call record holds one WRITE of it (sunrpc.MaxRecord).
	maxIO = 1 << 20

	stableUnstable = 0
	stableDataSync = 1
	stableFileSync = 2

	// FSINFO properties.
	fsfLink        = 0x01
	fsfSymlink     = 0x02
	fsfHomogeneous = 0x08
	fsfCanSetTime  = 0x10
)

// writeVerf is the write verifier: the same for the life of this process,
// another after a restart.
var writeVerf = func() (v [8]byte) {
	rand.Read(v[:])
	return v
}()

// fileStatus is the status of a failed operation on a file whose
// attributes are now a (nil when they could not be read): a handle whose
// object does not exist is stale.
func (h *handler) fileStatus(err error, a *fs.Attr) uint32 {
	if a == nil && !errors.Is(err, errBadHandle) && fs.Errno(err) == syscall.ENOENT {
		return nfsErrStale
	}
	return h.status(err)
}

// offset is a client's offset as fs takes it: one past int64 is past the
// end of any file.
func offset(off uint64) int64 { return int64(min(off, math.MaxInt64)) }

func (h *handler) read(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	off := r.u64()
	count := r.u32()
	if r.err != nil {
		return r.err
	}
	n, _, err := h.decode(fh)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(nil)
		return nil
	}
	count = min(count, maxIO)
	// A count of 0 reads nothing but makes every check.
	v, attr, err := h.f.ReadView(cred, n, offset(off), int(count), c.NoWait)
	if errors.Is(err, fs.ErrWouldBlock) {
		return sunrpc.ErrWouldBlock
	}
	var a *fs.Attr
	if attr.Ino != 0 {
		a = &attr
	}
	if err != nil {
		w.u32(h.fileStatus(err, a))
		w.postOpAttr(a)
		return nil
	}
	k := v.N
	h.observer.Bytes("nfs", k, 0)
	eof := k < int(count)
	if a != nil {
		eof = off+uint64(k) >= a.Size
	}
	w.u32(nfsOK)
	w.postOpAttr(a)
	w.u32(uint32(k))
	w.bool(eof)
	w.u32(uint32(k))
	c.Tail = newViewTail(v)
	return nil
}

func (h *handler) write(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	off := r.u64()
	count := r.u32()
	how := r.u32()
	data := r.opaque(sunrpc.MaxRecord)
	if r.err != nil {
		return r.err
	}
	if int(count) < len(data) {
		data = data[:count]
	}
	n, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		w.wcc(nil, nil)
		return nil
	}
	pre := &a
	if how > stableFileSync {
		w.u32(nfsErrInval)
		w.wcc(pre, pre)
		return nil
	}
	_, err = h.f.Write(cred, n, data, offset(off), false)
	committed := uint32(stableUnstable)
	if err == nil && how != stableUnstable {
		// The reply promises the data is on stable storage: this fsync
		// is shared with every other one waiting (group commit).
		err = h.f.Sync()
		committed = stableFileSync
	}
	if err == nil {
		h.observer.Bytes("nfs", 0, len(data))
	}
	h.finishFile(w, n, pre, err, uint32(len(data)), committed)
	return nil
}

// commit makes every change so far durable, this file's among them: one
// fsync of the engine's intent log, shared with every caller waiting.
func (h *handler) commit(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	r.u64() // offset and count: everything is made durable
	r.u32()
	if r.err != nil {
		return r.err
	}
	n, a, err := h.targetAttr(fh)
	var pre *fs.Attr
	if err == nil {
		pre = &a
		err = h.f.Sync()
	}
	h.finishFile(w, n, pre, err)
	return nil
}

// finishFile ends the replies of WRITE and COMMIT alike: the status, the
// file's wcc data (pre, and its attributes now), and for a success the
// results (WRITE's count and stability; none for COMMIT) and the write
// verifier.
func (h *handler) finishFile(w *xdrWriter, n fs.Node, pre *fs.Attr, err error, results ...uint32) {
	var post *fs.Attr
	if pre != nil {
		post = h.attr(n)
	}
	if err != nil {
		w.u32(h.fileStatus(err, post))
		w.wcc(pre, post)
		return
	}
	w.u32(nfsOK)
	w.wcc(pre, post)
	for _, v := range results {
		w.u32(v)
	}
	w.b = append(w.b, writeVerf[:]...)
}

// fsinfo advertises 1 MiB transfers, the most a call record holds
// (sunrpc.MaxRecord) with room to spare.
func (h *handler) fsinfo(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	n, ok, err := h.handleInfo(c, w)
	if !ok {
		return err
	}
	w.u32(maxIO) // rtmax
	w.u32(maxIO) // rtpref
	w.u32(4096)  // rtmult
	w.u32(maxIO) // wtmax
	w.u32(maxIO) // wtpref
	w.u32(4096)  // wtmult
	w.u32(8192)  // dtpref
	w.u64(maxFileSize)
	w.u32(0) // time_delta: 1 ns
	w.u32(1)
	props := uint32(fsfLink | fsfSymlink | fsfHomogeneous)
	if n.Live() && !h.f.ReadOnly() {
		props |= fsfCanSetTime
	}
	w.u32(props)
	return nil
}

// pathconf answers PATHCONF with fs's limits: hard links work, and only
// root may give a file away (chown_restricted).
func (h *handler) pathconf(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	if _, ok, err := h.handleInfo(c, w); !ok {
		return err
	}
	w.u32(fs.LinkMax)
	w.u32(fs.NameMax)
	w.bool(true)  // no_trunc: a name too long is an error, not cut
	w.bool(true)  // chown_restricted
	w.bool(false) // case_insensitive
	w.bool(true)  // case_preserving
	return nil
}

// handleInfo begins the reply to a call whose arguments are one handle and
// whose reply opens with a status and the object's attributes (FSINFO,
// PATHCONF). It writes both and reports whether the rest should follow;
// err is for arguments that do not decode.
func (h *handler) handleInfo(c *sunrpc.Call, w *xdrWriter) (fs.Node, bool, error) {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	if r.err != nil {
		return fs.Node{}, false, r.err
	}
	n, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(nil)
		return fs.Node{}, false, nil
	}
	w.u32(nfsOK)
	w.postOpAttr(&a)
	return n, true, nil
}

// maxFileSize is the largest file fs allows.
const maxFileSize = 1 << 62

// viewTail sends a READ's data from the engine's memory (sunrpc.Tail).
// They are pooled: a READ costs no allocation for its data.
type viewTail struct{ v fs.View }

var viewTails = sync.Pool{New: func() any { return new(viewTail) }}

func newViewTail(v fs.View) *viewTail {
	t := viewTails.Get().(*viewTail)
	t.v = v
	return t
}

func (t *viewTail) Buffers() [][]byte { return t.v.Segs }
func (t *viewTail) Len() int          { return t.v.N }

func (t *viewTail) Release() {
	t.v.Release()
	viewTails.Put(t)
}
