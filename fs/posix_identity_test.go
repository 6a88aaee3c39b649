package fs

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/asof/asof/history"
)

// The POSIX rules that depend on who asks, run as each of five identities
// against objects owned by one of them ("owner", 1000:1000).

type ident struct {
	name string
	c    Cred
}

// idents, in the order of a byIdent's entries.
var idents = []ident{
	{"root", Cred{}},
	{"owner", Cred{Uid: 1000, Gid: 1000}},
	// In the owner's group by its primary gid, and in 2000.
	{"group", Cred{Uid: 1001, Gid: 1000, Groups: []uint32{2000}}},
	// In the owner's group only as a supplementary group.
	{"supp", Cred{Uid: 1003, Gid: 1003, Groups: []uint32{1000}}},
	{"other", Cred{Uid: 1002, Gid: 1002}},
}

// byIdent is one expected result per identity: root, owner, group, supp,
// other.
type byIdent [5]syscall.Errno

const (
	eACCES  = syscall.EACCES
	ePERM   = syscall.EPERM
	eNODATA = syscall.ENODATA
)

// idCase prepares a fresh file system for one identity and returns the
// operation to run as it; check, if set, looks at the result after a
// success.
type idCase struct {
	name  string
	setup func(e *tEnv, c Cred) func() error
	want  byIdent
	check func(t *testing.T, e *tEnv, c Cred)
}

func runIdentityCases(t *testing.T, cases []idCase) {
	t.Helper()
	for _, tc := range cases {
		for i, id := range idents {
			t.Run(tc.name+"/as "+id.name, func(t *testing.T) {
				e := newTEnv(t)
				op := tc.setup(e, id.c)
				wantErr(t, fmt.Sprintf("%s as %s", tc.name, id.name), op(), tc.want[i])
				if tc.check != nil && tc.want[i] == 0 && !t.Failed() {
					tc.check(t, e, id.c)
				}
			})
		}
	}
}

var owner = idents[1].c

// owned makes a file at p with mode and data, owned by the owner.
func (e *tEnv) owned(p string, mode uint32) Node {
	e.t.Helper()
	n := e.file(pRoot, p, mode, "data")
	e.chown(n, owner.Uid, owner.Gid)
	e.chmod(n, mode)
	return n
}

// ownedDir makes a directory at p with mode, owned by the owner.
func (e *tEnv) ownedDir(p string, mode uint32) Node {
	e.t.Helper()
	n := e.mkdir(pRoot, p, 0o700)
	e.chown(n, owner.Uid, owner.Gid)
	e.chmod(n, mode)
	return n
}

func wantAttr(t *testing.T, e *tEnv, p string, mode, uid, gid uint32) {
	t.Helper()
	a := e.attr(e.resolve(pRoot, p))
	if a.Mode != mode || a.Uid != uid || a.Gid != gid {
		t.Errorf("%s: mode %04o owner %d:%d, want %04o %d:%d", p, a.Mode, a.Uid, a.Gid, mode, uid, gid)
	}
}

func TestPosixIdentityPermissions(t *testing.T) {
	read := func(e *tEnv, c Cred, p string) func() error {
		return func() error { _, err := e.f.Read(c, e.resolve(pRoot, p), make([]byte, 8), 0); return err }
	}
	write := func(e *tEnv, c Cred, p string) func() error {
		return func() error { _, err := e.f.Write(c, e.resolve(pRoot, p), []byte("x"), 0, false); return err }
	}
	runIdentityCases(t, []idCase{
		{name: "read 0640 file", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/f", 0o640)
			return read(e, c, "/f")
		}},
		{name: "read 0604 file: the group class has no bits", want: byIdent{0, 0, eACCES, eACCES, 0}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/f", 0o604)
			return read(e, c, "/f")
		}},
		{name: "write 0640 file", want: byIdent{0, 0, eACCES, eACCES, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/f", 0o640)
			return write(e, c, "/f")
		}},
		{name: "write 0660 file", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/f", 0o660)
			return write(e, c, "/f")
		}},
		// The owner writes its own read-only file (knfsd's owner override).
		{name: "write 0444 file", want: byIdent{0, 0, eACCES, eACCES, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/f", 0o444)
			return write(e, c, "/f")
		}},
		{name: "truncate 0664 file", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			n := e.owned("/f", 0o664)
			return func() error { _, err := e.f.Setattr(c, n, SetAttr{Size: u64(1)}); return err }
		}},
		{name: "resolve through 0710 dir", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			e.ownedDir("/d", 0o710)
			e.file(pRoot, "/d/f", 0o644, "")
			return func() error { _, err := e.f.Resolve(c, "/d/f"); return err }
		}},
		{name: "readdir 0710 dir", want: byIdent{0, 0, eACCES, eACCES, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			d := e.ownedDir("/d", 0o710)
			return func() error { return e.f.ReadDir(c, d, "", func(Dirent) bool { return true }) }
		}},
		{name: "create in 0775 dir", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			d := e.ownedDir("/d", 0o775)
			return func() error { _, _, err := e.f.Create(c, d, "new", 0o644, true); return err }
		}},
		{name: "mkdir in 0755 dir", want: byIdent{0, 0, eACCES, eACCES, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			d := e.ownedDir("/d", 0o755)
			return func() error { _, err := e.f.Mkdir(c, d, "new", 0o755); return err }
		}},
		{name: "link into 0775 dir", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			d := e.ownedDir("/d", 0o775)
			// 0666: Linux's protected_hardlinks would let anyone link it too.
			f := e.file(pRoot, "/f", 0o666, "")
			return func() error { return e.f.Link(c, f, d, "l") }
		}},
		{name: "unlink root's file from 0775 dir", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			d := e.ownedDir("/d", 0o775)
			e.file(pRoot, "/d/f", 0o600, "")
			return func() error { return e.f.Remove(c, d, "f", false) }
		}},
	})
}

