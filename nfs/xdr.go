package nfs

import (
	"encoding/binary"
	"errors"
	"syscall"
	"time"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// A small XDR reader and writer (RFC 4506) for NFS's arguments and
// results. go-nfs's reflective encoders cost an allocation per field and
// its fattr3 has no room for atime and ctime of their own, so replies are
// built here, straight into the pooled reply buffer.

var errXDR = errors.New("nfs: malformed XDR arguments")

type xdrReader struct {
	b   []byte
	err error
}

func (r *xdrReader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errXDR
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) u64() uint64 { return uint64(r.u32())<<32 | uint64(r.u32()) }

func (r *xdrReader) bool() bool { return r.u32() != 0 }

// opaque reads variable-length opaque data of at most max bytes.
func (r *xdrReader) opaque(max int) []byte {
	n := int(r.u32())
	if r.err != nil || n > max || n > len(r.b) {
		r.err = errXDR
		return nil
	}
	v := r.b[:n]
	pad := (4 - n%4) % 4
	if n+pad > len(r.b) {
		r.err = errXDR
		return nil
	}
	r.b = r.b[n+pad:]
	return v
}

func (r *xdrReader) fixed(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errXDR
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// xdrWriter appends to b. fsid is the file system id its attributes carry.
type xdrWriter struct {
	b    []byte
	fsid uint64
}

func (w *xdrWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *xdrWriter) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *xdrWriter) bool(v bool) {
	if v {
		w.u32(1)
	} else {
		w.u32(0)
	}
}
func (w *xdrWriter) opaque(p []byte) {
	w.u32(uint32(len(p)))
	w.b = append(w.b, p...)
	for i := len(p); i%4 != 0; i++ {
		w.b = append(w.b, 0)
	}
}

// ftypes pairs NFS's file types (ftype3, go-nfs's numbers) with the
// st_mode type bits fs gives a kind (fs.TypeBits) and reads one from
// (fs.KindOfMode).
var ftypes = [...]struct {
	t    gonfs.FileType
	mode uint32
}{
	{gonfs.FileTypeRegular, syscall.S_IFREG},
	{gonfs.FileTypeDirectory, syscall.S_IFDIR},
	{gonfs.FileTypeBlock, syscall.S_IFBLK},
	{gonfs.FileTypeCharacter, syscall.S_IFCHR},
	{gonfs.FileTypeLink, syscall.S_IFLNK},
	{gonfs.FileTypeSocket, syscall.S_IFSOCK},
	{gonfs.FileTypeFIFO, syscall.S_IFIFO},
}

// ftype is the ftype3 of a kind.
func ftype(k history.Kind) uint32 {
	mode := fs.TypeBits(k)
	for _, f := range ftypes {
		if f.mode == mode {
			return uint32(f.t)
		}
	}
	return 0
}

// modeOfFtype is the st_mode type bits of an ftype3; 0 for none.
func modeOfFtype(t gonfs.FileType) uint32 {
	for _, f := range ftypes {
		if f.t == t {
			return f.mode
		}
	}
	return 0
}

func (w *xdrWriter) time(t time.Time) {
	w.u32(uint32(t.Unix()))
	w.u32(uint32(t.Nanosecond()))
}

// fattr3 writes attributes with their own atime, mtime and ctime.
func (w *xdrWriter) fattr3(a fs.Attr) {
	w.u32(ftype(a.Kind))
	w.u32(a.Mode & 0o7777)
	w.u32(a.Nlink)
	w.u32(a.Uid)
	w.u32(a.Gid)
	w.u64(a.Size)
	w.u64((a.Size + 511) &^ 511)
	major, minor := fs.RdevParts(a.Rdev)
	w.u32(major)
	w.u32(minor)
	w.u64(w.fsid)
	w.u64(a.Ino)
	w.time(a.Atime)
	w.time(a.Mtime)
	w.time(a.Ctime)
}

// postOpAttr writes attributes when there are any.
func (w *xdrWriter) postOpAttr(a *fs.Attr) {
	w.bool(a != nil)
	if a != nil {
		w.fattr3(*a)
	}
}

// wcc writes weak cache consistency data: before and after.
func (w *xdrWriter) wcc(pre, post *fs.Attr) {
	w.bool(pre != nil)
	if pre != nil {
		w.u64(pre.Size)
		w.time(pre.Mtime)
		w.time(pre.Ctime)
	}
	w.postOpAttr(post)
}

// sattr3 is a client's request to set attributes.
type sattr3 struct {
	set fs.SetAttr
}

func (r *xdrReader) sattr3() sattr3 {
	var s sattr3
	if r.bool() {
		m := r.u32()
		s.set.Mode = &m
	}
	if r.bool() {
		u := r.u32()
		s.set.Uid = &u
	}
	if r.bool() {
		g := r.u32()
		s.set.Gid = &g
	}
	if r.bool() {
		z := r.u64()
		s.set.Size = &z
	}
	for i := 0; i < 2; i++ {
		var t *time.Time
		now := false
		switch r.u32() {
		case 1:
			now = true
		case 2:
			sec, nsec := r.u32(), r.u32()
			v := time.Unix(int64(sec), int64(nsec))
			t = &v
		}
		if i == 0 {
			s.set.Atime, s.set.AtimeNow = t, now
		} else {
			s.set.Mtime, s.set.MtimeNow = t, now
		}
	}
	return s
}

func (s sattr3) empty() bool {
	x := s.set
	return x.Mode == nil && x.Uid == nil && x.Gid == nil && x.Size == nil && x.Atime == nil && x.Mtime == nil && !x.AtimeNow && !x.MtimeNow
}

func timeFromNanos(n int64) time.Time { return time.Unix(0, n) }
