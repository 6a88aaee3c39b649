package ninep

import (
	"sync"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// 9P2000.L flag values (Linux's, fixed by the protocol).
const (
	dotlAccMode = 0o3
	dotlTrunc   = 0o1000
	dotlAppend  = 0o2000
	dotlDsync   = 0o10000
	dotlSync    = 0o4000000

	atRemoveDir = 0x200 // AT_REMOVEDIR

	// Readdir offsets: 0 starts, 1 resumes after ".", 2 after "..", and
	// cookieBase+i after entry i of the fid's listing.
	cookieBase = 3

	// maxXattrList is p9's limit on an xattr walk's buffer (its
	// maximumLength): a longer list would be refused after ListXattrs.
	maxXattrList = 4 << 20
)

// file is a p9.File: a node (an object as of a moment), the identity of
// the attach it descends from, and for an open fid its open flags and
// directory listing. It holds no path: renames elsewhere never change what
// it is.
type file struct {
	s    *session
	n    fs.Node
	cred fs.Cred
	// unattached marks the root p9 walks each attach from, which acts as
	// no one (see session.Attach).
	unattached bool

	mu     sync.Mutex
	parent fs.Node // where it was walked to from, for Rename
	name   string
	named  bool
	opened bool
	flags  p9.OpenFlags
	// holders is how many Closes p9 will make: one for the fid, and one
	// for each xattr walk fid p9 builds on the same File (txattrwalk
	// shares the File and closes it with its fid).
	holders int
	dir     *listing
}

func (s *session) newFile(n fs.Node, cred fs.Cred) *file {
	return &file{s: s, n: n, cred: cred, holders: 1}
}

var _ p9.File = (*file)(nil)

// qidType is what diod puts in a qid: the directory and symlink type bits,
// and nothing for every other kind.
func qidType(k history.Kind) p9.QIDType {
	switch fs.TypeBits(k) {
	case syscall.S_IFDIR:
		return p9.TypeDir
	case syscall.S_IFLNK:
		return p9.TypeSymlink
	}
	return p9.TypeRegular
}

func qidOf(a fs.Attr) p9.QID {
	return p9.QID{Type: qidType(a.Kind), Version: uint32(a.Version ^ a.Version>>32), Path: a.Ino}
}

func attrOf(a fs.Attr) p9.Attr {
	ts := func(t time.Time) (uint64, uint64) { return uint64(t.Unix()), uint64(t.Nanosecond()) }
	out := p9.Attr{
		Mode: p9.FileMode(a.UnixMode()), UID: p9.UID(a.Uid), GID: p9.GID(a.Gid), NLink: p9.NLink(a.Nlink),
		RDev: p9.Dev(fs.LinuxDev(a.Rdev)), Size: a.Size, BlockSize: 4096, Blocks: (a.Size + 511) / 512,
		DataVersion: a.Version,
	}
	out.ATimeSeconds, out.ATimeNanoSeconds = ts(a.Atime)
	out.MTimeSeconds, out.MTimeNanoSeconds = ts(a.Mtime)
	out.CTimeSeconds, out.CTimeNanoSeconds = ts(a.Ctime)
	out.BTimeSeconds, out.BTimeNanoSeconds = ts(a.Btime)
	return out
}

func (f *file) getattr() (fs.Attr, error) {
	a, err := f.s.f.Getattr(f.n)
	return a, f.s.errno("getattr", err)
}

// walk looks each name up in turn through fs.Lookup, where "..", @@WHEN,
// name@@WHEN and name@@ mean what docs/SPEC.md section 3 says. From the
// unattached root, it attaches instead.
func (f *file) walk(names []string, wantAttr bool) ([]p9.QID, *file, fs.Attr, error) {
	if f.unattached {
		if len(names) == 1 {
			if tag, ok := unmark(attachMark, names[0]); ok {
				return f.s.attach(tag)
			}
		}
		return nil, nil, fs.Attr{}, linux.EINVAL
	}
	f.mu.Lock()
	n, parent, name, named := f.n, f.parent, f.name, f.named
	f.mu.Unlock()
	var a fs.Attr
	qids := make([]p9.QID, 0, len(names))
	for _, comp := range names {
		switch comp {
		case dotdot:
			comp = ".."
		case dot:
			comp = "."
		}
		next, err := f.s.f.Lookup(f.cred, n, comp)
		if err != nil {
			return nil, nil, a, f.s.errno("walk", err)
		}
		if a, err = f.s.f.Getattr(next); err != nil {
			return nil, nil, a, f.s.errno("walk", err)
		}
		qids = append(qids, qidOf(a))
		if comp != "." {
			parent, name, named = n, comp, comp != ".." && !fs.Reserved(comp)
		}
		n = next
	}
	if len(names) == 0 && wantAttr {
		var err error
		if a, err = f.s.f.Getattr(n); err != nil {
			return nil, nil, a, f.s.errno("walk", err)
		}
	}
	nf := f.s.newFile(n, f.cred)
	nf.parent, nf.name, nf.named = parent, name, named
	return qids, nf, a, nil
}

// Walk implements p9.File.
func (f *file) Walk(names []string) ([]p9.QID, p9.File, error) {
	qids, nf, _, err := f.walk(names, false)
	if err != nil {
		return nil, nil, err
	}
	return qids, nf, nil
}

// WalkGetAttr implements p9.File: p9 walks one component at a time and
// wants each one's attributes.
func (f *file) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	qids, nf, a, err := f.walk(names, true)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	return qids, nf, p9.AttrMaskAll, attrOf(a), nil
}