func TestPosixIdentitySticky(t *testing.T) {
	runIdentityCases(t, []idCase{
		// The root of a new store is 1777: only the file's owner or root
		// may remove what is in it.
		{name: "unlink owner's file from the sticky root", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/f", 0o666)
			return func() error { return e.f.Remove(c, e.f.Root(), "f", false) }
		}},
		{name: "rename owner's file within the sticky root", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/f", 0o666)
			return func() error { return e.f.Rename(c, e.f.Root(), "f", e.f.Root(), "g") }
		}},
		{name: "rename own file over owner's in the sticky root", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: func(e *tEnv, c Cred) func() error {
			e.owned("/victim", 0o666)
			e.file(c, "/mine", 0o644, "")
			return func() error { return e.f.Rename(c, e.f.Root(), "mine", e.f.Root(), "victim") }
		}},
		{name: "rmdir owner's dir in the sticky root", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: func(e *tEnv, c Cred) func() error {
			e.ownedDir("/d", 0o777)
			return func() error { return e.f.Remove(c, e.f.Root(), "d", true) }
		}},
		// The sticky directory's owner may remove anything in it.
		{name: "unlink other's file from owner's sticky dir", want: byIdent{0, 0, ePERM, ePERM, 0}, setup: func(e *tEnv, c Cred) func() error {
			d := e.ownedDir("/s", 0o1777)
			e.file(idents[4].c, "/s/f", 0o600, "")
			return func() error { return e.f.Remove(c, d, "f", false) }
		}},
		{name: "unlink owner's file from a plain 0777 dir", want: byIdent{0, 0, 0, 0, 0}, setup: func(e *tEnv, c Cred) func() error {
			d := e.mkdir(pRoot, "/p", 0o777)
			e.owned("/p/f", 0o600)
			return func() error { return e.f.Remove(c, d, "f", false) }
		}},
	})
}

func TestPosixIdentityRename(t *testing.T) {
	moveDir := func(mode uint32) func(e *tEnv, c Cred) func() error {
		return func(e *tEnv, c Cred) func() error {
			a, b := e.mkdir(pRoot, "/a", 0o777), e.mkdir(pRoot, "/b", 0o777)
			e.ownedDir("/a/sub", mode)
			return func() error { return e.f.Rename(c, a, "sub", b, "sub") }
		}
	}
	runIdentityCases(t, []idCase{
		// Moving a directory to another parent rewrites its "..": that
		// needs write permission on it.
		{name: "move owner's 0755 dir to another parent", want: byIdent{0, 0, eACCES, eACCES, eACCES}, setup: moveDir(0o755)},
		{name: "move owner's 0775 dir to another parent", want: byIdent{0, 0, 0, 0, eACCES}, setup: moveDir(0o775)},
		{name: "rename owner's 0755 dir within its parent", want: byIdent{0, 0, 0, 0, 0}, setup: func(e *tEnv, c Cred) func() error {
			a := e.mkdir(pRoot, "/a", 0o777)
			e.ownedDir("/a/sub", 0o755)
			return func() error { return e.f.Rename(c, a, "sub", a, "sub2") }
		}},
		{name: "rename out of owner's 0755 dir", want: byIdent{0, 0, eACCES, eACCES, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			d, b := e.ownedDir("/d", 0o755), e.mkdir(pRoot, "/b", 0o777)
			e.file(pRoot, "/d/f", 0o666, "")
			return func() error { return e.f.Rename(c, d, "f", b, "f") }
		}},
		{name: "rename into owner's 0775 dir", want: byIdent{0, 0, 0, 0, eACCES}, setup: func(e *tEnv, c Cred) func() error {
			d, b := e.ownedDir("/d", 0o775), e.mkdir(pRoot, "/b", 0o777)
			e.file(pRoot, "/b/f", 0o666, "")
			return func() error { return e.f.Rename(c, b, "f", d, "f") }
		}},
	})
}

