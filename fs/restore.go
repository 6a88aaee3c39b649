package fs

import (
	"errors"
	"strings"
	"syscall"

	"github.com/asof/asof/history"
)

// Restore makes the live path what path@@WHEN was: a new change, so history
// keeps the state it replaces. The argument is the historical path, e.g.
// docs@@2007-08-06 or docs/a.txt@@/2007-08-06T13:56:07.123456789Z.
func (f *FS) Restore(c Cred, histPath string) (Node, error) {
	if c.Uid != 0 {
		// A restore rewrites a whole tree, owners and modes included: an
		// administrator's act (asof restore, over the control socket).
		return Node{}, syscall.EPERM
	}
	hist, err := f.Resolve(c, histPath)
	if err != nil {
		return Node{}, err
	}
	if hist.Live() {
		return Node{}, errNotHistorical
	}
	if hist.Versions {
		return Node{}, syscall.EISDIR
	}
	livePath := LivePath(histPath)
	dir, name, err := f.splitParent(c, livePath)
	if err != nil {
		return Node{}, err
	}
	if name == "" {
		// The root itself: restore it in place.
		err := f.copyPast(dir, func(tx *history.Tx) error {
			r := newRestorer(f, tx, c, hist.At)
			if err := r.restoreInPlace(history.RootID, hist.Obj); err != nil {
				return err
			}
			return r.cl.fixLinks()
		})
		return f.Root(), err
	}
	var out Node
	err = f.copyPast(dir, func(tx *history.Tx) error {
		if _, err := dirFor(tx, c, dir.Obj); err != nil {
			return err
		}
		r := newRestorer(f, tx, c, hist.At)
		id, err := r.entry(dir.Obj, name, hist.Obj)
		if err != nil {
			return err
		}
		out = Node{Obj: id, At: history.Live}
		return r.cl.fixLinks()
	})
	return out, err
}

var errNotHistorical error = invalid("restore needs a path with @@WHEN, such as docs@@2007-08-06")

// invalid is a refusal whose message says what to do, and whose errno is
// EINVAL: the request, not the store, is wrong.
type invalid string

func (e invalid) Error() string { return string(e) }
func (e invalid) Unwrap() error { return syscall.EINVAL }

// LivePath strips the time travel out of a path: docs@@2007-08-06/a.txt is
// docs/a.txt, dir/@@-1h is dir, a.txt@@/<version> is a.txt.
func LivePath(p string) string {
	var out []string
	skipVersion := false
	for _, comp := range strings.Split(p, "/") {
		if skipVersion {
			skipVersion = false
			if _, ok := ParseVersionName(comp); ok {
				continue
			}
		}
		base, when, has := SplitWhen(comp)
		if has && when == "" {
			skipVersion = true
		}
		if base != "" || !has {
			out = append(out, base)
		}
	}
	return strings.Join(out, "/")
}

type restorer struct {
	f  *FS
	tx *history.Tx
	c  Cred
	at history.TID
	// One copier for the whole restore, and the objects restored in
	// place, so that hard links inside the tree stay links.
	cl      *cloner
	inPlace map[history.ObjID]history.ObjID
}

func newRestorer(f *FS, tx *history.Tx, c Cred, at history.TID) *restorer {
	return &restorer{f: f, tx: tx, c: c, at: at, inPlace: map[history.ObjID]history.ObjID{},
		cl: &cloner{f: f, tx: tx, c: c, at: at, made: map[history.ObjID]history.ObjID{}, links: map[history.ObjID]uint32{}}}
}

// entry makes name in the live directory dir what the historical object
// then was: in place when it is the same object, else by removing what is
// there and cloning the old object in.
func (r *restorer) entry(dir history.ObjID, name string, then history.ObjID) (history.ObjID, error) {
	cur, _, err := r.tx.Lookup(dir, name)
	if live, ok := r.inPlace[then]; ok && (err != nil || cur != live) {
		// Another name of an object this restore already brought back in
		// place: link it again.
		if err == nil {
			if err := r.removeTree(dir, name, cur); err != nil {
				return 0, err
			}
		}
		return live, r.relink(dir, name, live)
	}
	switch {
	case err == nil && cur == then:
		if _, done := r.inPlace[then]; done {
			return cur, nil
		}
		return cur, r.restoreInPlace(cur, then)
	case err == nil:
		if err := r.removeTree(dir, name, cur); err != nil {
			return 0, err
		}
	case !errors.Is(err, history.ErrNotFound):
		return 0, err
	}
	id, k, err := r.cl.clone(then, dir)
	if err != nil {
		return 0, err
	}
	if err := r.tx.SetDirent(dir, name, id, k); err != nil {
		return 0, err
	}
	delta := 0
	if k == history.KindDir {
		delta = 1
	}
	return id, r.f.touch(r.tx, dir, delta)
}