// GetAttr implements p9.File.
func (f *file) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	a, err := f.getattr()
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	return qidOf(a), p9.AttrMaskAll, attrOf(a), nil
}

// unstashSetattr takes the setuid/setgid bits the wire carried in atime's
// nanoseconds (see wire.go).
func unstashSetattr(attr *p9.SetAttr) uint32 {
	if attr.ATimeNanoSeconds&stashSetattrMark == 0 {
		return 0
	}
	bits := uint32(attr.ATimeNanoSeconds>>stashSetattrShift) & stashBits
	attr.ATimeNanoSeconds &= 1<<stashSetattrShift - 1
	return bits
}

// unstashCreate takes the setuid/setgid bits the wire carried in
// Tlcreate's flags.
func unstashCreate(flags p9.OpenFlags) (p9.OpenFlags, uint32) {
	if uint32(flags)&stashCreateMark == 0 {
		return flags, 0
	}
	bits := uint32(flags) >> stashCreateShift & stashBits
	return flags &^ p9.OpenFlags(stashCreateMark|stashBits<<stashCreateShift), bits
}

// SetAttr implements p9.File: chmod, chown, truncate, utimes. A time
// flagged NotSystemTime is the one given; otherwise it is "now".
func (f *file) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	extra := unstashSetattr(&attr)
	if valid.Empty() {
		return nil
	}
	var s fs.SetAttr
	if valid.Permissions {
		m := uint32(attr.Permissions)&0o1777 | extra
		s.Mode = &m
	}
	if valid.UID && attr.UID.Ok() {
		u := uint32(attr.UID)
		s.Uid = &u
	}
	if valid.GID && attr.GID.Ok() {
		g := uint32(attr.GID)
		s.Gid = &g
	}
	if valid.Size {
		sz := attr.Size
		s.Size = &sz
	}
	if valid.ATime {
		if valid.ATimeNotSystemTime {
			t := time.Unix(int64(attr.ATimeSeconds), int64(attr.ATimeNanoSeconds))
			s.Atime = &t
		} else {
			s.AtimeNow = true
		}
	}
	if valid.MTime {
		if valid.MTimeNotSystemTime {
			t := time.Unix(int64(attr.MTimeSeconds), int64(attr.MTimeNanoSeconds))
			s.Mtime = &t
		} else {
			s.MtimeNow = true
		}
	}
	_, err := f.s.f.Setattr(f.cred, f.n, s)
	return f.s.errno("setattr", err)
}

// Close implements p9.File: the last Close of an open fid ends the open, so
// a file unlinked while open lives until then.
func (f *file) Close() error {
	f.mu.Lock()
	f.holders--
	release := f.holders == 0 && f.opened
	if f.holders == 0 {
		f.opened, f.dir = false, nil
	}
	f.mu.Unlock()
	if release {
		if err := f.s.f.Release(f.n); err != nil {
			f.s.log.Warn("ninep: release failed", "obj", f.n.Obj, "err", err)
		}
	}
	return nil
}

func accessFor(flags p9.OpenFlags) (uint32, error) {
	switch flags & dotlAccMode {
	case p9.ReadOnly:
		return fs.AccessRead, nil
	case p9.WriteOnly:
		return fs.AccessWrite, nil
	case p9.ReadWrite:
		return fs.AccessRead | fs.AccessWrite, nil
	}
	return 0, linux.EINVAL
}

