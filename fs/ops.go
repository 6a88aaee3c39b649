package fs

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/asof/asof/history"
)

// writable refuses changes through the past and through a read-only export.
func (f *FS) writable(nodes ...Node) error {
	if f.ReadOnly() {
		return syscall.EROFS
	}
	for _, n := range nodes {
		if !n.Live() {
			return syscall.EROFS
		}
	}
	return nil
}

// checkName vets a name a change would create.
func checkName(name string) error {
	switch {
	case len(name) > NameMax:
		return syscall.ENAMETOOLONG
	case name == "" || strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	case name == "." || name == "..":
		return syscall.EEXIST
	case Reserved(name):
		// The suffix is reserved for time travel.
		return syscall.EINVAL
	}
	return nil
}

// update runs fn as one change after the checks every change shares.
func (f *FS) update(nodes []Node, fn func(tx *history.Tx) error) error {
	if err := f.writable(nodes...); err != nil {
		return err
	}
	err := f.s.Update(fn)
	if errors.Is(err, history.ErrNotFound) {
		return syscall.ENOENT
	}
	return err
}

// dirFor reads a directory that c is about to change: it must be one, and
// c needs write and search permission on it.
func dirFor(tx *history.Tx, c Cred, dir history.ObjID) (history.Inode, error) {
	ino, err := tx.Inode(dir)
	if err != nil {
		return ino, err
	}
	if ino.Kind != history.KindDir {
		return ino, syscall.ENOTDIR
	}
	return ino, access(c, ino, AccessWrite|AccessExec)
}

// touch stamps mtime and ctime of a changed directory or file.
func (f *FS) touch(tx *history.Tx, obj history.ObjID, nlinkDelta int) error {
	ino, err := tx.Inode(obj)
	if err != nil {
		return err
	}
	now := f.now()
	ino.Mtime, ino.Ctime = now, now
	ino.Nlink = uint32(int(ino.Nlink) + nlinkDelta)
	return tx.PutInode(obj, ino)
}

// NewAttr is what a create gives a new object.
type NewAttr struct {
	Kind   history.Kind
	Mode   uint32 // permission bits; the caller has applied its umask
	Rdev   uint64
	Target string // symlink target
}

// Create makes a regular file, or returns the existing one under name
// unless exclusive (then EEXIST). created says which.
func (f *FS) Create(c Cred, dir Node, name string, mode uint32, exclusive bool) (n Node, created bool, err error) {
	n, err = f.make(c, dir, name, NewAttr{Kind: history.KindFile, Mode: mode}, !exclusive)
	if errors.Is(err, errExisting) {
		return n, false, nil
	}
	return n, err == nil, err
}

var errExisting = errors.New("exists")

// Mkdir makes a directory.
func (f *FS) Mkdir(c Cred, dir Node, name string, mode uint32) (Node, error) {
	return f.make(c, dir, name, NewAttr{Kind: history.KindDir, Mode: mode}, false)
}

// Symlink makes a symbolic link.
func (f *FS) Symlink(c Cred, dir Node, name, target string) (Node, error) {
	switch {
	case len(target) >= PathMax:
		// A path is at most PathMax bytes with its NUL: 4095 of text.
		return Node{}, syscall.ENAMETOOLONG
	case target == "", strings.IndexByte(target, 0) >= 0:
		// No path is empty or holds a NUL; knfsd says INVAL.
		return Node{}, syscall.EINVAL
	}
	return f.make(c, dir, name, NewAttr{Kind: history.KindSymlink, Mode: 0o777, Target: target}, false)
}

// Mknod makes a device node, fifo or socket (as objects: no device is
// ever opened).
func (f *FS) Mknod(c Cred, dir Node, name string, a NewAttr) (Node, error) {
	switch a.Kind {
	case history.KindChar, history.KindBlock:
		// A device node is a door to hardware on every client that mounts
		// without nodev: only root may make one.
		if c.Uid != 0 {
			return Node{}, syscall.EPERM
		}
	case history.KindFifo, history.KindSocket, history.KindFile:
	default:
		return Node{}, syscall.EINVAL
	}
	return f.make(c, dir, name, a, false)
}