func TestPosixIdentityChownChmod(t *testing.T) {
	setattr := func(s SetAttr) func(e *tEnv, c Cred) func() error {
		return func(e *tEnv, c Cred) func() error {
			n := e.owned("/f", 0o664)
			return func() error { _, err := e.f.Setattr(c, n, s); return err }
		}
	}
	runIdentityCases(t, []idCase{
		{name: "chmod", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: setattr(SetAttr{Mode: u32(0o600)})},
		{name: "chown to 4242", want: byIdent{0, ePERM, ePERM, ePERM, ePERM}, setup: setattr(SetAttr{Uid: u32(4242)})},
		{name: "chown to the owner it has", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: setattr(SetAttr{Uid: u32(owner.Uid)})},
		{name: "chgrp to the group it has", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: setattr(SetAttr{Gid: u32(owner.Gid)})},
		{name: "chgrp to 2000", want: byIdent{0, ePERM, ePERM, ePERM, ePERM}, setup: setattr(SetAttr{Gid: u32(2000)})},
		{name: "set mtime", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: setattr(SetAttr{Mtime: &tEnvStart})},
		{name: "touch mtime to now on 0664 file", want: byIdent{0, 0, 0, 0, eACCES}, setup: setattr(SetAttr{MtimeNow: true})},
	})
	// Each caller on a file of its own: an owner may give it to any group
	// it is in, primary or supplementary, and to no other.
	for _, tc := range []struct {
		gid  uint32
		want byIdent
	}{
		{1000, byIdent{0, 0, 0, 0, ePERM}},
		{2000, byIdent{0, ePERM, 0, ePERM, ePERM}},
		{1002, byIdent{0, ePERM, ePERM, ePERM, 0}},
	} {
		for i, id := range idents {
			t.Run(fmt.Sprintf("chgrp own file to %d/as %s", tc.gid, id.name), func(t *testing.T) {
				e := newTEnv(t)
				d := e.mkdir(pRoot, "/d", 0o777)
				n, _, err := e.f.Create(id.c, d, "f", 0o644, true)
				if err != nil {
					t.Fatal(err)
				}
				_, err = e.f.Setattr(id.c, n, SetAttr{Gid: u32(tc.gid)})
				wantErr(t, "chgrp", err, tc.want[i])
				if tc.want[i] == 0 {
					wantAttr(t, e, "/d/f", 0o644, id.c.Uid, tc.gid)
				}
			})
		}
	}
	// Mode results: setgid kept only by root and members of the file's group.
	runIdentityCases(t, []idCase{
		{name: "chmod g+s of own file in group 2000", want: byIdent{}, setup: func(e *tEnv, c Cred) func() error {
			d := e.mkdir(pRoot, "/d", 0o777)
			n, _, err := e.f.Create(c, d, "f", 0o644, true)
			if err != nil {
				e.t.Fatal(err)
			}
			e.chown(n, c.Uid, 2000)
			return func() error { _, err := e.f.Setattr(c, n, SetAttr{Mode: u32(0o2755)}); return err }
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			mode := uint32(0o755)
			if c.Uid == 0 || c.inGroup(2000) {
				mode = 0o2755
			}
			wantAttr(t, e, "/d/f", mode, c.Uid, 2000)
		}},
		{name: "chmod g+s of own dir in group 2000", want: byIdent{}, setup: func(e *tEnv, c Cred) func() error {
			d, err := e.f.Mkdir(c, e.mkdir(pRoot, "/d", 0o777), "sub", 0o755)
			if err != nil {
				e.t.Fatal(err)
			}
			e.chown(d, c.Uid, 2000)
			return func() error { _, err := e.f.Setattr(c, d, SetAttr{Mode: u32(0o2775)}); return err }
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			mode := uint32(0o775)
			if c.Uid == 0 || c.inGroup(2000) {
				mode = 0o2775
			}
			wantAttr(t, e, "/d/sub", mode, c.Uid, 2000)
		}},
		{name: "write to 6777 file", want: byIdent{}, setup: func(e *tEnv, c Cred) func() error {
			n := e.owned("/f", 0o6777)
			return func() error { _, err := e.f.Write(c, n, []byte("x"), 0, false); return err }
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			mode := uint32(0o777) // group execute: setgid means "run as" and goes too
			if c.Uid == 0 {
				mode = 0o6777
			}
			wantAttr(t, e, "/f", mode, owner.Uid, owner.Gid)
		}},
		{name: "write to 6766 file", want: byIdent{}, setup: func(e *tEnv, c Cred) func() error {
			n := e.owned("/f", 0o6766)
			return func() error { _, err := e.f.Write(c, n, []byte("x"), 0, false); return err }
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			mode := uint32(0o2766) // no group execute: setgid is a lock mark and stays
			if c.Uid == 0 {
				mode = 0o6766
			}
			wantAttr(t, e, "/f", mode, owner.Uid, owner.Gid)
		}},
	})
}

