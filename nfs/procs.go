package nfs

import (
	"context"
	"errors"
	"syscall"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// NFSv3 procedures (RFC 1813) the interposer answers itself.
const (
	procCreate  = 8
	procMkdir   = 9
	procSymlink = 10
	procMknod   = 11
	procRemove  = 12
	procRmdir   = 13
	procRename  = 14
	procLink    = 15

	mountProcMnt    = 1
	mountProcDump   = 2
	mountProcExport = 5
)

var procs = map[procKey]procFunc{
	{progNFS, procGetattr}:       (*handler).getattr,
	{progNFS, procSetattr}:       (*handler).setattr,
	{progNFS, procLookup}:        (*handler).lookup,
	{progNFS, procAccess}:        (*handler).access,
	{progNFS, procRead}:          (*handler).read,
	{progNFS, procWrite}:         (*handler).write,
	{progNFS, procCreate}:        (*handler).create,
	{progNFS, procMkdir}:         (*handler).mkdir,
	{progNFS, procSymlink}:       (*handler).symlink,
	{progNFS, procMknod}:         (*handler).mknod,
	{progNFS, procRemove}:        (*handler).remove,
	{progNFS, procRmdir}:         (*handler).remove,
	{progNFS, procRename}:        (*handler).rename,
	{progNFS, procLink}:          (*handler).link,
	{progNFS, procReaddir}:       (*handler).readdir,
	{progNFS, procReaddirPlus}:   (*handler).readdir,
	{progNFS, procFsinfo}:        (*handler).fsinfo,
	{progNFS, procPathconf}:      (*handler).pathconf,
	{progNFS, procCommit}:        (*handler).commit,
	{progMount, mountProcMnt}:    (*handler).mnt,
	{progMount, mountProcExport}: (*handler).exports,
	{progMount, mountProcDump}:   (*handler).dump,
}

// NFS status codes.
const (
	nfsOK          = 0
	nfsErrStale    = 70
	nfsErrBadHandl = 10001
	nfsErrNotSupp  = 10004
	nfsErrIO       = 5
)

// status maps an error from fs to an NFS status.
func status(err error) uint32 {
	if err == nil {
		return nfsOK
	}
	if errors.Is(err, errBadHandle) {
		return nfsErrBadHandl
	}
	switch e := fs.Errno(err); e {
	case syscall.EPERM, syscall.ENOENT, syscall.EIO, syscall.ENXIO, syscall.EACCES, syscall.EEXIST,
		syscall.EXDEV, syscall.ENODEV, syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL, syscall.EFBIG,
		syscall.ENOSPC, syscall.EROFS, syscall.EMLINK:
		// RFC 1813 took these from the old Unix errno values, which
		// Linux still has.
		return uint32(e)
	case syscall.ENAMETOOLONG:
		return 63
	case syscall.ENOTEMPTY:
		return 66
	case syscall.EDQUOT:
		return 69
	case syscall.ESTALE:
		return nfsErrStale
	case syscall.ENOTSUP:
		return nfsErrNotSupp
	}
	return nfsErrIO
}

func (r *xdrReader) handle() []byte { return r.opaque(64) }

// dirop is diropargs3: a directory handle and a name.
func (r *xdrReader) dirop() ([]byte, string) {
	fh := r.handle()
	name := r.opaque(fs.PathMax)
	return fh, string(name)
}

// target resolves a handle to the node it names, which must exist: a bad
// handle is BADHANDLE, one whose object is gone STALE.
func (h *handler) target(fh []byte) (fs.Node, error) {
	n, _, err := h.targetAttr(fh)
	return n, err
}

// targetAttr is target that also returns the attributes it read: most
// replies carry them.
func (h *handler) targetAttr(fh []byte) (fs.Node, fs.Attr, error) {
	n, _, err := h.decode(fh)
	if err != nil {
		return n, fs.Attr{}, err
	}
	a, err := h.f.Getattr(n)
	if err != nil {
		return n, a, syscall.ESTALE
	}
	return n, a, nil
}

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
	w.u32(status(err))
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
func (h *handler) made(w *xdrWriter, fh []byte, do func(dir fs.Node) (fs.Node, error), attrs *sattr3) {
	var n fs.Node
	h.change(w, fh, func(dir fs.Node) error {
		var err error
		if n, err = do(dir); err != nil {
			return err
		}
		if !attrs.empty() {
			_, err = h.f.Setattr(h.cred, n, attrs.set)
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

func (h *handler) create(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
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
	h.made(w, fh, func(dir fs.Node) (fs.Node, error) {
		if how == 2 {
			return h.exclusiveCreate(dir, name, verf)
		}
		n, created, err := h.f.Create(h.cred, dir, name, mode, how == 1)
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
func (h *handler) exclusiveCreate(dir fs.Node, name string, verf []byte) (fs.Node, error) {
	stamp := int64(uint64(verf[0])<<24|uint64(verf[1])<<16|uint64(verf[2])<<8|uint64(verf[3]))*1e9 +
		int64(uint64(verf[4])<<24|uint64(verf[5])<<16|uint64(verf[6])<<8|uint64(verf[7]))%1e9
	n, created, err := h.f.Create(h.cred, dir, name, 0o600, false)
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
	_, err = h.f.Setattr(h.cred, n, fs.SetAttr{Mtime: &t})
	return n, err
}

func (h *handler) mkdir(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh, name := r.dirop()
	attrs := r.sattr3()
	if r.err != nil {
		return r.err
	}
	mode := uint32(0o755)
	if attrs.set.Mode != nil {
		mode, attrs.set.Mode = *attrs.set.Mode, nil
	}
	h.made(w, fh, func(dir fs.Node) (fs.Node, error) {
		return h.f.Mkdir(h.cred, dir, name, mode)
	}, &attrs)
	return nil
}

func (h *handler) symlink(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh, name := r.dirop()
	attrs := r.sattr3()
	target := string(r.opaque(fs.PathMax))
	if r.err != nil {
		return r.err
	}
	attrs.set.Mode = nil // a symlink's mode is always 0777: fs ignores one, and no Setattr is needed for it
	h.made(w, fh, func(dir fs.Node) (fs.Node, error) {
		return h.f.Symlink(h.cred, dir, name, target)
	}, &attrs)
	return nil
}

func (h *handler) mknod(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh, name := r.dirop()
	t := r.u32()
	var a fs.NewAttr
	var attrs sattr3
	switch t {
	case 3, 4: // BLK, CHR
		attrs = r.sattr3()
		major, minor := r.u32(), r.u32()
		a.Rdev = uint64(major)<<32 | uint64(minor)
		a.Kind = history.KindBlock
		if t == 4 {
			a.Kind = history.KindChar
		}
	case 6, 7: // SOCK, FIFO
		attrs = r.sattr3()
		a.Kind = history.KindSocket
		if t == 7 {
			a.Kind = history.KindFifo
		}
	}
	if r.err != nil {
		return r.err
	}
	if a.Kind == 0 {
		w.u32(10007) // NFS3ERR_BADTYPE
		w.wcc(nil, nil)
		return nil
	}
	a.Mode = 0o644
	if attrs.set.Mode != nil {
		a.Mode, attrs.set.Mode = *attrs.set.Mode, nil
	}
	h.made(w, fh, func(dir fs.Node) (fs.Node, error) {
		return h.f.Mknod(h.cred, dir, name, a)
	}, &attrs)
	return nil
}

// remove answers REMOVE and RMDIR with their real statuses (NOTEMPTY,
// ISDIR, NOTDIR), which go-nfs turns into IO.
func (h *handler) remove(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	fh, name := r.dirop()
	if r.err != nil {
		return r.err
	}
	h.change(w, fh, func(dir fs.Node) error {
		return h.f.Remove(h.cred, dir, name, c.proc == procRmdir)
	}, nil)
	return nil
}

func (h *handler) rename(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
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
		err = h.f.Rename(h.cred, sdir, sname, ddir, dname)
		if err == nil {
			err = h.f.Sync()
		}
	}
	w.u32(status(err))
	var spost, dpost *fs.Attr
	if spre != nil {
		spost, dpost = h.attr(sdir), h.attr(ddir)
	}
	w.wcc(spre, spost)
	w.wcc(dpre, dpost)
	return nil
}

// link answers LINK, which go-nfs decodes as if it were SYMLINK.
func (h *handler) link(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
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
		err = h.f.Link(h.cred, file, dir, name)
		if err == nil {
			err = h.f.Sync()
		}
	}
	w.u32(status(err))
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

// exports answers MOUNTPROC3_EXPORT (showmount -e; libnfs asks it first):
// one export, the whole tree, open to every host exports.allow admits.
// Any path below it, @@ forms included, can be mounted.
func (h *handler) exports(c *rpcCall, w *xdrWriter) error {
	w.bool(true)
	w.opaque([]byte("/"))
	w.bool(false) // no groups: allowed by address
	w.bool(false)
	return nil
}

// mnt answers MOUNTPROC3_MNT through Mount. go-nfs cannot read an empty
// path (it takes the empty opaque for the end of its input and answers
// GARBAGE_ARGS, which libnfs shows as a bare "mount_cb: (null)"), and
// libnfs asks for one for every file URL at the root, nfs://host/a.txt
// (then refuses it itself unless auto-traverse-mounts=0).
func (h *handler) mnt(c *rpcCall, w *xdrWriter) error {
	r := &xdrReader{b: c.args}
	path := r.opaque(mountPathMax)
	if r.err != nil {
		return r.err
	}
	st, b, flavors := h.Mount(context.Background(), c.conn, gonfs.MountRequest{Dirpath: path})
	w.u32(uint32(st))
	if st == gonfs.MountStatusOk {
		w.opaque(h.ToHandle(b, nil))
		w.u32(uint32(len(flavors)))
		for _, f := range flavors {
			w.u32(uint32(f))
		}
	}
	return nil
}

// mountPathMax is MNTPATHLEN (RFC 1813).
const mountPathMax = 1024

// dump answers MOUNTPROC3_DUMP with an empty list: mounts are not tracked.
func (h *handler) dump(c *rpcCall, w *xdrWriter) error {
	w.bool(false)
	return nil
}
