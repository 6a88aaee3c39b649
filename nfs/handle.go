package nfs

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// Handles are built from the object id and the moment, never from a path,
// so they survive renames of the object and of every parent, and server
// restarts; a MAC with the store's secret refuses forged or foreign ones.
//
//	version 1 | flags (1 versions listing, 2 directory) | 0 0 | obj u64 | at u64 | mac [12]
//
// 32 bytes, a multiple of four: a handle needs no XDR padding, so a reply
// carries it as it is (putHandle).
const (
	handleVersion = 1
	handleLen     = 4 + 8 + 8 + 12
	macLen        = 12
	flagVersions  = 1
	flagDir       = 2
)

var errBadHandle = errors.New("nfs: handle not issued by this store")

// handler answers the calls of every connection (sunrpc.Handler).
type handler struct {
	f        *fs.FS
	key      []byte
	log      *slog.Logger
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