func (f *FS) make(c Cred, dir Node, name string, a NewAttr, openExisting bool) (Node, error) {
	if err := checkName(name); err != nil {
		return Node{}, err
	}
	var out Node
	err := f.update([]Node{dir}, func(tx *history.Tx) error {
		dino, err := dirFor(tx, c, dir.Obj)
		if err != nil {
			return err
		}
		if id, k, err := tx.Lookup(dir.Obj, name); err == nil {
			if !openExisting {
				return syscall.EEXIST
			}
			switch k {
			case history.KindDir:
				return syscall.EISDIR
			case history.KindFile:
			default:
				// Only a regular file is opened by a create (knfsd: EXIST).
				return syscall.EEXIST
			}
			out = Node{Obj: id, At: history.Live}
			return errExisting
		} else if !errors.Is(err, history.ErrNotFound) {
			return err
		}
		now := f.now()
		mode := a.Mode & 0o7777
		if a.Kind == history.KindDir {
			// mkdir keeps the sticky bit; setgid comes from the parent.
			mode &= 0o1777
		}
		ino := history.Inode{Kind: a.Kind, Mode: mode, Uid: c.Uid, Gid: c.Gid, Nlink: 1, Rdev: a.Rdev,
			Atime: now, Mtime: now, Ctime: now, Btime: now}
		if dino.Mode&syscall.S_ISGID != 0 {
			// BSD group semantics in a setgid directory: the directory's
			// group, and subdirectories inherit the bit.
			ino.Gid = dino.Gid
			if a.Kind == history.KindDir {
				ino.Mode |= syscall.S_ISGID
			}
		}
		if ino.Mode&syscall.S_ISGID != 0 && a.Kind != history.KindDir && c.Uid != 0 && !c.inGroup(ino.Gid) {
			ino.Mode &^= syscall.S_ISGID
		}
		if a.Kind == history.KindDir {
			ino.Nlink = 2
		}
		if a.Kind == history.KindSymlink {
			ino.Size = uint64(len(a.Target))
		}
		id, err := tx.NewObject(ino)
		if err != nil {
			return err
		}
		if err := tx.SetDirent(dir.Obj, name, id, a.Kind); err != nil {
			return err
		}
		switch a.Kind {
		case history.KindDir:
			if err := tx.SetDirent(id, "..", dir.Obj, history.KindDir); err != nil {
				return err
			}
		case history.KindSymlink:
			if err := tx.SetSymlink(id, a.Target); err != nil {
				return err
			}
		}
		delta := 0
		if a.Kind == history.KindDir {
			delta = 1
		}
		out = Node{Obj: id, At: history.Live}
		return f.touch(tx, dir.Obj, delta)
	})
	if err != nil && !errors.Is(err, errExisting) {
		// out may name the object of a transaction that did not commit.
		return Node{}, err
	}
	return out, err
}

// Link makes name in dir another name of n.
func (f *FS) Link(c Cred, n, dir Node, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return f.update([]Node{n, dir}, func(tx *history.Tx) error {
		ino, err := tx.Inode(n.Obj)
		if err != nil {
			return err
		}
		if ino.Kind == history.KindDir {
			return syscall.EPERM
		}
		if ino.Nlink == 0 {
			return syscall.ENOENT // an unlinked file cannot come back
		}
		if ino.Nlink >= LinkMax {
			return syscall.EMLINK
		}
		if _, err := dirFor(tx, c, dir.Obj); err != nil {
			return err
		}
		if _, _, err := tx.Lookup(dir.Obj, name); err == nil {
			return syscall.EEXIST
		} else if !errors.Is(err, history.ErrNotFound) {
			return err
		}
		if err := tx.SetDirent(dir.Obj, name, n.Obj, ino.Kind); err != nil {
			return err
		}
		ino.Nlink++
		ino.Ctime = f.now()
		if err := tx.PutInode(n.Obj, ino); err != nil {
			return err
		}
		return f.touch(tx, dir.Obj, 0)
	})
}

// Remove is unlink (dirOnly false) and rmdir (dirOnly true).
func (f *FS) Remove(c Cred, dir Node, name string, dirOnly bool) error {
	switch {
	case len(name) > NameMax:
		return syscall.ENAMETOOLONG
	case name == ".":
		return syscall.EINVAL
	case name == "..":
		return syscall.ENOTEMPTY
	case Reserved(name):
		return syscall.EROFS // a name in the past
	}
	return f.update([]Node{dir}, func(tx *history.Tx) error {
		dino, err := dirFor(tx, c, dir.Obj)
		if err != nil {
			return err
		}
		id, k, err := tx.Lookup(dir.Obj, name)
		if err != nil {
			return err
		}
		ino, err := tx.Inode(id)
		if err != nil {
			return err
		}
		if dirOnly && k != history.KindDir {
			return syscall.ENOTDIR
		}
		if !dirOnly && k == history.KindDir {
			return syscall.EISDIR
		}
		if !stickyAllows(c, dino, ino) {
			return syscall.EPERM
		}
		return f.unlink(tx, dir.Obj, name, id, ino)
	})
}