// Open implements p9.File (Tlopen).
func (f *file) Open(flags p9.OpenFlags) (p9.QID, uint32, error) {
	want, err := accessFor(flags)
	if err != nil {
		return p9.QID{}, 0, err
	}
	if err := f.s.f.Open(f.cred, f.n, want); err != nil {
		return p9.QID{}, 0, f.s.errno("open", err)
	}
	if flags&dotlTrunc != 0 && want&fs.AccessWrite != 0 {
		zero := uint64(0)
		if _, err := f.s.f.Setattr(f.cred, f.n, fs.SetAttr{Size: &zero}); err != nil {
			f.s.f.Release(f.n)
			return p9.QID{}, 0, f.s.errno("open", err)
		}
	}
	a, err := f.getattr()
	if err != nil {
		f.s.f.Release(f.n)
		return p9.QID{}, 0, err
	}
	f.mu.Lock()
	f.opened, f.flags = true, flags
	f.mu.Unlock()
	return qidOf(a), 0, nil
}

// Create implements p9.File (Tlcreate): an exclusive create, opened. The
// open that creates a file is not checked against the new file's mode
// (open(2) with O_CREAT and mode 0444 gives a writable descriptor), so it
// asks fs.Open for no access: fs.Create has checked the directory.
func (f *file) Create(name string, flags p9.OpenFlags, perm p9.FileMode, _ p9.UID, _ p9.GID) (p9.File, p9.QID, uint32, error) {
	flags, extra := unstashCreate(flags)
	if _, err := accessFor(flags); err != nil {
		return nil, p9.QID{}, 0, err
	}
	n, _, err := f.s.f.Create(f.cred, f.n, name, uint32(perm)&0o1777|extra, true)
	if err != nil {
		return nil, p9.QID{}, 0, f.s.errno("create", err)
	}
	if err := f.s.f.Open(f.cred, n, 0); err != nil {
		return nil, p9.QID{}, 0, f.s.errno("create", err)
	}
	nf := f.s.newFile(n, f.cred)
	nf.parent, nf.name, nf.named = f.n, name, true
	nf.opened, nf.flags = true, flags
	a, err := nf.getattr()
	if err != nil {
		nf.Close()
		return nil, p9.QID{}, 0, err
	}
	return nf, qidOf(a), 0, nil
}

func (f *file) made(op string, n fs.Node, err error) (p9.QID, error) {
	if err != nil {
		return p9.QID{}, f.s.errno(op, err)
	}
	a, err := f.s.f.Getattr(n)
	if err != nil {
		return p9.QID{}, f.s.errno(op, err)
	}
	return qidOf(a), nil
}

// Mkdir implements p9.File.
func (f *file) Mkdir(name string, perm p9.FileMode, _ p9.UID, _ p9.GID) (p9.QID, error) {
	n, err := f.s.f.Mkdir(f.cred, f.n, name, uint32(perm)&0o7777)
	return f.made("mkdir", n, err)
}

// Symlink implements p9.File: newName in this directory pointing at oldName.
func (f *file) Symlink(oldName, newName string, _ p9.UID, _ p9.GID) (p9.QID, error) {
	n, err := f.s.f.Symlink(f.cred, f.n, newName, oldName)
	return f.made("symlink", n, err)
}

// Link implements p9.File: newName in this directory for target.
func (f *file) Link(target p9.File, newName string) error {
	t, ok := target.(*file)
	if !ok {
		return linux.EINVAL
	}
	return f.s.errno("link", f.s.f.Link(f.cred, t.n, f.n, newName))
}

// Mknod implements p9.File: devices, fifos and sockets (as objects).
func (f *file) Mknod(name string, mode p9.FileMode, major, minor uint32, _ p9.UID, _ p9.GID) (p9.QID, error) {
	k, err := fs.KindOfMode(uint32(mode))
	if err != nil {
		return p9.QID{}, f.s.errno("mknod", err)
	}
	a := fs.NewAttr{Kind: k, Mode: uint32(mode) & 0o7777}
	if k == history.KindChar || k == history.KindBlock {
		a.Rdev = fs.Rdev(major, minor)
	}
	n, err := f.s.f.Mknod(f.cred, f.n, name, a)
	return f.made("mknod", n, err)
}

