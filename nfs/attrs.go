package nfs

import (
	"syscall"
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

// targetAttr resolves a handle and reads the attributes of what it names.
func (h *handler) targetAttr(fh []byte) (fs.Node, fs.Attr, error) {
	n, err := h.target(fh)
	if err != nil {
		return n, fs.Attr{}, err
	}
	a, err := h.f.Getattr(n)
	return n, a, err
}

func (h *handler) getattr(c *rpcCall) ([]byte, error) {
	r := &xdrReader{b: c.args}
	fh := r.handle()
	if r.err != nil {
		return nil, r.err
	}
	w := &xdrWriter{}
	_, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(status(err))
		return w.b, nil
	}
	w.u32(nfsOK)
	w.fattr3(a)
	return w.b, nil
}

func (h *handler) setattr(c *rpcCall) ([]byte, error) {
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
		return nil, r.err
	}
	w := &xdrWriter{}
	n, err := h.target(fh)
	var pre *fs.Attr
	if err == nil {
		pre = h.attr(n)
		switch {
		case pre == nil:
			err = syscall.ESTALE
		case guard && !pre.Ctime.Equal(ctime):
			// The client's view of the object is out of date.
			w.u32(nfsErrNotSync)
			w.wcc(pre, pre)
			return w.b, nil
		default:
			if _, err = h.f.Setattr(h.cred, n, attrs.set); err == nil {
				err = h.f.Sync()
			}
		}
	}
	w.u32(status(err))
	var post *fs.Attr
	if pre != nil {
		post = h.attr(n)
	}
	w.wcc(pre, post)
	return w.b, nil
}

func (h *handler) lookup(c *rpcCall) ([]byte, error) {
	r := &xdrReader{b: c.args}
	fh, name := r.dirop()
	if r.err != nil {
		return nil, r.err
	}
	w := &xdrWriter{}
	dir, err := h.target(fh)
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(nil)
		return w.b, nil
	}
	n, err := h.f.Lookup(h.cred, dir, name)
	var a fs.Attr
	if err == nil {
		a, err = h.f.Getattr(n)
	}
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(h.attr(dir))
		return w.b, nil
	}
	w.u32(nfsOK)
	w.opaque(h.encode(n, a.Kind == history.KindDir))
	w.postOpAttr(&a)
	w.postOpAttr(h.attr(dir))
	return w.b, nil
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
func (h *handler) access(c *rpcCall) ([]byte, error) {
	r := &xdrReader{b: c.args}
	fh := r.handle()
	want := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	w := &xdrWriter{}
	n, a, err := h.targetAttr(fh)
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(nil)
		return w.b, nil
	}
	ok, err := h.f.Access(h.cred, n, fs.AccessRead|fs.AccessWrite|fs.AccessExec)
	if err != nil {
		w.u32(status(err))
		w.postOpAttr(&a)
		return w.b, nil
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
	return w.b, nil
}
