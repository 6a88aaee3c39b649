package fs

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/asof/asof/history"
)

// getattr reads n's attributes with the inode they came from.
func (f *FS) getattr(n Node) (Attr, history.Inode, error) {
	if n.Versions {
		return f.versionsAttr(n)
	}
	ino, err := f.s.Inode(n.Obj, n.At)
	if err != nil {
		return Attr{}, history.Inode{}, gone(n, err)
	}
	return attrOf(n, ino), ino, nil
}

// gone says which object a lookup of n's inode did not find, as ENOENT.
func gone(n Node, err error) error {
	if errors.Is(err, history.ErrNotFound) {
		return fmt.Errorf("object %d: %w", n.Obj, syscall.ENOENT)
	}
	return err
}

// Getattr is stat.
func (f *FS) Getattr(n Node) (Attr, error) {
	a, _, err := f.getattr(n)
	return a, err
}

func attrOf(n Node, ino history.Inode) Attr {
	a := Attr{
		Ino: n.Ino(), Kind: ino.Kind, Mode: ino.Mode, Nlink: ino.Nlink, Uid: ino.Uid, Gid: ino.Gid,
		Size: ino.Size, Rdev: ino.Rdev,
		Atime: time.Unix(0, ino.Atime), Mtime: time.Unix(0, ino.Mtime), Ctime: time.Unix(0, ino.Ctime), Btime: time.Unix(0, ino.Btime),
		Version: uint64(ino.Ctime),
	}
	if !n.Live() {
		// The past never changes: one version for ever.
		a.Version = uint64(n.At)
	}
	return a
}

// versionsAttr describes name@@, the directory of name's versions: read
// only, owned as the object is, as new as its newest version.
func (f *FS) versionsAttr(n Node) (Attr, history.Inode, error) {
	vs, err := f.versions(n.Obj)
	if err != nil {
		return Attr{}, history.Inode{}, err
	}
	if len(vs) == 0 {
		return Attr{}, history.Inode{}, syscall.ENOENT
	}
	last := vs[len(vs)-1]
	ino, err := f.s.Inode(n.Obj, last.TID)
	if err != nil {
		return Attr{}, history.Inode{}, err
	}
	t := last.TID.Time()
	dir := history.Inode{Kind: history.KindDir, Mode: 0o555, Uid: ino.Uid, Gid: ino.Gid, Nlink: 2,
		Size: uint64(len(vs)), Atime: t.UnixNano(), Mtime: t.UnixNano(), Ctime: t.UnixNano(), Btime: ino.Btime}
	return attrOf(n, dir), dir, nil
}

// versions lists the moments at which obj existed and changed.
func (f *FS) versions(obj history.ObjID) ([]history.Version, error) {
	all, err := f.s.Versions(obj)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, v := range all {
		if v.Change&history.ChangeDeleted == 0 {
			out = append(out, v)
		}
	}
	return out, nil
}

// moment maps a WHEN to the transaction whose state it names: the newest
// committed at or before it (the future is now: the newest of all). Every
// WHEN that names the same state gives the same node, and so the same inode
// numbers. Before the store's first transaction there is nothing: ENOENT.
func (f *FS) moment(tid uint64) (history.TID, error) {
	at, ok, err := f.s.Moment(history.TID(tid))
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, syscall.ENOENT
	}
	return at, nil
}

// ParseWhen parses a WHEN in this file system's zone and clock, logging
// why a malformed one was refused.
func (f *FS) ParseWhen(when string) (When, error) {
	w, err := ParseWhen(when, f.opts.Clock(), f.opts.Location)
	if err != nil {
		f.log.Warn("refused a malformed @@ time", "when", when, "err", err)
		return When{}, fmt.Errorf("%w: %w", syscall.EINVAL, err)
	}
	return w, nil
}

// Lookup finds name in dir. name may carry @@WHEN (docs/SPEC.md section
// 3): name@@WHEN is name as it stood then, @@WHEN alone is dir as of then,
// and name@@ is the directory of name's versions.
func (f *FS) Lookup(c Cred, dir Node, name string) (Node, error) {
	if dir.Versions {
		return f.lookupVersion(dir, name)
	}
	da, _, err := f.getattr(dir)
	if err != nil {
		return Node{}, err
	}
	return f.LookupIn(c, dir, da, name)
}