// unlink removes one name of id; the object ends with its last name (or,
// for a file still open, when it is closed).
func (f *FS) unlink(tx *history.Tx, dir history.ObjID, name string, id history.ObjID, ino history.Inode) error {
	if ino.Kind == history.KindDir {
		if empty, err := isEmpty(tx, id); err != nil {
			return err
		} else if !empty {
			return syscall.ENOTEMPTY
		}
	}
	if err := tx.RemoveDirent(dir, name); err != nil {
		return err
	}
	delta := 0
	if ino.Kind == history.KindDir {
		delta = -1
		ino.Nlink = 0
	} else {
		ino.Nlink--
	}
	if err := f.touch(tx, dir, delta); err != nil {
		return err
	}
	if ino.Kind != history.KindDir && (ino.Nlink > 0 || f.open.isOpen(id)) {
		ino.Ctime = f.now()
		if ino.Nlink == 0 {
			// Open but nameless: remember it durably, so that a restart
			// (which closes every handle) ends it, as ext4's orphan list.
			if err := tx.PutMeta(orphanKey(id), nil); err != nil {
				return err
			}
		}
		return tx.PutInode(id, ino)
	}
	return tx.EndObject(id)
}

func orphanKey(id history.ObjID) string { return fmt.Sprintf("orphan/%016x", uint64(id)) }

// endOrphans ends the files that were open and unlinked when the server
// last stopped: no handle survives a restart.
func (f *FS) endOrphans() error {
	orphans, err := f.s.Meta("orphan/")
	if err != nil || len(orphans) == 0 {
		return err
	}
	return f.s.Update(func(tx *history.Tx) error {
		for name := range orphans {
			var id uint64
			if _, err := fmt.Sscanf(name, "orphan/%016x", &id); err != nil {
				continue
			}
			if ino, err := tx.Inode(history.ObjID(id)); err == nil && ino.Nlink == 0 {
				if err := tx.EndObject(history.ObjID(id)); err != nil {
					return err
				}
			}
			if err := tx.DelMeta(name); err != nil {
				return err
			}
		}
		return nil
	})
}

func isEmpty(tx *history.Tx, dir history.ObjID) (bool, error) {
	empty := true
	err := tx.ReadDir(dir, "", func(name string, _ history.ObjID, _ history.Kind) bool {
		if name == ".." {
			return true
		}
		empty = false
		return false
	})
	return empty, err
}

// Rename moves sname in sdir to dname in ddir, atomically, replacing what
// dname was (POSIX rename(2) rules).
func (f *FS) Rename(c Cred, sdir Node, sname string, ddir Node, dname string) error {
	switch sname {
	case ".", "..", "":
		return syscall.EINVAL
	}
	if len(sname) > NameMax {
		return syscall.ENAMETOOLONG
	}
	if err := checkName(dname); err != nil {
		if err == syscall.EEXIST {
			err = syscall.EINVAL
		}
		return err
	}
	return f.update([]Node{sdir, ddir}, func(tx *history.Tx) error {
		sino, err := dirFor(tx, c, sdir.Obj)
		if err != nil {
			return err
		}
		dino, err := dirFor(tx, c, ddir.Obj)
		if err != nil {
			return err
		}
		id, k, err := tx.Lookup(sdir.Obj, sname)
		if err != nil {
			return err
		}
		ino, err := tx.Inode(id)
		if err != nil {
			return err
		}
		if !stickyAllows(c, sino, ino) {
			return syscall.EPERM
		}
		moved := sdir.Obj != ddir.Obj
		if k == history.KindDir && moved {
			// Its ".." changes: that needs write permission on it, and it
			// must not move into its own subtree.
			if err := access(c, ino, AccessWrite); err != nil {
				return err
			}
			if err := notUnder(tx, ddir.Obj, id); err != nil {
				return err
			}
		}
		if did, dk, err := tx.Lookup(ddir.Obj, dname); err == nil {
			if did == id {
				return nil // two names of one file: nothing to do
			}
			switch {
			case k == history.KindDir && dk != history.KindDir:
				return syscall.ENOTDIR
			case k != history.KindDir && dk == history.KindDir:
				return syscall.EISDIR
			}
			victim, err := tx.Inode(did)
			if err != nil {
				return err
			}
			if !stickyAllows(c, dino, victim) {
				return syscall.EPERM
			}
			if err := f.unlink(tx, ddir.Obj, dname, did, victim); err != nil {
				return err
			}
		} else if !errors.Is(err, history.ErrNotFound) {
			return err
		}
		if err := tx.RemoveDirent(sdir.Obj, sname); err != nil {
			return err
		}
		if err := tx.SetDirent(ddir.Obj, dname, id, k); err != nil {
			return err
		}
		sdelta, ddelta := 0, 0
		if k == history.KindDir && moved {
			if err := tx.SetDirent(id, "..", ddir.Obj, history.KindDir); err != nil {
				return err
			}
			sdelta, ddelta = -1, 1
		}
		if err := f.touch(tx, sdir.Obj, sdelta); err != nil {
			return err
		}
		if moved {
			if err := f.touch(tx, ddir.Obj, ddelta); err != nil {
				return err
			}
		}
		ino, err = tx.Inode(id)
		if err != nil {
			return err
		}
		ino.Ctime = f.now()
		if err := tx.PutInode(id, ino); err != nil {
			return err
		}
		return tx.Note(id, history.ChangeRenamed)
	})
}