func TestPosixIdentitySetgidDir(t *testing.T) {
	// /proj is 2777 root:2000. New objects take group 2000; new
	// directories are setgid; a new setgid file stays setgid only for root
	// and members of 2000.
	proj := func(e *tEnv) Node {
		d := e.mkdir(pRoot, "/proj", 0o777)
		e.chown(d, 0, 2000)
		e.chmod(d, 0o2777)
		return d
	}
	runIdentityCases(t, []idCase{
		{name: "create 2755 file in setgid dir", setup: func(e *tEnv, c Cred) func() error {
			d := proj(e)
			return func() error { _, _, err := e.f.Create(c, d, "f", 0o2755, true); return err }
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			mode := uint32(0o755)
			if c.Uid == 0 || c.inGroup(2000) {
				mode = 0o2755
			}
			wantAttr(t, e, "/proj/f", mode, c.Uid, 2000)
		}},
		{name: "mkdir in setgid dir", setup: func(e *tEnv, c Cred) func() error {
			d := proj(e)
			return func() error { _, err := e.f.Mkdir(c, d, "sub", 0o755); return err }
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			wantAttr(t, e, "/proj/sub", 0o2755, c.Uid, 2000)
			// and the bit goes on down
			if _, err := e.f.Mkdir(c, e.resolve(pRoot, "/proj/sub"), "subsub", 0o700); err != nil {
				t.Fatal(err)
			}
			wantAttr(t, e, "/proj/sub/subsub", 0o2700, c.Uid, 2000)
		}},
		{name: "symlink and fifo in setgid dir", setup: func(e *tEnv, c Cred) func() error {
			d := proj(e)
			return func() error {
				if _, err := e.f.Symlink(c, d, "l", "f"); err != nil {
					return err
				}
				_, err := e.f.Mknod(c, d, "p", NewAttr{Kind: history.KindFifo, Mode: 0o640})
				return err
			}
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			wantAttr(t, e, "/proj/l", 0o777, c.Uid, 2000)
			wantAttr(t, e, "/proj/p", 0o640, c.Uid, 2000)
		}},
		{name: "create in plain dir", setup: func(e *tEnv, c Cred) func() error {
			d := e.mkdir(pRoot, "/plain", 0o777)
			return func() error { _, _, err := e.f.Create(c, d, "f", 0o2755, true); return err }
		}, check: func(t *testing.T, e *tEnv, c Cred) {
			// The caller's primary group, which it is in: setgid stays.
			wantAttr(t, e, "/plain/f", 0o2755, c.Uid, c.Gid)
		}},
	})
}