// Rename implements p9.File. p9's server never calls it (Trename goes to
// the parent's RenameAt); it renames from where this file was walked to.
func (f *file) Rename(newDir p9.File, newName string) error {
	d, ok := newDir.(*file)
	if !ok {
		return linux.EINVAL
	}
	f.mu.Lock()
	parent, name, named := f.parent, f.name, f.named
	f.mu.Unlock()
	if !named {
		return linux.EINVAL
	}
	if err := f.s.f.Rename(f.cred, parent, name, d.n, newName); err != nil {
		return f.s.errno("rename", err)
	}
	f.Renamed(newDir, newName)
	return nil
}

// RenameAt implements p9.File (Trenameat, and Trename through the parent).
func (f *file) RenameAt(oldName string, newDir p9.File, newName string) error {
	d, ok := newDir.(*file)
	if !ok {
		return linux.EINVAL
	}
	return f.s.errno("rename", f.s.f.Rename(f.cred, f.n, oldName, d.n, newName))
}

// Renamed implements p9.File: only the name it was reached by changes.
func (f *file) Renamed(newDir p9.File, newName string) {
	d, ok := newDir.(*file)
	if !ok {
		return
	}
	f.mu.Lock()
	f.parent, f.name, f.named = d.n, newName, true
	f.mu.Unlock()
}

// UnlinkAt implements p9.File: AT_REMOVEDIR is rmdir.
func (f *file) UnlinkAt(name string, flags uint32) error {
	return f.s.errno("unlink", f.s.f.Remove(f.cred, f.n, name, flags&atRemoveDir != 0))
}

// direntSize is an entry's size in Rreaddir: qid[13] offset[8] type[1]
// name[s].
func direntSize(name string) int { return 13 + 8 + 1 + 2 + len(name) }

// Readdir implements p9.File: the entries after offset that fit in count
// bytes, "." and ".." first.
//
// A listing read from offset 0 is a snapshot of the directory, taken then
// and kept by this fid, and an offset is a position in it: offsets stay
// valid however the directory changes, no entry is listed twice, and a
// listing always ends, even while entries keep being added (a listing that
// followed the live directory could chase new names for ever). Entries
// added after offset 0 show in the next listing from offset 0 (rewinddir),
// which POSIX allows.
func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if offset == 0 || f.dir == nil {
		if err := f.snapshot(); err != nil {
			return nil, err
		}
	}
	var out p9.Dirents
	budget := int(count)
	add := func(d p9.Dirent) bool {
		if direntSize(d.Name) > budget {
			return false
		}
		budget -= direntSize(d.Name)
		out = append(out, d)
		return true
	}
	if offset == 0 && !add(f.dir.dot) {
		return out, nil
	}
	if offset <= 1 && !add(f.dir.dotdot) {
		return out, nil
	}
	next := uint64(0)
	if offset >= cookieBase {
		next = offset - cookieBase + 1
	}
	for i := next; i < uint64(len(f.dir.ents)) && add(f.dir.ents[i]); i++ {
	}
	return out, nil
}

// listing is a directory as one fid lists it.
type listing struct {
	dot, dotdot p9.Dirent
	ents        []p9.Dirent // ents[i].Offset is cookieBase+i
}

func (f *file) snapshot() error {
	a, err := f.s.f.Getattr(f.n)
	if err != nil {
		return f.s.errno("readdir", err)
	}
	dt := p9.QIDType(fs.DirentType(history.KindDir))
	l := &listing{dot: p9.Dirent{QID: qidOf(a), Offset: 1, Type: dt, Name: "."}}
	_, pa, err := f.s.f.DotDot(f.cred, f.n)
	if err != nil {
		return f.s.errno("readdir", err)
	}
	l.dotdot = p9.Dirent{QID: qidOf(pa), Offset: 2, Type: dt, Name: ".."}
	err = f.s.f.ReadDir(f.cred, f.n, "", func(e fs.Dirent) bool {
		l.ents = append(l.ents, p9.Dirent{
			QID:    p9.QID{Type: qidType(e.Kind), Path: e.Node.Ino()},
			Offset: uint64(cookieBase + len(l.ents)),
			Type:   p9.QIDType(fs.DirentType(e.Kind)),
			Name:   e.Name,
		})
		return true
	})
	if err != nil {
		return f.s.errno("readdir", err)
	}
	f.dir = l
	return nil
}

// ReadAt implements p9.File.
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.s.f.Read(f.cred, f.n, p, off)
	f.s.obs.Bytes("9p", n, 0)
	return n, f.s.errno("read", err)
}