// notUnder fails with EINVAL when dir is obj or lies below it.
func notUnder(tx *history.Tx, dir, obj history.ObjID) error {
	for cur := dir; ; {
		if cur == obj {
			return syscall.EINVAL
		}
		if cur == history.RootID {
			return nil
		}
		parent, _, err := tx.Lookup(cur, "..")
		if err != nil {
			return err
		}
		cur = parent
	}
}

// SetAttr says which attributes a setattr changes; nil leaves one alone.
type SetAttr struct {
	Mode     *uint32
	Uid      *uint32
	Gid      *uint32
	Size     *uint64
	Atime    *time.Time
	Mtime    *time.Time
	AtimeNow bool
	MtimeNow bool
}

// Setattr is chmod, chown, truncate and utimes, with POSIX's rules on who
// may do which.
func (f *FS) Setattr(c Cred, n Node, s SetAttr) (Attr, error) {
	err := f.update([]Node{n}, func(tx *history.Tx) error {
		ino, err := tx.Inode(n.Obj)
		if err != nil {
			return err
		}
		owner := c.Uid == 0 || c.Uid == ino.Uid
		now := f.now()
		changed := false
		if s.Size != nil {
			if ino.Kind == history.KindDir {
				return syscall.EISDIR
			}
			if ino.Kind != history.KindFile {
				return syscall.EINVAL
			}
			if err := dataAccess(c, ino, AccessWrite); err != nil {
				return err
			}
			if *s.Size > maxFileSize {
				return syscall.EFBIG
			}
			if *s.Size != ino.Size {
				if err := tx.Truncate(n.Obj, *s.Size); err != nil {
					return err
				}
				if ino, err = tx.Inode(n.Obj); err != nil {
					return err
				}
				ino.Mtime = now
				clearSetID(c, &ino)
			}
			changed = true
		}
		if s.Uid != nil || s.Gid != nil {
			uid, gid := ino.Uid, ino.Gid
			if s.Uid != nil {
				uid = *s.Uid
			}
			if s.Gid != nil {
				gid = *s.Gid
			}
			if c.Uid != 0 && (uid != ino.Uid || c.Uid != ino.Uid || (gid != ino.Gid && !c.inGroup(gid))) {
				return syscall.EPERM
			}
			if ino.Kind != history.KindDir {
				// chown drops setuid, and setgid where it means "run as",
				// even when the owner stays (as Linux does: its NFS client
				// leaves that to the server).
				ino.Mode = chownMode(ino.Mode)
			}
			ino.Uid, ino.Gid = uid, gid
			changed = true
		}
		if s.Mode != nil && ino.Kind != history.KindSymlink { // a symlink's mode is always 0777
			if !owner {
				return syscall.EPERM
			}
			m := *s.Mode & 0o7777
			if c.Uid != 0 && !c.inGroup(ino.Gid) {
				// Not even on a directory, where it would hand the group
				// to everything made in it (Linux's setattr_copy).
				m &^= syscall.S_ISGID
			}
			if (s.Uid != nil || s.Gid != nil) && ino.Kind != history.KindDir {
				m = chownMode(m) // a mode set with a chown loses them too
			}
			ino.Mode = m
			changed = true
		}
		for _, t := range []struct {
			set *time.Time
			now bool
			dst *int64
		}{{s.Atime, s.AtimeNow, &ino.Atime}, {s.Mtime, s.MtimeNow, &ino.Mtime}} {
			switch {
			case t.set != nil:
				if !owner {
					return syscall.EPERM
				}
				*t.dst = t.set.UnixNano()
			case t.now:
				if !owner && access(c, ino, AccessWrite) != nil {
					return syscall.EACCES
				}
				*t.dst = now
			default:
				continue
			}
			changed = true
		}
		if !changed {
			return nil
		}
		ino.Ctime = now
		return tx.PutInode(n.Obj, ino)
	})
	if err != nil {
		return Attr{}, err
	}
	return f.Getattr(n)
}