func TestPosixIdentityXattr(t *testing.T) {
	get := func(mode uint32, name string) func(e *tEnv, c Cred) func() error {
		return func(e *tEnv, c Cred) func() error {
			n := e.owned("/f", mode)
			if err := e.f.SetXattr(pRoot, n, name, []byte("v"), 0); err != nil {
				e.t.Fatal(err)
			}
			return func() error { _, err := e.f.GetXattr(c, n, name); return err }
		}
	}
	set := func(mode uint32, name string) func(e *tEnv, c Cred) func() error {
		return func(e *tEnv, c Cred) func() error {
			n := e.owned("/f", mode)
			return func() error { return e.f.SetXattr(c, n, name, []byte("v"), 0) }
		}
	}
	remove := func(mode uint32, name string) func(e *tEnv, c Cred) func() error {
		return func(e *tEnv, c Cred) func() error {
			n := e.owned("/f", mode)
			if err := e.f.SetXattr(pRoot, n, name, []byte("v"), 0); err != nil {
				e.t.Fatal(err)
			}
			return func() error { return e.f.RemoveXattr(c, n, name) }
		}
	}
	onDir := func(d func(e *tEnv) Node, op func(e *tEnv, c Cred, n Node) error) func(e *tEnv, c Cred) func() error {
		return func(e *tEnv, c Cred) func() error {
			n := d(e)
			if err := e.f.SetXattr(pRoot, n, "user.a", []byte("v"), 0); err != nil {
				e.t.Fatal(err)
			}
			return func() error { return op(e, c, n) }
		}
	}
	stickyRoot := func(e *tEnv) Node { return e.f.Root() }
	ownersSticky := func(e *tEnv) Node { return e.ownedDir("/s", 0o1777) }
	setX := func(e *tEnv, c Cred, n Node) error { return e.f.SetXattr(c, n, "user.b", []byte("v"), 0) }
	removeX := func(e *tEnv, c Cred, n Node) error { return e.f.RemoveXattr(c, n, "user.a") }
	getX := func(e *tEnv, c Cred, n Node) error { _, err := e.f.GetXattr(c, n, "user.a"); return err }
	special := func(op func(e *tEnv, c Cred, n Node) error) func(e *tEnv, c Cred) func() error {
		return func(e *tEnv, c Cred) func() error {
			n, err := e.f.Symlink(pRoot, e.f.Root(), "l", "target")
			if err != nil {
				e.t.Fatal(err)
			}
			return func() error { return op(e, c, n) }
		}
	}
	runIdentityCases(t, []idCase{
		{name: "get user.* of 0640 file", want: byIdent{0, 0, 0, 0, eACCES}, setup: get(0o640, "user.a")},
		{name: "set user.* on 0640 file", want: byIdent{0, 0, eACCES, eACCES, eACCES}, setup: set(0o640, "user.a")},
		{name: "set user.* on 0660 file", want: byIdent{0, 0, 0, 0, eACCES}, setup: set(0o660, "user.a")},
		// No owner override for xattrs: write permission it is, as Linux.
		{name: "set user.* on 0444 file", want: byIdent{0, eACCES, eACCES, eACCES, eACCES}, setup: set(0o444, "user.a")},
		{name: "remove user.* from 0660 file", want: byIdent{0, 0, 0, 0, eACCES}, setup: remove(0o660, "user.a")},
		{name: "set trusted.* on 0666 file", want: byIdent{0, ePERM, ePERM, ePERM, ePERM}, setup: set(0o666, "trusted.a")},
		{name: "get trusted.* of 0666 file", want: byIdent{0, eNODATA, eNODATA, eNODATA, eNODATA}, setup: get(0o666, "trusted.a")},
		{name: "remove trusted.* from 0666 file", want: byIdent{0, ePERM, ePERM, ePERM, ePERM}, setup: remove(0o666, "trusted.a")},
		// A sticky directory is writable by all: its user.* attributes are
		// its owner's (and root's), as Linux's xattr_permission has it.
		{name: "set user.* on the sticky root", want: byIdent{0, ePERM, ePERM, ePERM, ePERM}, setup: onDir(stickyRoot, setX)},
		{name: "remove user.* from the sticky root", want: byIdent{0, ePERM, ePERM, ePERM, ePERM}, setup: onDir(stickyRoot, removeX)},
		{name: "get user.* of the sticky root", want: byIdent{0, 0, 0, 0, 0}, setup: onDir(stickyRoot, getX)},
		{name: "set user.* on owner's sticky dir", want: byIdent{0, 0, ePERM, ePERM, ePERM}, setup: onDir(ownersSticky, setX)},
		// user.* is for files and directories only, whoever asks. (Linux
		// answers a read there with ENODATA; fs says EPERM both ways.)
		{name: "set user.* on a symlink", want: byIdent{ePERM, ePERM, ePERM, ePERM, ePERM}, setup: special(setX)},
		{name: "get user.* of a symlink", want: byIdent{ePERM, ePERM, ePERM, ePERM, ePERM}, setup: special(getX)},
	})
}
