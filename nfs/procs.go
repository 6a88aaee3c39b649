package nfs

import (
	"errors"
	"fmt"
	"syscall"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// NFS statuses (nfsstat3), go-nfs's numbers.
const (
	nfsOK          = uint32(gonfs.NFSStatusOk)
	nfsErrIO       = uint32(gonfs.NFSStatusIO)
	nfsErrInval    = uint32(gonfs.NFSStatusInval)
	nfsErrStale    = uint32(gonfs.NFSStatusStale)
	nfsErrBadHandl = uint32(gonfs.NFSStatusBadHandle)
	nfsErrNotSync  = uint32(gonfs.NFSStatusNotSync)
	nfsErrNotSupp  = uint32(gonfs.NFSStatusNotSupp)
	nfsErrBadType  = uint32(gonfs.NFSStatusBadType)
)

// status maps an error from fs to an NFS status. An I/O error (damage the
// engine found, a disk that failed) is logged here, once for the call:
// the client sees only EIO.
func (h *handler) status(err error) uint32 {
	if err == nil {
		return nfsOK
	}
	if errors.Is(err, errBadHandle) {
		return nfsErrBadHandl
	}
	switch e := fs.Errno(err); e {
	case syscall.EPERM, syscall.ENOENT, syscall.ENXIO, syscall.EACCES, syscall.EEXIST,
		syscall.EXDEV, syscall.ENODEV, syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL, syscall.EFBIG,
		syscall.ENOSPC, syscall.EROFS, syscall.EMLINK:
		// RFC 1813 took these from the old Unix errno values, which
		// Linux still has.
		return uint32(e)
	case syscall.ENAMETOOLONG:
		return uint32(gonfs.NFSStatusNameTooLong)
	case syscall.ENOTEMPTY:
		return uint32(gonfs.NFSStatusNotEmpty)
	case syscall.EDQUOT:
		return uint32(gonfs.NFSStatusDQuot)
	case syscall.ESTALE:
		return nfsErrStale
	case syscall.ENOTSUP:
		return nfsErrNotSupp
	}
	h.log.Error("nfs: I/O error", "err", err)
	return nfsErrIO
}

func (r *xdrReader) handle() []byte { return r.opaque(gonfs.FHSize) }

// dirop is diropargs3: a directory handle and a name.
func (r *xdrReader) dirop() ([]byte, string) {
	fh := r.handle()
	name := r.opaque(fs.PathMax)
	return fh, string(name)
}

// target resolves a handle to the node it names, which must exist.
func (h *handler) target(fh []byte) (fs.Node, error) {
	n, _, err := h.targetAttr(fh)
	return n, err
}

// targetAttr is target that also returns the attributes it read: most
// replies carry them. A handle not issued by this store is BADHANDLE; one
// whose object does not exist (removed, or a moment before it was made)
// is STALE; failing to read the object (damage) is the error itself, EIO.
func (h *handler) targetAttr(fh []byte) (fs.Node, fs.Attr, error) {
	n, _, err := h.decode(fh)
	if err != nil {
		return n, fs.Attr{}, err
	}
	a, err := h.f.Getattr(n)
	if fs.Errno(err) == syscall.ENOENT {
		return n, a, fmt.Errorf("nfs: stale handle: %w", syscall.ESTALE)
	}
	return n, a, err
}

// attr reads the attributes a reply carries after a change: optional in
// the reply, so a failure leaves them out.
func (h *handler) attr(n fs.Node) *fs.Attr {
	a, err := h.f.Getattr(n)
	if err != nil {
		return nil
	}
	return &a
}

// change runs a change to directory dir and writes the status and the
// directory's wcc data, then whatever more writes for a success.
func (h *handler) change(w *xdrWriter, fh []byte, do func(dir fs.Node) error, more func()) {
	dir, da, err := h.targetAttr(fh)
	var pre *fs.Attr
	if err == nil {
		pre = &da
		err = do(dir)
		if err == nil {
			// The reply promises the change is on stable storage.
			err = h.f.Sync()
		}
	}
	w.u32(h.status(err))
	if err == nil && more != nil {
		more()
	}
	var post *fs.Attr
	if pre != nil {
		post = h.attr(dir)
	}
	w.wcc(pre, post)
}

// made writes the result of CREATE, MKDIR, SYMLINK and MKNOD.
func (h *handler) made(cred fs.Cred, w *xdrWriter, fh []byte, do func(dir fs.Node) (fs.Node, error), attrs *sattr3) {
	var n fs.Node
	h.change(w, fh, func(dir fs.Node) error {
		var err error
		if n, err = do(dir); err != nil {
			return err
		}
		if !attrs.empty() {
			_, err = h.f.Setattr(cred, n, attrs.set)
		}
		return err
	}, func() {
		a := h.attr(n)
		w.bool(a != nil) // post_op_fh3
		if a != nil {
			h.putHandle(w, n, a.Kind == history.KindDir)
		}
		w.postOpAttr(a)
	})
}

func (h *handler) create(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh, name := r.dirop()
	how := r.u32()
	var attrs sattr3
	var verf []byte
	switch how {
	case 0, 1: // UNCHECKED, GUARDED
		attrs = r.sattr3()
	case 2: // EXCLUSIVE
		verf = r.fixed(8)
	}
	if r.err != nil {
		return r.err
	}
	if how > 2 {
		w.u32(uint32(syscall.EINVAL))
		w.wcc(nil, nil)
		return nil
	}
	mode := uint32(0o644)
	if attrs.set.Mode != nil {
		mode = *attrs.set.Mode
	}
	if how != 0 {
		// A size in attributes is only applied to an existing file under
		// UNCHECKED; a new file is empty.
		attrs.set.Size = nil
	}
	h.made(cred, w, fh, func(dir fs.Node) (fs.Node, error) {
		if how == 2 {
			return h.exclusiveCreate(cred, dir, name, verf)
		}
		n, created, err := h.f.Create(cred, dir, name, mode, how == 1)
		switch {
		case err != nil:
		case created:
			attrs.set.Mode = nil // given at creation
		default:
			// An existing file under UNCHECKED takes the size alone, as
			// with knfsd: creating never changes an existing file's mode,
			// owner or times (POSIX open with O_CREAT).
			attrs.set = fs.SetAttr{Size: attrs.set.Size}
		}
		return n, err
	}, &attrs)
	return nil
}

// exclusiveCreate keeps the client's verifier in the new file's mtime, as
// knfsd does, so a retransmitted EXCLUSIVE CREATE finds its own file and
// succeeds while a real clash fails with EXIST. The client sets the real
// attributes with a SETATTR right after.
func (h *handler) exclusiveCreate(cred fs.Cred, dir fs.Node, name string, verf []byte) (fs.Node, error) {
	stamp := int64(uint64(verf[0])<<24|uint64(verf[1])<<16|uint64(verf[2])<<8|uint64(verf[3]))*1e9 +
		int64(uint64(verf[4])<<24|uint64(verf[5])<<16|uint64(verf[6])<<8|uint64(verf[7]))%1e9
	n, created, err := h.f.Create(cred, dir, name, 0o600, false)
	if err != nil {
		return n, err
	}
	if !created {
		a, err := h.f.Getattr(n)
		if err != nil {
			return n, err
		}
		if a.Mtime.UnixNano() != stamp || a.Kind != history.KindFile {
			return n, syscall.EEXIST
		}
		return n, nil
	}
	t := timeFromNanos(stamp)
	_, err = h.f.Setattr(cred, n, fs.SetAttr{Mtime: &t})
	return n, err
}

func (h *handler) mkdir(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh, name := r.dirop()
	attrs := r.sattr3()
	if r.err != nil {
		return r.err
	}
	mode := uint32(0o755)
	if attrs.set.Mode != nil {
		mode, attrs.set.Mode = *attrs.set.Mode, nil
	}
	h.made(cred, w, fh, func(dir fs.Node) (fs.Node, error) {
		return h.f.Mkdir(cred, dir, name, mode)
	}, &attrs)
	return nil
}

func (h *handler) symlink(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh, name := r.dirop()
	attrs := r.sattr3()
	target := string(r.opaque(fs.PathMax))
	if r.err != nil {
		return r.err
	}
	attrs.set.Mode = nil // a symlink's mode is always 0777: fs ignores one, and no Setattr is needed for it
	h.made(cred, w, fh, func(dir fs.Node) (fs.Node, error) {
		return h.f.Symlink(cred, dir, name, target)
	}, &attrs)
	return nil
}

// mknod makes a device, socket or fifo: mknod3's union carries the
// attributes (and a device's numbers) only for those types, and the rest
// are BADTYPE (directories, symlinks and files have procedures of their
// own). The kind is fs's reading of the type's st_mode bits.
func (h *handler) mknod(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh, name := r.dirop()
	t := gonfs.FileType(r.u32())
	var a fs.NewAttr
	var attrs sattr3
	special := true
	switch t {
	case gonfs.FileTypeBlock, gonfs.FileTypeCharacter:
		attrs = r.sattr3()
		major, minor := r.u32(), r.u32()
		a.Rdev = fs.Rdev(major, minor)
	case gonfs.FileTypeSocket, gonfs.FileTypeFIFO:
		attrs = r.sattr3()
	default:
		special = false
	}
	if r.err != nil {
		return r.err
	}
	kind, err := fs.KindOfMode(modeOfFtype(t))
	if !special || err != nil {
		w.u32(nfsErrBadType)
		w.wcc(nil, nil)
		return nil
	}
	a.Kind = kind
	a.Mode = 0o644
	if attrs.set.Mode != nil {
		a.Mode, attrs.set.Mode = *attrs.set.Mode, nil
	}
	h.made(cred, w, fh, func(dir fs.Node) (fs.Node, error) {
		return h.f.Mknod(cred, dir, name, a)
	}, &attrs)
	return nil
}

// remove answers REMOVE and RMDIR with fs's statuses (NOTEMPTY, ISDIR,
// NOTDIR).
func (h *handler) remove(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	fh, name := r.dirop()
	if r.err != nil {
		return r.err
	}
	h.change(w, fh, func(dir fs.Node) error {
		return h.f.Remove(cred, dir, name, c.Proc == procRmdir)
	}, nil)
	return nil
}

func (h *handler) rename(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	sfh, sname := r.dirop()
	dfh, dname := r.dirop()
	if r.err != nil {
		return r.err
	}
	sdir, sa, err := h.targetAttr(sfh)
	var ddir fs.Node
	var da fs.Attr
	if err == nil {
		ddir, da, err = h.targetAttr(dfh)
	}
	var spre, dpre *fs.Attr
	if err == nil {
		spre, dpre = &sa, &da
		err = h.f.Rename(cred, sdir, sname, ddir, dname)
		if err == nil {
			err = h.f.Sync()
		}
	}
	w.u32(h.status(err))
	var spost, dpost *fs.Attr
	if spre != nil {
		spost, dpost = h.attr(sdir), h.attr(ddir)
	}
	w.wcc(spre, spost)
	w.wcc(dpre, dpost)
	return nil
}

func (h *handler) link(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	ffh := r.handle()
	dfh, name := r.dirop()
	if r.err != nil {
		return r.err
	}
	file, err := h.target(ffh)
	var dir fs.Node
	var da fs.Attr
	if err == nil {
		dir, da, err = h.targetAttr(dfh)
	}
	var pre *fs.Attr
	if err == nil {
		pre = &da
		err = h.f.Link(cred, file, dir, name)
		if err == nil {
			err = h.f.Sync()
		}
	}
	w.u32(h.status(err))
	if err == nil || pre != nil {
		w.postOpAttr(h.attr(file))
	} else {
		w.postOpAttr(nil)
	}
	var post *fs.Attr
	if pre != nil {
		post = h.attr(dir)
	}
	w.wcc(pre, post)
	return nil
}
