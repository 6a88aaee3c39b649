package fs

import (
	"fmt"
	"syscall"
	"testing"
)

// TestSquashComposesWithPermissions: the identity Caller gives is the one
// every permission rule then sees, so a squashed root is only the
// anonymous user, and a group 0 it carries is only the anonymous group.
func TestSquashComposesWithPermissions(t *testing.T) {
	anon := &Cred{Uid: 4000, Gid: 4001}
	type request struct {
		name     string
		uid, gid uint32
		groups   []uint32
	}
	rootReq := request{"root", 0, 0, []uint32{0}}
	userReq := request{"user", 1000, 1000, []uint32{0}}
	// combos, in the order of a row's want.
	combos := []struct {
		squash Squash
		req    request
	}{
		{SquashNone, rootReq}, {SquashRoot, rootReq}, {SquashAll, rootReq},
		{SquashNone, userReq}, {SquashRoot, userReq}, {SquashAll, userReq},
	}
	read := func(p string) func(e *tEnv, f *FS, c Cred) error {
		return func(e *tEnv, f *FS, c Cred) error {
			_, err := f.Read(c, e.resolve(pRoot, p), make([]byte, 8), 0)
			return err
		}
	}
	for _, row := range []struct {
		name string
		op   func(e *tEnv, f *FS, c Cred) error
		want [6]syscall.Errno
	}{
		{"read 0600 file of root", read("/secret"), [6]syscall.Errno{0, eACCES, eACCES, eACCES, eACCES, eACCES}},
		{"read 0600 file of the anonymous user", read("/anons"), [6]syscall.Errno{0, 0, 0, eACCES, eACCES, 0}},
		{"read 0040 file of group 0", read("/grp0"), [6]syscall.Errno{0, eACCES, eACCES, 0, eACCES, eACCES}},
		{"read 0040 file of the anonymous group", read("/anongrp"), [6]syscall.Errno{0, 0, 0, eACCES, 0, 0}},
		{"read 0600 file of user 1000", read("/user"), [6]syscall.Errno{0, eACCES, eACCES, 0, 0, eACCES}},
		{"chmod file of root", func(e *tEnv, f *FS, c Cred) error {
			_, err := f.Setattr(c, e.resolve(pRoot, "/secret"), SetAttr{Mode: u32(0o644)})
			return err
		}, [6]syscall.Errno{0, ePERM, ePERM, ePERM, ePERM, ePERM}},
		{"unlink root's file from the sticky root", func(e *tEnv, f *FS, c Cred) error {
			return f.Remove(c, f.Root(), "secret", false)
		}, [6]syscall.Errno{0, ePERM, ePERM, ePERM, ePERM, ePERM}},
		{"create in 0755 dir of root", func(e *tEnv, f *FS, c Cred) error {
			_, _, err := f.Create(c, e.resolve(pRoot, "/rootdir"), "new", 0o644, true)
			return err
		}, [6]syscall.Errno{0, eACCES, eACCES, eACCES, eACCES, eACCES}},
	} {
		for i, cb := range combos {
			t.Run(fmt.Sprintf("%s/squash %s as %s", row.name, cb.squash, cb.req.name), func(t *testing.T) {
				e := squashTree(t)
				f := New(e.s, Options{Clock: e.clk.Now, Squash: cb.squash, Anon: anon})
				c := f.Caller(cb.req.uid, cb.req.gid, cb.req.groups)
				wantErr(t, row.name, row.op(e, f, c), row.want[i])
			})
		}
	}
	// A new object belongs to whom the caller acts as.
	owners := [6][2]uint32{{0, 0}, {4000, 4001}, {4000, 4001}, {1000, 1000}, {1000, 1000}, {4000, 4001}}
	for i, cb := range combos {
		t.Run(fmt.Sprintf("new file's owner/squash %s as %s", cb.squash, cb.req.name), func(t *testing.T) {
			e := squashTree(t)
			f := New(e.s, Options{Clock: e.clk.Now, Squash: cb.squash, Anon: anon})
			n, _, err := f.Create(f.Caller(cb.req.uid, cb.req.gid, cb.req.groups), f.Root(), "new", 0o644, true)
			if err != nil {
				t.Fatal(err)
			}
			if a := e.attr(n); a.Uid != owners[i][0] || a.Gid != owners[i][1] {
				t.Errorf("owner %d:%d, want %d:%d", a.Uid, a.Gid, owners[i][0], owners[i][1])
			}
		})
	}
	// Without anon ids configured, squashed root is nobody:nogroup.
	e := squashTree(t)
	f := New(e.s, Options{Clock: e.clk.Now})
	c := f.Caller(0, 0, nil)
	if _, err := f.Read(c, e.resolve(pRoot, "/secret"), make([]byte, 8), 0); Errno(err) != syscall.EACCES {
		t.Errorf("default squash: root reads a 0600 root file: %v", err)
	}
	n, _, err := f.Create(c, f.Root(), "new", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	if a := e.attr(n); a.Uid != AnonID || a.Gid != AnonID {
		t.Errorf("default squash: new file owned by %d:%d", a.Uid, a.Gid)
	}
}

// squashTree: files of root, of the anonymous user 4000:4001, of group 0,
// of the anonymous group and of user 1000, and a 0755 directory of root,
// in the 1777 root.
func squashTree(t *testing.T) *tEnv {
	e := newTEnv(t)
	for _, o := range []struct {
		p        string
		mode     uint32
		uid, gid uint32
	}{
		{"/secret", 0o600, 0, 0},
		{"/anons", 0o600, 4000, 4001},
		{"/grp0", 0o040, 1, 0},
		{"/anongrp", 0o040, 1, 4001},
		{"/user", 0o600, 1000, 1000},
	} {
		n := e.file(pRoot, o.p, o.mode, "data")
		e.chown(n, o.uid, o.gid)
	}
	e.mkdir(pRoot, "/rootdir", 0o755)
	return e
}
