package nfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"github.com/willscott/go-nfs/file"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// go-nfs speaks to a path-based billy.Filesystem. asof's handles name
// objects, not paths, so the paths go-nfs builds start with an object
// token: a component "\x00obj.at.v" (NUL never occurs in a real name) that
// stands for that object as of that moment, wherever it lives now. A path
// is then resolved token first, name by name through fs.Lookup, which is
// where every rule (@@, permissions, ".." ) lives.
//
// There is one live filesystem value and one read-only value for the past
// (go-nfs compares them with reflect.DeepEqual to allow a rename, and
// answers ROFS when the value lacks the write capability).
type billyFS struct {
	f    *fs.FS
	cred fs.Cred
	live bool
	root fs.Node // what an empty path means (the mounted node)
}

func token(n fs.Node) string {
	v := 0
	if n.Versions {
		v = 1
	}
	return fmt.Sprintf("\x00%x.%x.%d", uint64(n.Obj), uint64(n.At), v)
}

func parseToken(s string) (fs.Node, bool) {
	if len(s) == 0 || s[0] != 0 {
		return fs.Node{}, false
	}
	parts := strings.Split(s[1:], ".")
	if len(parts) != 3 {
		return fs.Node{}, false
	}
	obj, err1 := strconv.ParseUint(parts[0], 16, 64)
	at, err2 := strconv.ParseUint(parts[1], 16, 64)
	if err1 != nil || err2 != nil {
		return fs.Node{}, false
	}
	return fs.Node{Obj: history.ObjID(obj), At: history.TID(at), Versions: parts[2] == "1"}, true
}

// pathErr gives go-nfs an error it can classify: it asks os.IsNotExist and
// os.IsPermission, which look through *os.PathError only.
func pathErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: op, Path: printable(path), Err: fs.Errno(err)}
}

func printable(p string) string { return strings.ReplaceAll(p, "\x00", "#") }

// resolve walks a go-nfs path to a node.
func (b *billyFS) resolve(p string) (fs.Node, error) {
	n := b.root
	if p == "" {
		return n, b.exists(n)
	}
	for _, comp := range strings.Split(p, "/") {
		if t, ok := parseToken(comp); ok {
			n = t
			if err := b.exists(n); err != nil {
				return fs.Node{}, err
			}
			continue
		}
		if comp == "" {
			continue
		}
		var err error
		if n, err = b.f.Lookup(b.cred, n, comp); err != nil {
			return fs.Node{}, err
		}
	}
	return n, nil
}

func (b *billyFS) exists(n fs.Node) error {
	_, err := b.f.Getattr(n)
	return err
}

// parent splits a path into the directory node and the last name.
func (b *billyFS) parent(p string) (fs.Node, string, error) {
	i := strings.LastIndexByte(p, '/')
	dir, name := "", p
	if i >= 0 {
		dir, name = p[:i], p[i+1:]
	}
	d, err := b.resolve(dir)
	return d, name, err
}

func (b *billyFS) Join(elem ...string) string { return strings.Join(elem, "/") }

func (b *billyFS) Capabilities() billy.Capability {
	c := billy.ReadCapability | billy.SeekCapability
	if b.live && !b.f.ReadOnly() {
		c |= billy.WriteCapability | billy.ReadAndWriteCapability | billy.TruncateCapability
	}
	return c
}

func (b *billyFS) Stat(p string) (os.FileInfo, error) { return b.Lstat(p) }

func (b *billyFS) Lstat(p string) (os.FileInfo, error) {
	n, err := b.resolve(p)
	if err != nil {
		return nil, pathErr("stat", p, err)
	}
	a, err := b.f.Getattr(n)
	if err != nil {
		return nil, pathErr("stat", p, err)
	}
	return &fileInfo{name: baseName(p), a: a}, nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	if len(p) > 0 && p[0] == 0 {
		return "."
	}
	return p
}

func (b *billyFS) ReadDir(p string) ([]os.FileInfo, error) {
	n, err := b.resolve(p)
	if err != nil {
		return nil, pathErr("readdir", p, err)
	}
	var out []os.FileInfo
	var aerr error
	err = b.f.ReadDir(b.cred, n, "", func(e fs.Dirent) bool {
		a, err := b.f.Getattr(e.Node)
		if err != nil {
			aerr = err
			return false
		}
		out = append(out, &fileInfo{name: e.Name, a: a})
		return true
	})
	if err == nil {
		err = aerr
	}
	return out, pathErr("readdir", p, err)
}

func (b *billyFS) Readlink(p string) (string, error) {
	n, err := b.resolve(p)
	if err != nil {
		return "", pathErr("readlink", p, err)
	}
	t, err := b.f.Readlink(n)
	return t, pathErr("readlink", p, err)
}

// Open, Create and OpenFile refuse: go-nfs opens a file only to serve
// READ, WRITE, CREATE and a SETATTR of the size, which the interposer
// answers itself (procs.go, data.go).
func (b *billyFS) Open(p string) (billy.File, error) { return b.OpenFile(p, os.O_RDONLY, 0) }

func (b *billyFS) Create(p string) (billy.File, error) {
	return b.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
}

func (b *billyFS) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	return nil, pathErr("open", p, syscall.ENOTSUP)
}

func (b *billyFS) Rename(from, to string) error {
	sd, sn, err := b.parent(from)
	if err != nil {
		return pathErr("rename", from, err)
	}
	dd, dn, err := b.parent(to)
	if err != nil {
		return pathErr("rename", to, err)
	}
	return pathErr("rename", from, b.syncAfter(b.f.Rename(b.cred, sd, sn, dd, dn)))
}