// WriteAt implements p9.File: O_APPEND writes at the end whatever the
// offset; O_SYNC and O_DSYNC writes are durable before the reply.
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	flags := f.flags
	f.mu.Unlock()
	n, err := f.s.f.Write(f.cred, f.n, p, off, flags&dotlAppend != 0)
	if err == nil && flags&(dotlSync|dotlDsync) != 0 {
		err = f.s.f.Sync()
	}
	if err != nil {
		return 0, f.s.errno("write", err)
	}
	f.s.obs.Bytes("9p", 0, n)
	return n, nil
}

// FSync implements p9.File: every change so far is durable before the
// reply.
func (f *file) FSync() error { return f.s.errno("fsync", f.s.f.Sync()) }

// StatFS implements p9.File from the store's real figures.
func (f *file) StatFS() (p9.FSStat, error) {
	st, err := f.s.f.Statfs()
	if err != nil {
		return p9.FSStat{}, f.s.errno("statfs", err)
	}
	bs := uint64(max(st.BlockSize, 1))
	return p9.FSStat{
		Type:      0x01021997, // V9FS_MAGIC
		BlockSize: uint32(bs), Blocks: st.Bytes / bs, BlocksFree: st.Free / bs, BlocksAvailable: st.Avail / bs,
		Files: st.Files, FilesFree: st.FreeFiles, FSID: f.s.f.Fsid(), NameLength: st.NameMax,
	}, nil
}

// Readlink implements p9.File.
func (f *file) Readlink() (string, error) {
	t, err := f.s.f.Readlink(f.n)
	return t, f.s.errno("readlink", err)
}

// hold notes one more Close to come: p9 built an xattr walk fid on this
// File.
func (f *file) hold() {
	f.mu.Lock()
	f.holders++
	f.mu.Unlock()
}

// GetXattr implements p9.File (Txattrwalk). The wire gives p9 a name
// marking the walk's call (see wire.go), which holds the attribute's name,
// "" for the list of names, and takes fs's errno for the reply: p9 answers
// any error EINVAL.
func (f *file) GetXattr(name string) ([]byte, error) {
	tag, marked := unmark(xattrMark, name)
	if marked {
		c, ok := f.s.w.call(tag)
		if !ok || c.typ != msgTxattrwalk {
			return nil, linux.EINVAL
		}
		name = c.xname
	}
	var v []byte
	var err error
	if name == "" {
		v, err = f.listXattrs()
	} else {
		v, err = f.s.f.GetXattr(f.cred, f.n, name)
	}
	if err != nil {
		if marked {
			f.s.w.xattrFailed(tag, linux.Errno(fs.Errno(err)))
		}
		return nil, f.s.errno("getxattr", err)
	}
	f.hold()
	return v, nil
}

// listXattrs is the value of an xattr walk without a name: the names,
// each ended by a NUL, as listxattr(2) gives them; nothing for no name.
func (f *file) listXattrs() ([]byte, error) {
	names, err := f.s.f.ListXattr(f.cred, f.n)
	if err != nil {
		return nil, err
	}
	var b []byte
	for _, n := range names {
		b = append(append(b, n...), 0)
	}
	if len(b) > maxXattrList {
		return nil, syscall.E2BIG
	}
	return b, nil
}

// ListXattrs implements p9.File, for p9's xattr walk without a name,
// which the wire never lets through (it lists through GetXattr).
func (f *file) ListXattrs() ([]string, error) {
	names, err := f.s.f.ListXattr(f.cred, f.n)
	if err != nil {
		return nil, f.s.errno("listxattr", err)
	}
	f.hold()
	return names, nil
}

// SetXattr implements p9.File (Txattrcreate, acted on at Tclunk).
func (f *file) SetXattr(name string, data []byte, flags p9.XattrFlags) error {
	return f.s.errno("setxattr", f.s.f.SetXattr(f.cred, f.n, name, data, int(flags)))
}

// RemoveXattr implements p9.File (Txattrcreate of size 0 with
// XATTR_REPLACE).
func (f *file) RemoveXattr(name string) error {
	return f.s.errno("removexattr", f.s.f.RemoveXattr(f.cred, f.n, name))
}

// Lock implements p9.File: locks are accepted and not enforced (the
// library has no lock manager; Tgetlock is answered "unlocked" in wire.go).
func (f *file) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (p9.LockStatus, error) {
	return p9.LockStatusOK, nil
}