// clearSetID drops setuid and setgid when someone other than root changes
// a file's data, as POSIX asks, so a modified program cannot keep running
// as its owner.
func clearSetID(c Cred, ino *history.Inode) {
	if c.Uid == 0 || ino.Kind != history.KindFile {
		return
	}
	ino.Mode &^= syscall.S_ISUID
	if ino.Mode&0o010 != 0 {
		ino.Mode &^= syscall.S_ISGID
	}
}

// Write writes file data at off (append: at the end, as O_APPEND does),
// returning the count written.
func (f *FS) Write(c Cred, n Node, p []byte, off int64, appendMode bool) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	err := f.update([]Node{n}, func(tx *history.Tx) error {
		ino, err := tx.Inode(n.Obj)
		if err != nil {
			return err
		}
		switch ino.Kind {
		case history.KindFile:
		case history.KindDir:
			return syscall.EISDIR
		default:
			return syscall.EINVAL
		}
		if err := dataAccess(c, ino, AccessWrite); err != nil {
			return err
		}
		if appendMode {
			off = int64(ino.Size)
		}
		if uint64(off)+uint64(len(p)) > maxFileSize {
			return syscall.EFBIG
		}
		if len(p) == 0 {
			return nil // POSIX: no other results; the size and times stay
		}
		if err := tx.WriteAt(n.Obj, p, off); err != nil {
			return err
		}
		if ino, err = tx.Inode(n.Obj); err != nil {
			return err
		}
		now := f.now()
		ino.Mtime, ino.Ctime = now, now
		clearSetID(c, &ino)
		return tx.PutInode(n.Obj, ino)
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// chownMode is a file's mode after a chown: without setuid, and without
// setgid where group execute makes it mean "run as the group".
func chownMode(m uint32) uint32 {
	m &^= syscall.S_ISUID
	if m&0o010 != 0 {
		m &^= syscall.S_ISGID
	}
	return m
}

// maxFileSize keeps offsets inside int64 and chunk numbers sane.
const maxFileSize = 1 << 62

// Sync makes every change so far durable (fsync, NFS stable writes).
func (f *FS) Sync() error { return f.s.Durable() }

// openFiles counts opens of live objects so that a file unlinked while
// open stays readable through the open handle until the last close.
type openFiles struct {
	mu sync.Mutex
	n  map[history.ObjID]int
}

func (o *openFiles) isOpen(id history.ObjID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[id] > 0
}

// Open checks that c may open n for want (AccessRead, AccessWrite) and
// counts the open; every successful Open needs one Release.
func (f *FS) Open(c Cred, n Node, want uint32) error {
	_, ino, err := f.getattr(n)
	if err != nil {
		return err
	}
	if want&AccessWrite != 0 {
		if err := f.writable(n); err != nil {
			return err
		}
		if ino.Kind == history.KindDir {
			return syscall.EISDIR
		}
	}
	if err := access(c, ino, want); err != nil {
		return err
	}
	if n.Live() {
		f.open.mu.Lock()
		f.open.n[n.Obj]++
		f.open.mu.Unlock()
	}
	return nil
}

// Release ends an Open. The last close of a file with no names left ends
// the object.
func (f *FS) Release(n Node) error {
	if !n.Live() {
		return nil
	}
	f.open.mu.Lock()
	f.open.n[n.Obj]--
	last := f.open.n[n.Obj] <= 0
	if last {
		delete(f.open.n, n.Obj)
	}
	f.open.mu.Unlock()
	if !last || f.ReadOnly() {
		return nil
	}
	return f.s.Update(func(tx *history.Tx) error {
		ino, err := tx.Inode(n.Obj)
		if err != nil || ino.Nlink > 0 || ino.Kind == history.KindDir || f.open.isOpen(n.Obj) {
			return nil
		}
		if err := tx.DelMeta(orphanKey(n.Obj)); err != nil {
			return err
		}
		return tx.EndObject(n.Obj)
	})
}