// relink gives the live object id one more name.
func (r *restorer) relink(dir history.ObjID, name string, id history.ObjID) error {
	ino, err := r.tx.Inode(id)
	if err != nil {
		return err
	}
	if err := r.tx.SetDirent(dir, name, id, ino.Kind); err != nil {
		return err
	}
	ino.Nlink++
	ino.Ctime = r.f.now()
	if err := r.tx.PutInode(id, ino); err != nil {
		return err
	}
	return r.f.touch(r.tx, dir, 0)
}

// restoreInPlace restores the live object id to the state of then as of
// r.at.
func (r *restorer) restoreInPlace(id, then history.ObjID) error {
	r.inPlace[then] = id
	tx := r.tx
	old, err := tx.InodeAt(then, r.at)
	if err != nil {
		return err
	}
	cur, err := tx.Inode(id)
	if err != nil {
		return err
	}
	if cur.Kind != old.Kind {
		return syscall.EEXIST
	}
	switch old.Kind {
	case history.KindFile:
		if err := tx.CopyData(id, then, r.at); err != nil {
			return err
		}
	case history.KindSymlink:
		target, err := tx.ReadlinkAt(then, r.at)
		if err != nil {
			return err
		}
		if err := tx.SetSymlink(id, target); err != nil {
			return err
		}
	case history.KindDir:
		if err := r.entries(id, then); err != nil {
			return err
		}
	}
	if err := r.xattrs(id, then); err != nil {
		return err
	}
	if cur, err = tx.Inode(id); err != nil {
		return err
	}
	cur.Mode, cur.Uid, cur.Gid, cur.Atime, cur.Mtime = old.Mode, old.Uid, old.Gid, old.Atime, old.Mtime
	cur.Ctime = r.f.now()
	return tx.PutInode(id, cur)
}

func (r *restorer) entries(dir, then history.ObjID) error {
	tx := r.tx
	past := map[string]history.ObjID{}
	var names []string
	err := tx.ReadDirAt(then, r.at, func(name string, child history.ObjID, _ history.Kind) bool {
		if name != ".." {
			past[name] = child
			names = append(names, name)
		}
		return true
	})
	if err != nil {
		return err
	}
	type ent struct {
		name string
		id   history.ObjID
	}
	var live []ent
	err = tx.ReadDir(dir, "", func(name string, child history.ObjID, _ history.Kind) bool {
		if name != ".." {
			live = append(live, ent{name, child})
		}
		return true
	})
	if err != nil {
		return err
	}
	for _, e := range live {
		if past[e.name] != e.id {
			if err := r.removeTree(dir, e.name, e.id); err != nil {
				return err
			}
		}
	}
	for _, name := range names {
		if _, err := r.entry(dir, name, past[name]); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) xattrs(id, then history.ObjID) error {
	old, err := r.tx.XattrsAt(then, r.at)
	if err != nil {
		return err
	}
	cur, err := r.tx.Xattrs(id)
	if err != nil {
		return err
	}
	for _, n := range cur {
		if _, ok := old[n]; !ok {
			if err := r.tx.RemoveXattr(id, n); err != nil {
				return err
			}
		}
	}
	for n, v := range old {
		if err := r.tx.SetXattr(id, n, v); err != nil {
			return err
		}
	}
	return nil
}

// removeTree unlinks name from dir, emptying it first when it is a
// directory. History keeps all of it.
func (r *restorer) removeTree(dir history.ObjID, name string, id history.ObjID) error {
	ino, err := r.tx.Inode(id)
	if err != nil {
		return err
	}
	if ino.Kind == history.KindDir {
		type ent struct {
			name string
			id   history.ObjID
		}
		var kids []ent
		err := r.tx.ReadDir(id, "", func(n string, child history.ObjID, _ history.Kind) bool {
			if n != ".." {
				kids = append(kids, ent{n, child})
			}
			return true
		})
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := r.removeTree(id, k.name, k.id); err != nil {
				return err
			}
		}
		if ino, err = r.tx.Inode(id); err != nil {
			return err
		}
	}
	return r.f.unlink(r.tx, dir, name, id, ino)
}
