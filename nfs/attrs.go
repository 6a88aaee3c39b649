package nfs

import (
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// GETATTR, SETATTR, LOOKUP and ACCESS, answered by the interposer: go-nfs
// reports every time as the modification time, echoes ACCESS requests
// without checking them, and maps most SETATTR errors to NOTSUPP or IO.
const (
	procGetattr = 1
	procSetattr = 2
	procLookup  = 3
	procAccess  = 4

	nfsErrNotSync = 10002
)

func (h *handler) getattr(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh := r.handle()
	if r.err != nil {
		return r.err
	}
	_, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(status(err))
		return nil
	}
	w.u32(nfsOK)
	w.fattr3(a)
	return nil
}

func (h *handler) setattr(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh := r.handle()
	attrs := r.sattr3()
	guard := r.bool()
	var ctime time.Time
	if guard {
		sec, nsec := r.u32(), r.u32()
		ctime = time.Unix(int64(sec), int64(nsec))
	}
	if r.err != nil {
		return r.err
	}
	n, a, err := h.targetAttr(fh)
	var pre *fs.Attr
	if err == nil {
		pre = &a
		if guard && !pre.Ctime.Equal(ctime) {
			// The client's view of the object is out of date.
			w.u32(nfsErrNotSync)
			w.wcc(pre, pre)
			return nil
		}
		if _, err = h.f.Setattr(h.cred, n, attrs.set); err == nil {
			err = h.f.Sync()
		}
	}
	w.u32(status(err))
	var post *fs.Attr
	if pre != nil {
		post = h.attr(n)
	}
	w.wcc(pre, post)
	return nil
}

// lookup reads three things: the directory's attributes (which also tell
// that its handle is not stale, and are its post-op attributes), the entry,
// and the attributes of what it names.
func (h *handler) lookup(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh, name := r.dirop()
	if r.err != nil {
		return r.err
	}
	dir, da, err := h.targetAttr(fh)
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(nil)
		return nil
	}
	n, err := h.f.LookupIn(h.cred, dir, da, name)
	var a fs.Attr
	if err == nil {
		a, err = h.f.Getattr(n)
	}
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(&da)
		return nil
	}
	w.u32(nfsOK)
	h.putHandle(w, n, a.Kind == history.KindDir)
	w.postOpAttr(&a)
	w.postOpAttr(&da)
	return nil
}

// NFS ACCESS bits.
const (
	accessRead    = 0x01
	accessLookup  = 0x02
	accessModify  = 0x04
	accessExtend  = 0x08
	accessDelete  = 0x10
	accessExecute = 0x20
)

// access answers which of the asked rights the export's identity has, by
// the rules fs applies: a client then fails early, as on a local disk.
func (h *handler) access(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh := r.handle()
	want := r.u32()
	if r.err != nil {
		return r.err
	}
	n, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(nil)
		return nil
	}
	ok, err := h.f.Access(h.cred, n, fs.AccessRead|fs.AccessWrite|fs.AccessExec)
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(&a)
		return nil
	}
	var got uint32
	dir := a.Kind == history.KindDir
	if ok&fs.AccessRead != 0 {
		got |= accessRead
	}
	if ok&fs.AccessWrite != 0 {
		got |= accessModify | accessExtend
		if dir {
			got |= accessDelete
		}
	}
	if ok&fs.AccessExec != 0 {
		if dir {
			got |= accessLookup
		} else {
			got |= accessExecute
		}
	}
	w.u32(nfsOK)
	w.postOpAttr(&a)
	w.u32(got & want)
	return nil
}
