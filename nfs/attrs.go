package nfs

import (
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// The procedures of attributes: GETATTR, SETATTR, LOOKUP, ACCESS,
// READLINK and FSSTAT. Each carries the object's own atime, mtime and
// ctime, read once per call where the reply needs them more than once.

func (h *handler) getattr(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	if r.err != nil {
		return r.err
	}
	_, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		return nil
	}
	w.u32(nfsOK)
	w.fattr3(a)
	return nil
}

func (h *handler) setattr(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
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
		if _, err = h.f.Setattr(cred, n, attrs.set); err == nil {
			err = h.f.Sync()
		}
	}
	w.u32(h.status(err))
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
func (h *handler) lookup(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh, name := r.dirop()
	if r.err != nil {
		return r.err
	}
	dir, da, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(nil)
		return nil
	}
	n, err := h.f.LookupIn(cred, dir, da, name)
	var a fs.Attr
	if err == nil {
		a, err = h.f.Getattr(n)
	}
	if err != nil {
		w.u32(h.status(err))
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

// access answers which of the asked rights the caller has, by
// the rules fs applies: a client then fails early, as on a local disk.
func (h *handler) access(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	want := r.u32()
	if r.err != nil {
		return r.err
	}
	n, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(nil)
		return nil
	}
	ok, err := h.f.Access(cred, n, fs.AccessRead|fs.AccessWrite|fs.AccessExec)
	if err != nil {
		w.u32(h.status(err))
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

// readlink answers READLINK with the target and the link's attributes; a
// handle of anything but a symlink is INVAL.
func (h *handler) readlink(c *sunrpc.Call, _ fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	if r.err != nil {
		return r.err
	}
	n, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(nil)
		return nil
	}
	target, err := h.f.Readlink(n)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(&a)
		return nil
	}
	w.u32(nfsOK)
	w.postOpAttr(&a)
	w.opaque([]byte(target))
	return nil
}

// fsstat answers FSSTAT with fs's figures (the disk under the store, its
// objects) and the object's own attributes.
func (h *handler) fsstat(c *sunrpc.Call, _ fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	if r.err != nil {
		return r.err
	}
	_, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(nil)
		return nil
	}
	st, err := h.f.Statfs()
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(&a)
		return nil
	}
	w.u32(nfsOK)
	w.postOpAttr(&a)
	w.u64(st.Bytes)
	w.u64(st.Free)
	w.u64(st.Avail)
	w.u64(st.Files)
	w.u64(st.FreeFiles)
	w.u64(st.FreeFiles) // afiles: no quota sets one caller apart
	w.u32(0)            // invarsec: the figures change any time
	return nil
}
