// Package fs gives POSIX semantics to the history engine and resolves the
// @@ time-travel names. It is the one place where rules about names,
// permissions, links and the read-only past live: the NFS and 9P adapters
// translate their protocols to it and add no rules of their own.
//
// Everything is addressed by object id: a Node is an object as of a moment
// (or the live tree), and a path is only a way to find one.
package fs

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/asof/asof/history"
)

// Limits on names, paths and hard links, as Linux (ext4) has them.
const (
	NameMax = 255
	PathMax = 4096
	LinkMax = 65000
)

// Cred is the identity a caller acts as.
type Cred struct {
	Uid    uint32
	Gid    uint32
	Groups []uint32 // supplementary groups
}

func (c Cred) inGroup(g uint32) bool {
	if c.Gid == g {
		return true
	}
	for _, x := range c.Groups {
		if x == g {
			return true
		}
	}
	return false
}

// Node is an object as of a moment. At is history.Live for the live tree;
// Versions marks the read-only directory name@@ that lists Obj's versions.
type Node struct {
	Obj      history.ObjID
	At       history.TID
	Versions bool
}

// Live reports whether changes may be made through n (as far as time goes;
// permissions and the export's read-only flag are checked separately).
func (n Node) Live() bool { return n.At == history.Live && !n.Versions }

// Ino is the inode number clients see: the object id for the live tree, a
// number derived from object and moment in the past. Historical numbers
// differ from the live one and between moments and are stable for the same
// object and moment, so diff, find, cp -a and rsync treat each moment's
// files as distinct files.
func (n Node) Ino() uint64 {
	if n.Live() {
		return uint64(n.Obj)
	}
	x := mix(uint64(n.Obj)) ^ mix(uint64(n.At)+0x9e3779b97f4a7c15)
	if n.Versions {
		x = mix(x ^ 0xa5a5a5a5)
	}
	// The top bit keeps historical numbers clear of live object ids.
	return mix(x) | 1<<63
}

// mix is splitmix64's finaliser: a fixed function, so the same object and
// moment get the same number in every process and after restarts.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Attr is what stat shows.
type Attr struct {
	Ino   uint64
	Kind  history.Kind
	Mode  uint32 // permission bits with setuid, setgid, sticky
	Nlink uint32
	Uid   uint32
	Gid   uint32
	Size  uint64
	Rdev  uint64
	Atime time.Time
	Mtime time.Time
	Ctime time.Time
	Btime time.Time
	// Version changes whenever the object changes (9P qid version, NFS
	// change attribute).
	Version uint64
}

// FileMode is the attribute's type and permissions as Go spells them.
func (a Attr) FileMode() os.FileMode {
	m := os.FileMode(a.Mode & 0o777)
	if a.Mode&syscall.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if a.Mode&syscall.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if a.Mode&syscall.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	switch a.Kind {
	case history.KindDir:
		m |= os.ModeDir
	case history.KindSymlink:
		m |= os.ModeSymlink
	case history.KindChar:
		m |= os.ModeDevice | os.ModeCharDevice
	case history.KindBlock:
		m |= os.ModeDevice
	case history.KindFifo:
		m |= os.ModeNamedPipe
	case history.KindSocket:
		m |= os.ModeSocket
	}
	return m
}

// UnixMode is the st_mode of the attribute: S_IF* type bits and permissions.
func (a Attr) UnixMode() uint32 { return TypeBits(a.Kind) | a.Mode&0o7777 }

// Options configure an FS.
type Options struct {
	// Location is history.timezone: the zone of @@ dates without offset.
	Location *time.Location
	// ReadOnly refuses every change (exports.read_only).
	ReadOnly bool
	Logger   *slog.Logger
	// Clock is the time attributes are stamped with and relative @@ forms
	// count back from. Default time.Now.
	Clock func() time.Time
	// Squash is whose identity a caller acts as (exports.squash); the
	// zero value is SquashRoot.
	Squash Squash
	// Anon is the anonymous identity (exports.anon_uid, exports.anon_gid):
	// squashed callers and callers with no credential act as it. Nil means
	// 65534:65534 (nobody:nogroup), never root by omission.
	Anon *Cred
}

// FS is the file system over one store.
type FS struct {
	s     *history.Store
	opts  Options
	log   *slog.Logger
	open  openFiles
	fsid  uint64
	users userDB
}

// New serves the store s.
func New(s *history.Store, opts Options) *FS {
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Anon == nil {
		opts.Anon = &Cred{Uid: AnonID, Gid: AnonID}
	}
	f := &FS{s: s, opts: opts, log: opts.Logger, open: openFiles{n: map[history.ObjID]int{}}, fsid: fsid(s.Dir())}
	if !f.ReadOnly() {
		if err := f.endOrphans(); err != nil {
			f.log.Error("could not end files unlinked while open before the restart", "err", err)
		}
	}
	return f
}

// Fsid is the file system id both protocols report (NFS fsid, statfs's
// f_fsid over 9P): the same for one store through either protocol and
// across restarts, different between stores served side by side.
func (f *FS) Fsid() uint64 { return f.fsid }

// fsid hashes the store's absolute directory (FNV-1a), which is what tells
// two stores on one server apart.
func fsid(dir string) uint64 {
	if a, err := filepath.Abs(dir); err == nil {
		dir = a
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(dir); i++ {
		h ^= uint64(dir[i])
		h *= 1099511628211
	}
	return h
}

// Root is the live root directory.
func (f *FS) Root() Node { return Node{Obj: history.RootID, At: history.Live} }

// ReadOnly reports whether the export refuses changes: it is read-only,
// or its store is a mirror (until promoted).
func (f *FS) ReadOnly() bool { return f.opts.ReadOnly || f.s.Mirror() }

func (f *FS) now() int64 { return f.opts.Clock().UnixNano() }

// Errno maps an error from this package (or the engine below it) to the
// errno both adapters answer with.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, history.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, ErrBadWhen):
		return syscall.EINVAL
	case errors.Is(err, os.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, os.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, os.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, syscall.ENOSPC):
		return syscall.ENOSPC
	}
	return syscall.EIO
}
