// Package nfs serves the file system over NFSv3 with willscott/go-nfs. It
// translates: handles to nodes, go-nfs's paths to fs calls, errnos to NFS
// statuses. Every rule lives in package fs.
package nfs

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	billy "github.com/go-git/go-billy/v5"
	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// Handles are built from the object id and the moment, never from a path,
// so they survive renames of the object and of every parent, and server
// restarts; a MAC with the store's secret refuses forged or foreign ones.
//
//	version 1 | flags (1 versions listing, 2 directory) | 0 0 | obj u64 | at u64 | mac [12]
//
// 32 bytes: XDR pads opaque data to 4 bytes, and go-nfs's decoder of some
// calls (ACCESS) does not skip the padding, so a handle must need none.
const (
	handleVersion = 1
	handleLen     = 4 + 8 + 8 + 12
	macLen        = 12
	flagVersions  = 1
	flagDir       = 2
)

var errBadHandle = errors.New("nfs: handle not issued by this store")

// handler is go-nfs's Handler.
type handler struct {
	f        *fs.FS
	cred     fs.Cred
	key      []byte
	log      *slog.Logger
	live     *billyFS // the one live filesystem value
	past     *billyFS // the one read-only value for the past
	observer fs.Observer
	cookies  cookieCache

	// verified remembers handles whose MAC was checked (a SHA-256 HMAC,
	// a good part of the cost of a small READ); nverified counts them.
	verified  sync.Map // [handleLen]byte -> struct{}
	nverified atomic.Int64

	macs sync.Pool // keyed HMAC states (hash.Hash) for appendMAC
}

// verifiedMax bounds the handles remembered as genuine: beyond it the
// memory starts again.
const verifiedMax = 1 << 14

// LoadKey reads the store's handle secret, creating it on first start.
func LoadKey(dataDir string) ([]byte, error) {
	p := filepath.Join(dataDir, "nfs-handle.key")
	if b, err := os.ReadFile(p); err == nil && len(b) == 32 {
		return b, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, key, 0o600); err != nil {
		return nil, fmt.Errorf("nfs: handle key: %w", err)
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		return nil, fmt.Errorf("nfs: handle key: %w", err)
	}
	return key, nil
}

// appendMAC appends the MAC of b to dst. The keyed HMAC states are kept
// for reuse: setting one up again costs more than the MAC itself.
func (h *handler) appendMAC(dst, b []byte) []byte {
	m, _ := h.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, h.key)
	} else {
		m.Reset()
	}
	m.Write(b)
	var sum [sha256.Size]byte
	dst = append(dst, m.Sum(sum[:0])[:macLen]...)
	h.macs.Put(m)
	return dst
}

// appendHandle appends the handle of n to dst.
func (h *handler) appendHandle(dst []byte, n fs.Node, dir bool) []byte {
	var flags byte
	if n.Versions {
		flags |= flagVersions
	}
	if dir {
		flags |= flagDir
	}
	at := len(dst)
	dst = append(dst, handleVersion, flags, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, uint64(n.Obj))
	dst = binary.BigEndian.AppendUint64(dst, uint64(n.At))
	return h.appendMAC(dst, dst[at:])
}

func (h *handler) encode(n fs.Node, dir bool) []byte {
	return h.appendHandle(make([]byte, 0, handleLen), n, dir)
}

// putHandle writes the handle of n as an nfs_fh3 (a handle needs no XDR
// padding).
func (h *handler) putHandle(w *xdrWriter, n fs.Node, dir bool) {
	w.u32(handleLen)
	w.b = h.appendHandle(w.b, n, dir)
}

func (h *handler) decode(fh []byte) (fs.Node, bool, error) {
	if len(fh) != handleLen || fh[0] != handleVersion || !h.genuine(fh) {
		return fs.Node{}, false, errBadHandle
	}
	n := fs.Node{
		Obj:      history.ObjID(binary.BigEndian.Uint64(fh[4:])),
		At:       history.TID(binary.BigEndian.Uint64(fh[12:])),
		Versions: fh[1]&flagVersions != 0,
	}
	return n, fh[1]&flagDir != 0, nil
}

// genuine checks the MAC of a handle of the right length.
func (h *handler) genuine(fh []byte) bool {
	k := [handleLen]byte(fh)
	if _, ok := h.verified.Load(k); ok {
		return true
	}
	var mac [macLen]byte
	if !hmac.Equal(h.appendMAC(mac[:0], fh[:handleLen-macLen]), fh[handleLen-macLen:]) {
		return false
	}
	if h.nverified.Add(1) > verifiedMax {
		h.verified.Clear()
		h.nverified.Store(0)
	}
	h.verified.Store(k, struct{}{})
	return true
}

