package fs

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/asof/asof/history"
)

// Statfs is what df shows: the disk under the store, and its objects.
type Statfs struct {
	Bytes, Free, Avail uint64
	Files, FreeFiles   uint64
	BlockSize          uint32
	NameMax            uint32
}

// Statfs reports the store's real figures: space from the file system the
// data directory lives on, files from the store's object count.
func (f *FS) Statfs() (Statfs, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(f.s.Dir(), &st); err != nil {
		return Statfs{}, fmt.Errorf("statfs %s: %w", f.s.Dir(), err)
	}
	stats, err := f.s.Stats(5 * time.Second)
	if err != nil {
		return Statfs{}, err
	}
	bs := uint64(st.Bsize)
	out := Statfs{
		Bytes: st.Blocks * bs, Free: st.Bfree * bs, Avail: st.Bavail * bs,
		Files: uint64(stats.Objects) + st.Ffree, FreeFiles: st.Ffree,
		BlockSize: uint32(bs), NameMax: NameMax,
	}
	return out, nil
}

// Stats is what asof stats reports (docs/SPEC.md section 4).
type Stats struct {
	LogicalBytes int64   `json:"logical_bytes"`
	StoredBytes  int64   `json:"stored_bytes"`
	BlockBytes   int64   `json:"block_bytes"`
	DedupRatio   float64 `json:"dedup_ratio"`
	Objects      int64   `json:"objects"`
	Records      int64   `json:"records"`
	Versions     int64   `json:"versions"`
	Oldest       Moment  `json:"oldest"`
	Newest       Moment  `json:"newest"`
}

// Stats reports the store's figures, fresh.
func (f *FS) Stats() (Stats, error) {
	st, err := f.s.Stats(0)
	if err != nil {
		return Stats{}, err
	}
	return Stats{LogicalBytes: st.LogicalBytes, StoredBytes: st.StoredBytes, BlockBytes: st.BlockBytes,
		DedupRatio: st.DedupRatio(), Objects: st.Objects, Records: st.Records, Versions: st.Versions,
		Oldest: Moment{st.Oldest.Time()}, Newest: Moment{st.Last.Time()}}, nil
}

// VersionInfo is one line of asof history.
type VersionInfo struct {
	TID    string `json:"tid"`
	Time   Moment `json:"time"`
	Size   uint64 `json:"size"`
	Change string `json:"change"`
}

// History lists the versions of the object at path, oldest first. A path
// that no longer exists names the object its last name in the live parent
// directory referred to, so a deleted file's history, deletion included,
// needs no @@ moment.
func (f *FS) History(c Cred, path string) ([]VersionInfo, error) {
	obj, err := f.historyObject(c, path)
	if err != nil {
		return nil, err
	}
	vs, err := f.s.Versions(obj)
	if err != nil {
		return nil, err
	}
	out := make([]VersionInfo, 0, len(vs))
	for _, v := range vs {
		out = append(out, VersionInfo{TID: FormatTID(uint64(v.TID)), Time: Moment{v.TID.Time()}, Size: v.Size, Change: v.Change.String()})
	}
	return out, nil
}

func (f *FS) historyObject(c Cred, path string) (history.ObjID, error) {
	n, err := f.Resolve(c, path)
	if err == nil || Errno(err) != syscall.ENOENT || strings.Contains(path, TimeSep) {
		return n.Obj, err
	}
	dir, name, perr := f.splitParent(c, path)
	if perr != nil || checkName(name) != nil {
		return 0, err
	}
	child, _, ok, lerr := f.s.LastEntry(dir.Obj, name)
	switch {
	case lerr != nil:
		return 0, lerr
	case !ok:
		return 0, err
	}
	return child, nil
}

// splitParent resolves the live directory a path's last name is in.
func (f *FS) splitParent(c Cred, path string) (Node, string, error) {
	dir, name := "", path
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			dir, name = path[:i], path[i+1:]
			break
		}
	}
	for name == "" && dir != "" { // trailing slashes
		return f.splitParent(c, dir)
	}
	d, err := f.Resolve(c, dir)
	if err != nil {
		return Node{}, "", err
	}
	if !d.Live() {
		return Node{}, "", syscall.EROFS
	}
	return d, name, nil
}

// Clone copies src (a live or historical path) to the live path dst in time
// proportional to its metadata: every data block is shared, no data is
// read or written. The copy is independent: changing it never changes src.
func (f *FS) Clone(c Cred, src, dst string) (Node, error) {
	sn, err := f.Resolve(c, src)
	if err != nil {
		return Node{}, fmt.Errorf("clone source %s: %w", src, err)
	}
	dir, name, err := f.splitParent(c, dst)
	if err != nil {
		return Node{}, fmt.Errorf("clone destination %s: %w", dst, err)
	}
	if err := checkName(name); err != nil {
		return Node{}, fmt.Errorf("clone destination %s: %w", dst, err)
	}
	at, err := f.committedMoment(sn)
	if err != nil {
		return Node{}, err
	}
	var out Node
	err = f.copyPast(dir, func(tx *history.Tx) error {
		if _, err := dirFor(tx, c, dir.Obj); err != nil {
			return err
		}
		if _, _, err := tx.Lookup(dir.Obj, name); err == nil {
			return syscall.EEXIST
		} else if !errors.Is(err, history.ErrNotFound) {
			return err
		}
		cl := cloner{f: f, tx: tx, c: c, at: at, made: map[history.ObjID]history.ObjID{}, links: map[history.ObjID]uint32{}}
		id, k, err := cl.clone(sn.Obj, dir.Obj)
		if err != nil {
			return err
		}
		if err := cl.fixLinks(); err != nil {
			return err
		}
		if err := tx.SetDirent(dir.Obj, name, id, k); err != nil {
			return err
		}
		delta := 0
		if k == history.KindDir {
			delta = 1
		}
		out = Node{Obj: id, At: history.Live}
		return f.touch(tx, dir.Obj, delta)
	})
	return out, err
}