// LookupIn is Lookup in a directory whose attributes da the caller has just
// read with Getattr: an NFS reply carries them, and so they are read once.
func (f *FS) LookupIn(c Cred, dir Node, da Attr, name string) (Node, error) {
	if dir.Versions {
		return f.lookupVersion(dir, name)
	}
	if da.Kind != history.KindDir {
		return Node{}, syscall.ENOTDIR
	}
	if err := access(c, history.Inode{Kind: da.Kind, Mode: da.Mode, Uid: da.Uid, Gid: da.Gid}, AccessExec); err != nil {
		return Node{}, err
	}
	base, when, has := SplitWhen(name)
	if len(base) > NameMax {
		return Node{}, syscall.ENAMETOOLONG
	}
	if !has {
		if name == "" {
			// No name names nothing (knfsd refuses it too); paths skip
			// empty components before they get here.
			return Node{}, syscall.ENOENT
		}
		return f.lookupPlain(dir, name)
	}
	w, err := f.ParseWhen(when)
	if err != nil {
		return Node{}, err
	}
	target := dir
	if w.Versions {
		if base != "" {
			if target, err = f.lookupPlain(dir, base); err != nil {
				return Node{}, err
			}
		}
		n := Node{Obj: target.Obj, At: history.Live, Versions: true}
		if _, _, err := f.getattr(n); err != nil {
			return Node{}, err
		}
		return n, nil
	}
	at, err := f.moment(w.TID)
	if err != nil {
		return Node{}, err
	}
	then := Node{Obj: dir.Obj, At: at}
	if base != "" {
		// The name as it stood then: look it up in the directory as of then,
		// so a file renamed or deleted since is found under its old name.
		return f.lookupPlain(then, base)
	}
	if _, _, err := f.getattr(then); err != nil {
		return Node{}, err
	}
	return then, nil
}

// lookupVersion finds a version in name@@, the directory of dir.Obj's
// versions.
func (f *FS) lookupVersion(dir Node, name string) (Node, error) {
	if len(name) > NameMax {
		return Node{}, syscall.ENAMETOOLONG
	}
	tid, ok := ParseVersionName(name)
	if !ok {
		return Node{}, syscall.ENOENT
	}
	n := Node{Obj: dir.Obj, At: history.TID(tid)}
	if _, _, err := f.getattr(n); err != nil {
		return Node{}, err
	}
	return n, nil
}

func (f *FS) lookupPlain(dir Node, name string) (Node, error) {
	switch name {
	case "", ".":
		return dir, nil
	case "..":
		if dir.Obj == history.RootID {
			return dir, nil
		}
	}
	child, _, err := f.s.Lookup(dir.Obj, name, dir.At)
	if err != nil {
		if errors.Is(err, history.ErrNotFound) {
			return Node{}, syscall.ENOENT
		}
		return Node{}, err
	}
	return Node{Obj: child, At: dir.At}, nil
}

// Resolve walks a slash-separated path from the live root. Any component
// may carry @@WHEN; everything below a historical component is of the same
// moment. It serves NFS MOUNT, 9P attach and the admin commands.
func (f *FS) Resolve(c Cred, path string) (Node, error) {
	if len(path) > PathMax {
		return Node{}, syscall.ENAMETOOLONG
	}
	n := f.Root()
	for _, comp := range strings.Split(path, "/") {
		if comp == "" || comp == "." {
			continue
		}
		var err error
		if n, err = f.Lookup(c, n, comp); err != nil {
			return Node{}, err
		}
	}
	return n, nil
}

// DotDot is the entry a listing of dir shows as "..": its parent, or dir
// itself where it has none to show (the root, a name@@ versions directory,
// a directory removed while listed), as a local file system does at its
// root. Both protocols list ".." through it.
func (f *FS) DotDot(c Cred, dir Node) (Node, Attr, error) {
	if !dir.Versions {
		if parent, err := f.Lookup(c, dir, ".."); err == nil {
			if a, err := f.Getattr(parent); err == nil {
				return parent, a, nil
			}
		}
	}
	a, err := f.Getattr(dir)
	return dir, a, err
}

// Dirent is one entry of a listing.
type Dirent struct {
	Name string
	Node Node
	Kind history.Kind
}