func (b *billyFS) Remove(p string) error {
	dir, name, err := b.parent(p)
	if err != nil {
		return pathErr("remove", p, err)
	}
	n, err := b.f.Lookup(b.cred, dir, name)
	if err != nil {
		return pathErr("remove", p, err)
	}
	a, err := b.f.Getattr(n)
	if err != nil {
		return pathErr("remove", p, err)
	}
	return pathErr("remove", p, b.syncAfter(b.f.Remove(b.cred, dir, name, a.Kind == history.KindDir)))
}

func (b *billyFS) MkdirAll(p string, perm os.FileMode) error {
	dir, name, err := b.parent(p)
	if err != nil {
		return pathErr("mkdir", p, err)
	}
	_, err = b.f.Mkdir(b.cred, dir, name, uint32(perm.Perm()))
	return pathErr("mkdir", p, b.syncAfter(err))
}

func (b *billyFS) Symlink(target, link string) error {
	dir, name, err := b.parent(link)
	if err != nil {
		return pathErr("symlink", link, err)
	}
	_, err = b.f.Symlink(b.cred, dir, name, target)
	return pathErr("symlink", link, b.syncAfter(err))
}

func (b *billyFS) TempFile(dir, prefix string) (billy.File, error) {
	return nil, pathErr("tempfile", dir, syscall.ENOTSUP)
}

func (b *billyFS) Chroot(p string) (billy.Filesystem, error) {
	n, err := b.resolve(p)
	if err != nil {
		return nil, pathErr("chroot", p, err)
	}
	c := *b
	c.root = n
	return &c, nil
}

func (b *billyFS) Root() string { return "/" }

// The billy.Change and go-nfs UnixChange methods: attribute changes.

func (b *billyFS) setattr(op, p string, s fs.SetAttr) error {
	n, err := b.resolve(p)
	if err != nil {
		return pathErr(op, p, err)
	}
	_, err = b.f.Setattr(b.cred, n, s)
	return pathErr(op, p, b.syncAfter(err))
}

func (b *billyFS) Chmod(p string, mode os.FileMode) error {
	m := uint32(mode.Perm())
	if mode&os.ModeSetuid != 0 {
		m |= syscall.S_ISUID
	}
	if mode&os.ModeSetgid != 0 {
		m |= syscall.S_ISGID
	}
	if mode&os.ModeSticky != 0 {
		m |= syscall.S_ISVTX
	}
	return b.setattr("chmod", p, fs.SetAttr{Mode: &m})
}

func (b *billyFS) Lchown(p string, uid, gid int) error {
	u, g := uint32(uid), uint32(gid)
	return b.setattr("chown", p, fs.SetAttr{Uid: &u, Gid: &g})
}

func (b *billyFS) Chown(p string, uid, gid int) error { return b.Lchown(p, uid, gid) }

func (b *billyFS) Chtimes(p string, atime, mtime time.Time) error {
	return b.setattr("chtimes", p, fs.SetAttr{Atime: &atime, Mtime: &mtime})
}

func (b *billyFS) mknod(p string, a fs.NewAttr) error {
	dir, name, err := b.parent(p)
	if err != nil {
		return pathErr("mknod", p, err)
	}
	_, err = b.f.Mknod(b.cred, dir, name, a)
	return pathErr("mknod", p, b.syncAfter(err))
}

func (b *billyFS) Mknod(p string, mode uint32, major, minor uint32) error {
	k := history.KindChar
	if mode&syscall.S_IFMT == syscall.S_IFBLK {
		k = history.KindBlock
	}
	return b.mknod(p, fs.NewAttr{Kind: k, Mode: mode & 0o7777, Rdev: uint64(major)<<32 | uint64(minor)})
}

func (b *billyFS) Mkfifo(p string, mode uint32) error {
	return b.mknod(p, fs.NewAttr{Kind: history.KindFifo, Mode: mode & 0o7777})
}

func (b *billyFS) Socket(p string) error {
	return b.mknod(p, fs.NewAttr{Kind: history.KindSocket, Mode: 0o755})
}

// Link is go-nfs's LINK path; its decoding of LINK is wrong, so the
// interposer answers LINK itself, but keep the method right.
func (b *billyFS) Link(target, link string) error {
	n, err := b.resolve(target)
	if err != nil {
		return pathErr("link", target, err)
	}
	dir, name, err := b.parent(link)
	if err != nil {
		return pathErr("link", link, err)
	}
	return pathErr("link", link, b.syncAfter(b.f.Link(b.cred, n, dir, name)))
}

// syncAfter makes a successful change durable before go-nfs replies: NFS
// clients take a reply as the promise that the change is on stable storage.
func (b *billyFS) syncAfter(err error) error {
	if err != nil {
		return err
	}
	return b.f.Sync()
}

// fileInfo carries the attributes go-nfs turns into fattr3; Sys gives it
// the inode number, link count and owner.
type fileInfo struct {
	name string
	a    fs.Attr
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return int64(i.a.Size) }
func (i *fileInfo) Mode() os.FileMode  { return i.a.FileMode() }
func (i *fileInfo) ModTime() time.Time { return i.a.Mtime }
func (i *fileInfo) IsDir() bool        { return i.a.Kind == history.KindDir }
func (i *fileInfo) Sys() any {
	return &file.FileInfo{Nlink: i.a.Nlink, UID: i.a.Uid, GID: i.a.Gid,
		Major: uint32(i.a.Rdev >> 32), Minor: uint32(i.a.Rdev), Fileid: i.a.Ino}
}