// copyPast runs a change that copies a past moment (clone, restore) with
// the engine's cleaner held off, and commits it before letting go: until
// then the copy refers to that moment's blocks by hash, and a cleaner pass
// that let the moment go could free them.
func (f *FS) copyPast(dir Node, change func(tx *history.Tx) error) error {
	release := f.s.HoldCleaner()
	defer release()
	if err := f.update([]Node{dir}, change); err != nil {
		return err
	}
	if _, err := f.s.Commit(); err != nil {
		return fmt.Errorf("the copy is made but its commit failed (retried every flush interval): %w", err)
	}
	return nil
}

// committedMoment is the moment to copy n from: its own for the past, and
// for the live tree the newest state, committed first so every block of it
// is stored.
func (f *FS) committedMoment(n Node) (history.TID, error) {
	if n.Versions {
		return 0, syscall.EISDIR
	}
	if !n.Live() {
		return n.At, nil
	}
	return f.s.Commit()
}

// cloner copies a tree as of one moment inside one transaction. Hard links
// inside the tree stay links in the copy.
type cloner struct {
	f     *FS
	tx    *history.Tx
	c     Cred
	at    history.TID
	made  map[history.ObjID]history.ObjID // source object -> its copy
	links map[history.ObjID]uint32        // copy -> names it got
}

func (cl *cloner) clone(src, parent history.ObjID) (history.ObjID, history.Kind, error) {
	tx := cl.tx
	if id, ok := cl.made[src]; ok {
		cl.links[id]++
		ino, err := tx.InodeAt(src, cl.at)
		return id, ino.Kind, err
	}
	ino, err := tx.InodeAt(src, cl.at)
	if err != nil {
		return 0, 0, err
	}
	if cl.c.Uid != 0 {
		// A copy needs what cp needs: read (and search) permission.
		want := uint32(AccessRead)
		if ino.Kind == history.KindDir {
			want |= AccessExec
		}
		if err := access(cl.c, ino, want); err != nil {
			return 0, 0, err
		}
	}
	now := cl.f.now()
	copyIno := ino
	copyIno.Ctime, copyIno.Btime = now, now
	if cl.c.Uid != 0 {
		// As cp does for anyone but root: the copy is the caller's, and no
		// program becomes setuid someone else.
		copyIno.Uid, copyIno.Gid = cl.c.Uid, cl.c.Gid
		copyIno.Mode &^= syscall.S_ISUID | syscall.S_ISGID
	}
	if copyIno.Kind != history.KindDir {
		copyIno.Nlink = 1
	}
	id, err := cl.tx.NewObject(copyIno)
	if err != nil {
		return 0, 0, err
	}
	cl.made[src] = id
	cl.links[id] = 1
	switch ino.Kind {
	case history.KindFile:
		if err := cl.tx.CopyData(id, src, cl.at); err != nil {
			return 0, 0, err
		}
	case history.KindSymlink:
		target, err := tx.ReadlinkAt(src, cl.at)
		if err != nil {
			return 0, 0, err
		}
		if err := cl.tx.SetSymlink(id, target); err != nil {
			return 0, 0, err
		}
	case history.KindDir:
		if err := cl.tx.SetDirent(id, "..", parent, history.KindDir); err != nil {
			return 0, 0, err
		}
		var ents []Dirent
		err := tx.ReadDirAt(src, cl.at, func(name string, child history.ObjID, k history.Kind) bool {
			if name != ".." {
				ents = append(ents, Dirent{Name: name, Node: Node{Obj: child}, Kind: k})
			}
			return true
		})
		if err != nil {
			return 0, 0, err
		}
		for _, e := range ents {
			cid, ck, err := cl.clone(e.Node.Obj, id)
			if err != nil {
				return 0, 0, err
			}
			if err := cl.tx.SetDirent(id, e.Name, cid, ck); err != nil {
				return 0, 0, err
			}
		}
	}
	xattrs, err := tx.XattrsAt(src, cl.at)
	if err != nil {
		return 0, 0, err
	}
	for n, v := range xattrs {
		if err := cl.tx.SetXattr(id, n, v); err != nil {
			return 0, 0, err
		}
	}
	return id, ino.Kind, nil
}

// fixLinks sets the link count of files linked more than once in the copy.
func (cl *cloner) fixLinks() error {
	for id, n := range cl.links {
		if n <= 1 {
			continue
		}
		ino, err := cl.tx.Inode(id)
		if err != nil {
			return err
		}
		if ino.Kind == history.KindDir {
			continue
		}
		ino.Nlink = n
		if err := cl.tx.PutInode(id, ino); err != nil {
			return err
		}
	}
	return nil
}

// Commit makes every change made so far one committed transaction now,
// rather than at the next flush interval, and returns the newest committed
// transaction id: a moment that names all of them.
func (f *FS) Commit() (history.TID, error) { return f.s.Commit() }