// node resolves a handle to a node that exists: a deleted object's handle
// is stale.
func (h *handler) node(fh []byte) (fs.Node, bool, error) {
	n, dir, err := h.decode(fh)
	if err != nil {
		return n, dir, err
	}
	if _, err := h.f.Getattr(n); err != nil {
		return n, dir, fmt.Errorf("nfs: stale handle for object %d: %w", n.Obj, err)
	}
	return n, dir, nil
}

func (h *handler) fsFor(n fs.Node) *billyFS {
	if n.Live() {
		return h.live
	}
	return h.past
}

// Mount answers MOUNTPROC3_MNT: the export path names a live or historical
// directory. A refusal is logged once, at Info, with the path and why: the
// client shows only a status (libnfs: "mount_cb: ... MNT3ERR_NOTDIR").
func (h *handler) Mount(ctx context.Context, conn net.Conn, req gonfs.MountRequest) (gonfs.MountStatus, billy.Filesystem, []gonfs.AuthFlavor) {
	path := string(req.Dirpath)
	client := ""
	if conn != nil {
		client = conn.RemoteAddr().String()
	}
	refuse := func(err error, why string) (gonfs.MountStatus, billy.Filesystem, []gonfs.AuthFlavor) {
		st, name := mountStatus(err)
		args := []any{"client", client, "path", path, "status", name, "why", why}
		// A missing or malformed moment (/@@2001-01-01 before the store
		// began) is the why, not a file named in a URL.
		moment := strings.Contains(path[strings.LastIndex(path, "/")+1:], "@@") && st != gonfs.MountStatusErrNotDir
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
		return st, nil, nil
	}
	if path == "" {
		// libnfs asks for it with a file URL at the root (nfs://host/a.txt):
		// the directory part of "/a.txt".
		path = "/"
	}
	n, err := h.f.Resolve(h.cred, path)
	if err != nil {
		return refuse(err, err.Error())
	}
	a, err := h.f.Getattr(n)
	if err != nil {
		return refuse(err, err.Error())
	}
	if a.Kind != history.KindDir {
		return refuse(syscall.ENOTDIR, "names a "+a.Kind.String()+", not a directory")
	}
	h.log.Debug("nfs: mounted", "client", client, "path", path)
	b := *h.fsFor(n)
	b.root = n
	return gonfs.MountStatusOk, &b, []gonfs.AuthFlavor{gonfs.AuthFlavorNull, gonfs.AuthFlavorUnix}
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

// Change gives go-nfs the attribute-changing side of a live filesystem.
func (h *handler) Change(b billy.Filesystem) billy.Change {
	if bf, ok := b.(*billyFS); ok && bf.live && !h.f.ReadOnly() {
		return bf
	}
	return nil
}

func (h *handler) FSStat(ctx context.Context, b billy.Filesystem, st *gonfs.FSStat) error {
	s, err := h.f.Statfs()
	if err != nil {
		return err
	}
	st.TotalSize, st.FreeSize, st.AvailableSize = s.Bytes, s.Free, s.Avail
	st.TotalFiles, st.FreeFiles, st.AvailableFiles = s.Files, s.FreeFiles, s.FreeFiles
	st.CacheHint = 0
	return nil
}

func (h *handler) ToHandle(b billy.Filesystem, path []string) []byte {
	bf, ok := b.(*billyFS)
	if !ok {
		return nil
	}
	n, err := bf.resolve(strings.Join(path, "/"))
	if err != nil {
		h.log.Debug("nfs: no handle for a path", "path", printable(strings.Join(path, "/")), "err", err)
		return nil
	}
	a, err := h.f.Getattr(n)
	if err != nil {
		return nil
	}
	return h.encode(n, a.Kind == history.KindDir)
}

// FromHandle gives go-nfs the path of a handle: the object's token, and for
// a directory its parent's token in front, so that go-nfs, which finds ".."
// by dropping the last path element, finds the real parent.
func (h *handler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	n, dir, err := h.node(fh)
	if err != nil {
		return nil, nil, err
	}
	b := h.fsFor(n)
	if dir && !n.Versions && n.Obj != history.RootID {
		if parent, err := h.f.Lookup(h.cred, n, ".."); err == nil {
			return b, []string{token(parent), token(n)}, nil
		}
	}
	return b, []string{token(n)}, nil
}

func (h *handler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }

// HandleLimit bounds how many entries go-nfs puts in one READDIR reply
// (half of it); handles themselves need no table.
func (h *handler) HandleLimit() int { return 1 << 16 }