// ReadDir lists dir's entries whose names sort after after, in name order,
// until fn returns false. "." and ".." are not listed; the caller adds them
// where its protocol wants them. Names never carry @@.
func (f *FS) ReadDir(c Cred, dir Node, after string, fn func(Dirent) bool) error {
	if dir.Versions {
		vs, err := f.versions(dir.Obj)
		if err != nil {
			return err
		}
		for _, v := range vs {
			name := FormatVersionName(uint64(v.TID))
			if name <= after {
				continue
			}
			ino, err := f.s.Inode(dir.Obj, v.TID)
			if err != nil {
				continue
			}
			if !fn(Dirent{Name: name, Node: Node{Obj: dir.Obj, At: v.TID}, Kind: ino.Kind}) {
				return nil
			}
		}
		return nil
	}
	_, dino, err := f.getattr(dir)
	if err != nil {
		return err
	}
	if dino.Kind != history.KindDir {
		return syscall.ENOTDIR
	}
	if err := access(c, dino, AccessRead); err != nil {
		return err
	}
	return f.s.ReadDir(dir.Obj, after, dir.At, func(name string, child history.ObjID, k history.Kind) bool {
		if name == ".." {
			return true
		}
		return fn(Dirent{Name: name, Node: Node{Obj: child, At: dir.At}, Kind: k})
	})
}

// Read reads file data.
func (f *FS) Read(c Cred, n Node, p []byte, off int64) (int, error) {
	k, _, err := f.ReadAttr(c, n, p, off)
	return k, err
}

// ReadAttr is Read that also returns the file's attributes as of the data
// read (an NFS READ reply carries them).
func (f *FS) ReadAttr(c Cred, n Node, p []byte, off int64) (int, Attr, error) {
	v, a, err := f.ReadView(c, n, off, len(p), false)
	if err != nil {
		return 0, a, err
	}
	defer v.Release()
	k, err := v.CopyTo(p)
	if err != nil {
		return 0, a, err
	}
	return k, a, nil
}

// ErrWouldBlock: a read asked not to wait for the disk would have to.
var ErrWouldBlock = history.ErrWouldBlock

// A View is data read in place (history.View): the caller sends or copies
// it and then releases it.
type View = history.View

// ReadView reads up to count bytes from off as a View of where the data
// lies, with the file's attributes as of the data, for a server that
// sends the data on without copying it. With nowait it does not wait for
// the disk: ErrWouldBlock where the data is not in memory (nothing is read
// then, nor checked). The engine reads the attributes with the data, in
// one lookup, so the checks come after the read; a refused read's view is
// released here.
func (f *FS) ReadView(c Cred, n Node, off int64, count int, nowait bool) (View, Attr, error) {
	if n.Versions {
		a, _, err := f.getattr(n)
		if err != nil {
			return View{}, Attr{}, err
		}
		return View{}, a, syscall.EISDIR
	}
	if off < 0 || count < 0 {
		return View{}, Attr{}, syscall.EINVAL
	}
	v, ino, err := f.s.ReadView(n.Obj, off, count, n.At, nowait)
	if err != nil {
		return View{}, Attr{}, gone(n, err)
	}
	a := attrOf(n, ino)
	switch ino.Kind {
	case history.KindFile:
		err = dataAccess(c, ino, AccessRead)
	case history.KindDir:
		err = syscall.EISDIR
	default:
		err = syscall.EINVAL
	}
	if err != nil {
		v.Release()
		return View{}, a, err
	}
	if n.Live() {
		f.touchAtime(n, ino)
	}
	return v, a, nil
}

// touchAtime updates the access time as Linux's relatime does: when it is
// older than the last change or a day old. Every update is a version, so
// plain noatime-free reads must not make one each.
func (f *FS) touchAtime(n Node, ino history.Inode) {
	now := f.now()
	if f.ReadOnly() || (ino.Atime >= ino.Mtime && ino.Atime >= ino.Ctime && now-ino.Atime < int64(24*time.Hour)) {
		return
	}
	err := f.s.Update(func(tx *history.Tx) error { return tx.SetAtime(n.Obj, now) })
	if err != nil && !errors.Is(err, history.ErrNotFound) {
		f.log.Warn("atime update failed", "obj", n.Obj, "err", err)
	}
}

// Readlink reads a symlink's target.
func (f *FS) Readlink(n Node) (string, error) {
	_, ino, err := f.getattr(n)
	if err != nil {
		return "", err
	}
	if ino.Kind != history.KindSymlink {
		return "", syscall.EINVAL
	}
	return f.s.Readlink(n.Obj, n.At)
}
