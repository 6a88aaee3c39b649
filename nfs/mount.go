package nfs

import (
	"strings"
	"syscall"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// The MOUNT program (RFC 1813 appendix I). Mounts are not tracked: a
// handle works without one.

// mnt answers MNT: the export path names a live or historical directory,
// resolved as the caller. A refusal is logged once, at Info, with the path
// and why: the client shows only a status (libnfs: "mount_cb: ...
// MNT3ERR_NOTDIR").
func (h *handler) mnt(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	path := string(r.opaque(gonfs.MntPathLen))
	if r.err != nil {
		return r.err
	}
	if path == "" {
		// libnfs asks for it with a file URL at the root (nfs://host/a.txt):
		// the directory part of "/a.txt".
		path = "/"
	}
	n, err := h.f.Resolve(cred, path)
	var a fs.Attr
	if err == nil {
		a, err = h.f.Getattr(n)
	}
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case a.Kind != history.KindDir:
		err, why = syscall.ENOTDIR, "names a "+a.Kind.String()+", not a directory"
	}
	if err != nil {
		st, name := mountStatus(err)
		h.refused(c, path, st, name, why)
		w.u32(uint32(st))
		return nil
	}
	h.log.Debug("nfs: mounted", "client", c.Remote.String(), "path", path)
	w.u32(uint32(gonfs.MountStatusOk))
	h.putHandle(w, n, true)
	// AUTH_SYS first: a client that was given no sec= takes the first it
	// supports, and AUTH_SYS is what carries who the caller is.
	w.u32(2)
	w.u32(uint32(gonfs.AuthFlavorUnix))
	w.u32(uint32(gonfs.AuthFlavorNull))
	return nil
}

// refused logs why a MOUNT was refused, with a hint where the client may
// have meant a file.
func (h *handler) refused(c *sunrpc.Call, path string, st gonfs.MountStatus, name, why string) {
	args := []any{"client", c.Remote.String(), "path", path, "status", name, "why", why}
	// A missing or malformed moment (/@@2001-01-01 before the store
	// began) is the why, not a file named in a URL.
	moment := fs.Reserved(path[strings.LastIndex(path, "/")+1:]) && st != gonfs.MountStatusErrNotDir
	switch st {
	case gonfs.MountStatusErrNoEnt, gonfs.MountStatusErrNotDir, gonfs.MountStatusErrInval:
		if moment {
			break
		}
		// libnfs MOUNTs the part of a file URL's path before its last slash:
		// nfs://host/docs/a.txt asks for /docs.
		args = append(args, "hint", "MOUNT takes a directory; for a file, a libnfs URL puts it after a double slash: nfs://host//path/to/file")
	}
	h.log.Info("nfs: mount refused", args...)
}

// mountStatus is the mountstat3 for an error, with its name (RFC 1813).
func mountStatus(err error) (gonfs.MountStatus, string) {
	switch fs.Errno(err) {
	case syscall.ENOENT:
		return gonfs.MountStatusErrNoEnt, "MNT3ERR_NOENT"
	case syscall.EACCES, syscall.EPERM:
		return gonfs.MountStatusErrAcces, "MNT3ERR_ACCES"
	case syscall.ENOTDIR:
		return gonfs.MountStatusErrNotDir, "MNT3ERR_NOTDIR"
	case syscall.EINVAL:
		return gonfs.MountStatusErrInval, "MNT3ERR_INVAL"
	case syscall.ENAMETOOLONG:
		return gonfs.MountStatusErrNameTooLong, "MNT3ERR_NAMETOOLONG"
	}
	return gonfs.MountStatusErrIO, "MNT3ERR_IO"
}

// umnt answers UMNT: nothing to forget, but the path must decode.
func (h *handler) umnt(c *sunrpc.Call, _ fs.Cred, _ *xdrWriter) error {
	r := &xdrReader{b: c.Args}
	r.opaque(gonfs.MntPathLen)
	return r.err
}

// exports answers EXPORT (showmount -e; libnfs asks it first): one
// export, the whole tree, open to every host exports.allow admits. Any
// path below it, @@ forms included, can be mounted.
func (h *handler) exports(_ *sunrpc.Call, _ fs.Cred, w *xdrWriter) error {
	w.bool(true)
	w.opaque([]byte("/"))
	w.bool(false) // no groups: allowed by address
	w.bool(false)
	return nil
}

// dump answers DUMP with an empty list: mounts are not tracked.
func (h *handler) dump(_ *sunrpc.Call, _ fs.Cred, w *xdrWriter) error {
	w.bool(false)
	return nil
}
