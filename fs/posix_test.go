package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

// Identities the POSIX tests act as.
var (
	pRoot  = Cred{}
	pUser  = Cred{Uid: 1000, Gid: 1000}
	pOther = Cred{Uid: 1001, Gid: 1001}
)

// testClock is a fake clock shared by the store (transaction ids) and the
// file system (attribute times), so tests can step through days at once.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock(start time.Time) *testClock { return &testClock{t: start} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock on by d and returns the new time.
func (c *testClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// tEnv is a store and file system on a fake clock in a temporary directory.
type tEnv struct {
	t   testing.TB
	dir string
	clk *testClock
	s   *history.Store
	f   *FS
}

var tEnvStart = time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)

func newTEnv(t testing.TB) *tEnv {
	t.Helper()
	e := &tEnv{t: t, dir: t.TempDir(), clk: newTestClock(tEnvStart)}
	e.open()
	t.Cleanup(func() {
		if e.s != nil {
			e.s.Close()
		}
	})
	return e
}

func (e *tEnv) open() {
	e.t.Helper()
	s, err := history.Open(e.dir, history.Options{FlushInterval: time.Hour, Clock: e.clk.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	e.s = s
	e.f = New(s, Options{Clock: e.clk.Now})
}

// reopen closes the store and opens it again from its directory.
func (e *tEnv) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.s = nil
	e.open()
}

// commit advances the clock by d and commits, returning the transaction.
func (e *tEnv) commit(d time.Duration) history.TID {
	e.t.Helper()
	e.clk.Add(d)
	tid, err := e.s.Commit()
	if err != nil {
		e.t.Fatal(err)
	}
	return tid
}

func (e *tEnv) resolve(c Cred, p string) Node {
	e.t.Helper()
	n, err := e.f.Resolve(c, p)
	if err != nil {
		e.t.Fatalf("resolve %s: %v", p, err)
	}
	return n
}

func (e *tEnv) parent(c Cred, p string) (Node, string) {
	e.t.Helper()
	dir, name := path.Split(p)
	return e.resolve(c, dir), name
}

func (e *tEnv) mkdir(c Cred, p string, mode uint32) Node {
	e.t.Helper()
	d, name := e.parent(c, p)
	n, err := e.f.Mkdir(c, d, name, mode)
	if err != nil {
		e.t.Fatalf("mkdir %s: %v", p, err)
	}
	return n
}

func (e *tEnv) create(c Cred, p string, mode uint32) Node {
	e.t.Helper()
	d, name := e.parent(c, p)
	n, created, err := e.f.Create(c, d, name, mode, true)
	if err != nil || !created {
		e.t.Fatalf("create %s: %v %v", p, created, err)
	}
	return n
}

func (e *tEnv) write(c Cred, n Node, off int64, data []byte) {
	e.t.Helper()
	k, err := e.f.Write(c, n, data, off, false)
	if err != nil || k != len(data) {
		e.t.Fatalf("write %d bytes at %d: %d %v", len(data), off, k, err)
	}
}

func (e *tEnv) file(c Cred, p string, mode uint32, data string) Node {
	e.t.Helper()
	n := e.create(c, p, mode)
	if data != "" {
		e.write(c, n, 0, []byte(data))
	}
	return n
}

func (e *tEnv) attr(n Node) Attr {
	e.t.Helper()
	a, err := e.f.Getattr(n)
	if err != nil {
		e.t.Fatalf("getattr %+v: %v", n, err)
	}
	return a
}

// readAll reads the whole of n as c.
func (e *tEnv) readAll(c Cred, n Node) []byte {
	e.t.Helper()
	a := e.attr(n)
	p := make([]byte, a.Size+10)
	k, err := e.f.Read(c, n, p, 0)
	if err != nil {
		e.t.Fatalf("read %+v: %v", n, err)
	}
	if uint64(k) != a.Size {
		e.t.Fatalf("read %+v: %d bytes, size %d", n, k, a.Size)
	}
	return p[:k]
}

func (e *tEnv) setattr(c Cred, n Node, s SetAttr) Attr {
	e.t.Helper()
	a, err := e.f.Setattr(c, n, s)
	if err != nil {
		e.t.Fatalf("setattr %+v: %v", s, err)
	}
	return a
}

func (e *tEnv) chown(n Node, uid, gid uint32) {
	e.t.Helper()
	e.setattr(pRoot, n, SetAttr{Uid: &uid, Gid: &gid})
}

func (e *tEnv) chmod(n Node, mode uint32) {
	e.t.Helper()
	e.setattr(pRoot, n, SetAttr{Mode: &mode})
}

func (e *tEnv) names(c Cred, dir Node) []string {
	e.t.Helper()
	var out []string
	if err := e.f.ReadDir(c, dir, "", func(d Dirent) bool { out = append(out, d.Name); return true }); err != nil {
		e.t.Fatalf("readdir: %v", err)
	}
	return out
}

// home makes /home owned by pUser (0755) and /shared (01777 is not set:
// 0777, owned by root) for the tests that act as a non-root caller.
func (e *tEnv) home() Node {
	e.t.Helper()
	h := e.mkdir(pRoot, "/home", 0o755)
	e.chown(h, pUser.Uid, pUser.Gid)
	return h
}

func wantErr(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	show := func(e syscall.Errno) string {
		if e == 0 {
			return "success"
		}
		return fmt.Sprintf("%v (%d)", e, int(e))
	}
	if got := Errno(err); got != want {
		t.Errorf("%s: %s (err %v), want %s", what, show(got), err, show(want))
	}
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

// ---------------------------------------------------------------------------
// Permission checks.

func TestPosixPermissions(t *testing.T) {
	e := newTEnv(t)
	// /priv: 0700 of another user, holding a world-readable file.
	priv := e.mkdir(pRoot, "/priv", 0o700)
	e.file(pRoot, "/priv/f", 0o644, "secret")
	e.chown(e.resolve(pRoot, "/priv/f"), pOther.Uid, pOther.Gid)
	e.chown(priv, pOther.Uid, pOther.Gid)
	// /pub: 0755 of another user.
	pub := e.mkdir(pRoot, "/pub", 0o755)
	e.chown(pub, pOther.Uid, pOther.Gid)
	// /open: 0777, files of another user with various modes.
	e.mkdir(pRoot, "/open", 0o777)
	ro := e.file(pOther, "/open/ro", 0o444, "read only")
	rw := e.file(pOther, "/open/rw", 0o666, "anyone")
	grp := e.file(pOther, "/open/grp", 0o640, "group")
	e.chown(grp, pOther.Uid, pUser.Gid) // group 1000: pUser's group
	sup := e.file(pOther, "/open/sup", 0o060, "supplementary")
	e.chown(sup, pOther.Uid, 1002)
	cls := e.file(pOther, "/open/cls", 0o604, "class")
	e.chown(cls, pOther.Uid, pUser.Gid) // group has no bits; others have read
	none := e.file(pOther, "/open/none", 0o000, "nobody")
	// Files of pUser itself.
	mineRO := e.file(pUser, "/open/mine-ro", 0o444, "mine")
	mineNone := e.file(pUser, "/open/mine-none", 0o000, "mine too")
	noexec := e.mkdir(pUser, "/open/noexec", 0o700)
	e.file(pUser, "/open/noexec/f", 0o644, "x")
	e.chmod(noexec, 0o600)
	supUser := Cred{Uid: pUser.Uid, Gid: pUser.Gid, Groups: []uint32{1002}}

	read := func(c Cred, n Node) error { _, err := e.f.Read(c, n, make([]byte, 10), 0); return err }
	write := func(c Cred, n Node) error { _, err := e.f.Write(c, n, []byte("x"), 0, false); return err }

	for _, tc := range []struct {
		name string
		op   func() error
		want syscall.Errno
	}{
		{"lookup in 0700 dir of another user", func() error { _, err := e.f.Lookup(pUser, priv, "f"); return err }, syscall.EACCES},
		{"resolve through 0700 dir of another user", func() error { _, err := e.f.Resolve(pUser, "/priv/f"); return err }, syscall.EACCES},
		{"readdir of 0700 dir of another user", func() error { return e.f.ReadDir(pUser, priv, "", func(Dirent) bool { return true }) }, syscall.EACCES},
		{"create in 0700 dir of another user", func() error { _, _, err := e.f.Create(pUser, priv, "g", 0o644, true); return err }, syscall.EACCES},
		{"root looks up in 0700 dir", func() error { _, err := e.f.Resolve(pRoot, "/priv/f"); return err }, 0},
		{"owner looks up in own 0700 dir", func() error { _, err := e.f.Resolve(pOther, "/priv/f"); return err }, 0},
		{"lookup in 0755 dir of another user", func() error { _, err := e.f.Lookup(pUser, pub, "x"); return err }, syscall.ENOENT},
		{"readdir of 0755 dir of another user", func() error { return e.f.ReadDir(pUser, pub, "", func(Dirent) bool { return true }) }, 0},
		{"create in 0755 dir of another user", func() error { _, _, err := e.f.Create(pUser, pub, "g", 0o644, true); return err }, syscall.EACCES},
		{"mkdir in 0755 dir of another user", func() error { _, err := e.f.Mkdir(pUser, pub, "g", 0o755); return err }, syscall.EACCES},
		{"symlink in 0755 dir of another user", func() error { _, err := e.f.Symlink(pUser, pub, "g", "x"); return err }, syscall.EACCES},
		{"root creates in 0755 dir of another user", func() error { _, _, err := e.f.Create(pRoot, pub, "byroot", 0o644, true); return err }, 0},
		{"write to 0444 file of another user", func() error { return write(pUser, ro) }, syscall.EACCES},
		{"truncate 0444 file of another user", func() error { _, err := e.f.Setattr(pUser, ro, SetAttr{Size: u64(0)}); return err }, syscall.EACCES},
		{"open for write 0444 file of another user", func() error { return e.f.Open(pUser, ro, AccessWrite) }, syscall.EACCES},
		{"read 0444 file of another user", func() error { return read(pUser, ro) }, 0},
		{"root writes 0444 file", func() error { return write(pRoot, ro) }, 0},
		{"write to 0666 file of another user", func() error { return write(pUser, rw) }, 0},
		{"read 0000 file of another user", func() error { return read(pUser, none) }, syscall.EACCES},
		{"root reads 0000 file", func() error { return read(pRoot, none) }, 0},
		{"group member reads 0640", func() error { return read(pUser, grp) }, 0},
		{"group member writes 0640", func() error { return write(pUser, grp) }, syscall.EACCES},
		{"not in supplementary group reads 0060", func() error { return read(pUser, sup) }, syscall.EACCES},
		{"supplementary group reads 0060", func() error { return read(supUser, sup) }, 0},
		{"supplementary group writes 0060", func() error { return write(supUser, sup) }, 0},
		{"group class without bits reads 0604", func() error { return read(pUser, cls) }, syscall.EACCES},
		{"other class reads 0604", func() error { return read(Cred{Uid: 2000, Gid: 2000}, cls) }, 0},
		{"owner override: write own 0444 file", func() error { return write(pUser, mineRO) }, 0},
		{"owner override: read own 0000 file", func() error { return read(pUser, mineNone) }, 0},
		{"owner override: truncate own 0444 file", func() error {
			_, err := e.f.Setattr(pUser, mineRO, SetAttr{Size: u64(2)})
			return err
		}, 0},
		{"open own 0444 file for write", func() error { return e.f.Open(pUser, mineRO, AccessWrite) }, syscall.EACCES},
		{"lookup in own 0600 dir (no search bit)", func() error { _, err := e.f.Resolve(pUser, "/open/noexec/f"); return err }, syscall.EACCES},
		{"readdir own 0600 dir", func() error { return e.f.ReadDir(pUser, noexec, "", func(Dirent) bool { return true }) }, 0},
		{"root looks up in 0600 dir", func() error { _, err := e.f.Resolve(pRoot, "/open/noexec/f"); return err }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.name, tc.op(), tc.want) })
	}

	// Access answers per bit, and never grants write in the past.
	for _, tc := range []struct {
		name string
		c    Cred
		n    Node
		want uint32
	}{
		{"user on 0444 of other", pUser, ro, AccessRead},
		{"user on 0666 of other", pUser, rw, AccessRead | AccessWrite},
		{"user on 0000 of other", pUser, none, 0},
		{"root on 0000 file", pRoot, none, AccessRead | AccessWrite},
		{"user on 0700 dir of other", pUser, priv, 0},
		{"root on 0700 dir", pRoot, priv, AccessRead | AccessWrite | AccessExec},
		{"other on own 0700 dir", pOther, priv, AccessRead | AccessWrite | AccessExec},
	} {
		got, err := e.f.Access(tc.c, tc.n, AccessRead|AccessWrite|AccessExec)
		if err != nil || got != tc.want {
			t.Errorf("Access %s = %03b %v, want %03b", tc.name, got, err, tc.want)
		}
	}
	// Root may execute a file only when someone may.
	x := e.file(pRoot, "/open/x", 0o644, "#!/bin/sh\n")
	if got, _ := e.f.Access(pRoot, x, AccessExec); got != 0 {
		t.Errorf("root exec of 0644 file granted")
	}
	e.chmod(x, 0o100)
	if got, _ := e.f.Access(pRoot, x, AccessExec); got != AccessExec {
		t.Errorf("root exec of 0100 file refused")
	}
	tid := e.commit(time.Second)
	past := e.resolve(pRoot, "/open/rw@@"+FormatTID(uint64(tid)))
	if got, _ := e.f.Access(pRoot, past, AccessRead|AccessWrite); got != AccessRead {
		t.Errorf("Access in the past = %03b, want read only", got)
	}
	wantErr(t, "write in the past", write(pRoot, past), syscall.EROFS)
	wantErr(t, "open for write in the past", e.f.Open(pRoot, past, AccessWrite), syscall.EROFS)
}

// ---------------------------------------------------------------------------
// setuid and setgid clearing.

func TestPosixSetIDCleared(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     uint32
		kind     history.Kind
		c        Cred
		op       string // write, truncate, chown, chgrp
		wantMode uint32
	}{
		{"write by owner (non-root)", 0o6755, history.KindFile, pUser, "write", 0o755},
		{"write by other (non-root)", 0o6777, history.KindFile, pOther, "write", 0o777},
		{"write keeps setgid without group exec", 0o2644, history.KindFile, pUser, "write", 0o2644},
		{"write by root keeps both", 0o6755, history.KindFile, pRoot, "write", 0o6755},
		{"truncate by owner (non-root)", 0o6755, history.KindFile, pUser, "truncate", 0o755},
		{"truncate by root keeps both", 0o6755, history.KindFile, pRoot, "truncate", 0o6755},
		{"chown by root", 0o6755, history.KindFile, pRoot, "chown", 0o755},
		{"chown by root keeps setgid without group exec", 0o6744, history.KindFile, pRoot, "chown", 0o2744},
		{"chgrp by owner to own group", 0o6755, history.KindFile, Cred{Uid: 1000, Gid: 1000, Groups: []uint32{1003}}, "chgrp", 0o755},
		{"chown of a directory keeps them", 0o6755, history.KindDir, pRoot, "chown", 0o6755},
		// Linux clears them on any chown of a file, and its NFS client
		// leaves that to the server.
		{"chown to the same owner clears them too", 0o6755, history.KindFile, pUser, "chown-same", 0o0755},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTEnv(t)
			d := e.mkdir(pRoot, "/d", 0o777)
			var n Node
			var err error
			if tc.kind == history.KindDir {
				n, err = e.f.Mkdir(pRoot, d, "x", 0o755)
			} else {
				n, _, err = e.f.Create(pRoot, d, "x", 0o644, true)
				if err == nil {
					_, err = e.f.Write(pRoot, n, []byte("program"), 0, false)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			e.chown(n, pUser.Uid, pUser.Gid)
			e.chmod(n, tc.mode)
			if got := e.attr(n).Mode; got != tc.mode {
				t.Fatalf("setup: mode %o, want %o", got, tc.mode)
			}
			switch tc.op {
			case "write":
				_, err = e.f.Write(tc.c, n, []byte("patched"), 0, false)
			case "truncate":
				_, err = e.f.Setattr(tc.c, n, SetAttr{Size: u64(3)})
			case "chown":
				_, err = e.f.Setattr(tc.c, n, SetAttr{Uid: u32(4242)})
			case "chgrp":
				_, err = e.f.Setattr(tc.c, n, SetAttr{Gid: u32(1003)})
			case "chown-same":
				_, err = e.f.Setattr(tc.c, n, SetAttr{Uid: u32(pUser.Uid), Gid: u32(pUser.Gid)})
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.op, err)
			}
			if got := e.attr(n).Mode; got != tc.wantMode {
				t.Errorf("mode after %s = %04o, want %04o", tc.op, got, tc.wantMode)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// chown, chgrp, chmod and utimes: who may.

func TestPosixChownChmod(t *testing.T) {
	e := newTEnv(t)
	e.home()
	supUser := Cred{Uid: pUser.Uid, Gid: pUser.Gid, Groups: []uint32{1002}}
	mine := e.file(pUser, "/home/mine", 0o644, "x")
	e.mkdir(pRoot, "/open", 0o777)
	theirs := e.file(pOther, "/open/theirs", 0o666, "y")

	for _, tc := range []struct {
		name string
		c    Cred
		n    Node
		s    SetAttr
		want syscall.Errno
	}{
		{"non-root gives a file away", pUser, mine, SetAttr{Uid: u32(pOther.Uid)}, syscall.EPERM},
		{"non-root chowns to itself (no change)", pUser, mine, SetAttr{Uid: u32(pUser.Uid)}, 0},
		{"non-root chgrp to a group it is not in", pUser, mine, SetAttr{Gid: u32(1005)}, syscall.EPERM},
		{"non-root chgrp to its supplementary group", supUser, mine, SetAttr{Gid: u32(1002)}, 0},
		{"non-root chgrp back to its own group", pUser, mine, SetAttr{Gid: u32(pUser.Gid)}, 0},
		{"non-owner chgrp", pUser, theirs, SetAttr{Gid: u32(pUser.Gid)}, syscall.EPERM},
		{"non-owner chown to itself", pUser, theirs, SetAttr{Uid: u32(pUser.Uid)}, syscall.EPERM},
		{"non-owner chmod", pUser, theirs, SetAttr{Mode: u32(0o777)}, syscall.EPERM},
		{"owner chmod", pUser, mine, SetAttr{Mode: u32(0o600)}, 0},
		{"root chmod of another's file", pRoot, theirs, SetAttr{Mode: u32(0o640)}, 0},
		{"root gives a file away", pRoot, mine, SetAttr{Uid: u32(4242), Gid: u32(4242)}, 0},
		{"non-owner sets mtime explicitly", pUser, theirs, SetAttr{Mtime: &tEnvStart}, syscall.EPERM},
		{"non-owner with write permission touches mtime to now", pUser, e.file(pOther, "/open/w", 0o666, ""), SetAttr{MtimeNow: true}, 0},
		{"non-owner without write permission touches to now", pUser, e.file(pOther, "/open/nw", 0o644, ""), SetAttr{MtimeNow: true}, syscall.EACCES},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.f.Setattr(tc.c, tc.n, tc.s)
			wantErr(t, tc.name, err, tc.want)
		})
	}
	a := e.attr(mine)
	if a.Uid != 4242 || a.Gid != 4242 || a.Mode != 0o600 {
		t.Errorf("after the table: uid %d gid %d mode %o", a.Uid, a.Gid, a.Mode)
	}

	// chmod by an owner not in the file's group drops setgid, as Linux does.
	g := e.file(pUser, "/home/g", 0o644, "")
	e.chown(g, pUser.Uid, 1005)
	got := e.setattr(pUser, g, SetAttr{Mode: u32(0o2755)})
	if got.Mode != 0o755 {
		t.Errorf("chmod g+s outside the group: mode %04o, want 0755", got.Mode)
	}
	got = e.setattr(pRoot, g, SetAttr{Mode: u32(0o2755)})
	if got.Mode != 0o2755 {
		t.Errorf("root chmod g+s: mode %04o, want 02755", got.Mode)
	}
	// Mode bits above 07777 are ignored.
	got = e.setattr(pUser, mine2(e), SetAttr{Mode: u32(0o170644)})
	if got.Mode != 0o644 {
		t.Errorf("chmod with type bits: mode %o", got.Mode)
	}
}

func mine2(e *tEnv) Node { return e.file(pUser, "/home/mine2", 0o600, "") }

// ---------------------------------------------------------------------------
// Sticky directories.

func TestPosixSticky(t *testing.T) {
	e := newTEnv(t)
	tmp := e.mkdir(pRoot, "/tmp", 0o777)
	e.chmod(tmp, 0o1777)
	if m := e.attr(tmp).Mode; m != 0o1777 {
		t.Fatalf("tmp mode %o", m)
	}
	e.file(pUser, "/tmp/u", 0o666, "user's")
	e.file(pOther, "/tmp/o", 0o666, "other's")
	e.file(pOther, "/tmp/o2", 0o666, "other's")
	e.mkdir(pOther, "/tmp/od", 0o777)
	e.file(pUser, "/tmp/u2", 0o666, "user's")
	e.file(pUser, "/tmp/u3", 0o666, "user's")

	wantErr(t, "unlink another's file in sticky dir", e.f.Remove(pUser, tmp, "o", false), syscall.EPERM)
	wantErr(t, "rmdir another's dir in sticky dir", e.f.Remove(pUser, tmp, "od", true), syscall.EPERM)
	wantErr(t, "rename another's file in sticky dir", e.f.Rename(pUser, tmp, "o", tmp, "mine-now"), syscall.EPERM)
	wantErr(t, "rename own file over another's in sticky dir", e.f.Rename(pUser, tmp, "u2", tmp, "o"), syscall.EPERM)
	if got := string(e.readAll(pRoot, e.resolve(pRoot, "/tmp/o"))); got != "other's" {
		t.Errorf("victim changed: %q", got)
	}
	wantErr(t, "unlink own file in sticky dir", e.f.Remove(pUser, tmp, "u", false), 0)
	wantErr(t, "rename own file in sticky dir", e.f.Rename(pUser, tmp, "u3", tmp, "u4"), 0)
	wantErr(t, "owner removes own", e.f.Remove(pOther, tmp, "o2", false), 0)
	wantErr(t, "root removes another's", e.f.Remove(pRoot, tmp, "o", false), 0)

	// The owner of the sticky directory may remove anything in it.
	home := e.home()
	e.chmod(home, 0o1777)
	e.chown(home, pUser.Uid, pUser.Gid)
	e.file(pOther, "/home/o", 0o600, "")
	wantErr(t, "directory owner removes another's file", e.f.Remove(pUser, home, "o", false), 0)
	// Without the sticky bit, write permission on the directory suffices.
	e.mkdir(pRoot, "/plain", 0o777)
	plain := e.resolve(pRoot, "/plain")
	e.file(pOther, "/plain/o", 0o600, "")
	wantErr(t, "remove another's file in a plain 0777 dir", e.f.Remove(pUser, plain, "o", false), 0)
}

// ---------------------------------------------------------------------------
// Hard links and link counts.

func TestPosixLinks(t *testing.T) {
	e := newTEnv(t)
	rootA := e.attr(e.f.Root())
	if rootA.Nlink != 2 || rootA.Kind != history.KindDir {
		t.Errorf("root: nlink %d kind %v", rootA.Nlink, rootA.Kind)
	}
	d := e.mkdir(pRoot, "/d", 0o755)
	if a := e.attr(d); a.Nlink != 2 {
		t.Errorf("new dir nlink %d, want 2", a.Nlink)
	}
	if a := e.attr(e.f.Root()); a.Nlink != 3 {
		t.Errorf("root nlink after mkdir %d, want 3", a.Nlink)
	}
	f := e.file(pRoot, "/d/f", 0o644, "shared data")
	if a := e.attr(d); a.Nlink != 2 {
		t.Errorf("dir nlink after creating a file %d, want 2", a.Nlink)
	}
	if a := e.attr(f); a.Nlink != 1 {
		t.Errorf("file nlink %d", a.Nlink)
	}
	e.clk.Add(time.Second)
	if err := e.f.Link(pRoot, f, e.f.Root(), "g"); err != nil {
		t.Fatal(err)
	}
	g := e.resolve(pRoot, "/g")
	if g.Obj != f.Obj {
		t.Errorf("link is another object: %d vs %d", g.Obj, f.Obj)
	}
	a := e.attr(f)
	if a.Nlink != 2 {
		t.Errorf("nlink after link %d, want 2", a.Nlink)
	}
	if !a.Ctime.Equal(e.clk.Now()) {
		t.Errorf("link did not change ctime: %v", a.Ctime)
	}
	e.write(pRoot, g, 0, []byte("SHARED"))
	if got := string(e.readAll(pRoot, f)); got != "SHARED data" {
		t.Errorf("write through one link, read through the other: %q", got)
	}
	wantErr(t, "link over an existing name", e.f.Link(pRoot, f, d, "f"), syscall.EEXIST)
	wantErr(t, "link of a directory", e.f.Link(pRoot, d, e.f.Root(), "d2"), syscall.EPERM)
	wantErr(t, "link named with @@", e.f.Link(pRoot, f, d, "x@@y"), syscall.EINVAL)
	wantErr(t, "link in a file", e.f.Link(pRoot, f, f, "x"), syscall.ENOTDIR)
	if err := e.f.Link(pRoot, f, d, "h"); err != nil {
		t.Fatal(err)
	}
	if a := e.attr(f); a.Nlink != 3 {
		t.Errorf("nlink after second link %d", a.Nlink)
	}
	if err := e.f.Remove(pRoot, d, "f", false); err != nil {
		t.Fatal(err)
	}
	if a := e.attr(g); a.Nlink != 2 {
		t.Errorf("nlink after unlink %d, want 2", a.Nlink)
	}
	if err := e.f.Remove(pRoot, e.f.Root(), "g", false); err != nil {
		t.Fatal(err)
	}
	h := e.resolve(pRoot, "/d/h")
	if a := e.attr(h); a.Nlink != 1 || string(e.readAll(pRoot, h)) != "SHARED data" {
		t.Errorf("last name: nlink %d", a.Nlink)
	}
	if err := e.f.Remove(pRoot, d, "h", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Getattr(h); Errno(err) != syscall.ENOENT {
		t.Errorf("object after its last name went: %v", err)
	}
	// Links survive a commit and a reopen.
	f = e.file(pRoot, "/d/f", 0o644, "x")
	if err := e.f.Link(pRoot, f, d, "f2"); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Second)
	e.reopen()
	if a := e.attr(e.resolve(pRoot, "/d/f2")); a.Nlink != 2 {
		t.Errorf("nlink after reopen %d", a.Nlink)
	}

	// Directory link counts: 2 + subdirectories.
	for _, s := range []string{"/d/s1", "/d/s2", "/d/s3"} {
		e.mkdir(pRoot, s, 0o755)
	}
	e.file(pRoot, "/d/s1/file", 0o644, "")
	if a := e.attr(d); a.Nlink != 5 {
		t.Errorf("dir with 3 subdirs: nlink %d, want 5", a.Nlink)
	}
	if err := e.f.Remove(pRoot, d, "s3", true); err != nil {
		t.Fatal(err)
	}
	if a := e.attr(d); a.Nlink != 4 {
		t.Errorf("after rmdir: nlink %d, want 4", a.Nlink)
	}
	// Rename of a directory across parents moves one link.
	e2 := e.mkdir(pRoot, "/e", 0o755)
	if err := e.f.Rename(pRoot, d, "s2", e2, "s2"); err != nil {
		t.Fatal(err)
	}
	if a, b := e.attr(d), e.attr(e2); a.Nlink != 3 || b.Nlink != 3 {
		t.Errorf("after moving a dir from d to e: d nlink %d (want 3), e nlink %d (want 3)", a.Nlink, b.Nlink)
	}
	if up, err := e.f.Lookup(pRoot, e.resolve(pRoot, "/e/s2"), ".."); err != nil || up.Obj != e2.Obj {
		t.Errorf("moved dir's .. = %v %v, want e", up, err)
	}
	// Rename within one parent changes no count.
	if err := e.f.Rename(pRoot, e2, "s2", e2, "s2b"); err != nil {
		t.Fatal(err)
	}
	if a := e.attr(e2); a.Nlink != 3 {
		t.Errorf("after rename within e: nlink %d", a.Nlink)
	}
	// A directory moved over an empty directory elsewhere: the target's
	// link goes, the moved one arrives.
	e.mkdir(pRoot, "/e/empty", 0o755) // e: 4
	if err := e.f.Rename(pRoot, d, "s1", e2, "empty"); err != nil {
		t.Fatal(err)
	}
	if a, b := e.attr(d), e.attr(e2); a.Nlink != 2 || b.Nlink != 4 {
		t.Errorf("after dir over empty dir: d nlink %d (want 2), e nlink %d (want 4)", a.Nlink, b.Nlink)
	}
	if a := e.attr(e.f.Root()); a.Nlink != 4 {
		t.Errorf("root nlink %d, want 4 (d, e)", a.Nlink)
	}
	if got := e.names(pRoot, e2); strings.Join(got, ",") != "empty,s2b" {
		t.Errorf("e lists %v", got)
	}
	if _, err := e.f.Resolve(pRoot, "/e/empty/file"); err != nil {
		t.Errorf("moved dir's content: %v", err)
	}
}

// ---------------------------------------------------------------------------
// rename(2).

func TestPosixRename(t *testing.T) {
	build := func(t *testing.T) *tEnv {
		e := newTEnv(t)
		e.mkdir(pRoot, "/a", 0o755)
		e.mkdir(pRoot, "/a/b", 0o755)
		e.mkdir(pRoot, "/a/b/c", 0o755)
		e.mkdir(pRoot, "/full", 0o755)
		e.file(pRoot, "/full/x", 0o644, "x")
		e.mkdir(pRoot, "/empty", 0o755)
		e.file(pRoot, "/f", 0o644, "eff")
		e.file(pRoot, "/g", 0o600, "gee")
		e.file(pRoot, "/a/h", 0o644, "aitch")
		n := e.resolve(pRoot, "/f")
		if err := e.f.Link(pRoot, n, e.f.Root(), "flink"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.f.Symlink(pRoot, e.f.Root(), "sym", "f"); err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, tc := range []struct {
		name        string
		sdir, sname string
		ddir, dname string
		want        syscall.Errno
		check       func(t *testing.T, e *tEnv)
		gone        []string
	}{
		{name: "file over existing file", sdir: "/", sname: "f", ddir: "/", dname: "g", check: func(t *testing.T, e *tEnv) {
			if got := string(e.readAll(pRoot, e.resolve(pRoot, "/g"))); got != "eff" {
				t.Errorf("g reads %q", got)
			}
			if a := e.attr(e.resolve(pRoot, "/g")); a.Mode != 0o644 || a.Nlink != 2 {
				t.Errorf("g: mode %o nlink %d", a.Mode, a.Nlink)
			}
		}, gone: []string{"/f"}},
		{name: "file across dirs", sdir: "/", sname: "f", ddir: "/a/b", dname: "f2", check: func(t *testing.T, e *tEnv) {
			if got := string(e.readAll(pRoot, e.resolve(pRoot, "/a/b/f2"))); got != "eff" {
				t.Errorf("moved file reads %q", got)
			}
		}, gone: []string{"/f"}},
		{name: "file across dirs over existing", sdir: "/a", sname: "h", ddir: "/", dname: "g", check: func(t *testing.T, e *tEnv) {
			if got := string(e.readAll(pRoot, e.resolve(pRoot, "/g"))); got != "aitch" {
				t.Errorf("g reads %q", got)
			}
		}, gone: []string{"/a/h"}},
		{name: "dir across dirs", sdir: "/a", sname: "b", ddir: "/empty", dname: "b", check: func(t *testing.T, e *tEnv) {
			e.resolve(pRoot, "/empty/b/c")
			up := e.resolve(pRoot, "/empty/b/..")
			if up.Obj != e.resolve(pRoot, "/empty").Obj {
				t.Errorf(".. of moved dir is %d", up.Obj)
			}
		}, gone: []string{"/a/b"}},
		{name: "dir into its own subtree", sdir: "/", sname: "a", ddir: "/a/b/c", dname: "a", want: syscall.EINVAL},
		{name: "dir into its own child", sdir: "/", sname: "a", ddir: "/a", dname: "x", want: syscall.EINVAL},
		{name: "dir into itself via its parent", sdir: "/a", sname: "b", ddir: "/a/b", dname: "b", want: syscall.EINVAL},
		{name: "dir over non-empty dir", sdir: "/", sname: "empty", ddir: "/", dname: "full", want: syscall.ENOTEMPTY},
		{name: "dir over empty dir", sdir: "/", sname: "full", ddir: "/", dname: "empty", check: func(t *testing.T, e *tEnv) {
			e.resolve(pRoot, "/empty/x")
		}, gone: []string{"/full"}},
		{name: "dir over its non-empty parent", sdir: "/a/b", sname: "c", ddir: "/", dname: "a", want: syscall.ENOTEMPTY},
		{name: "file over dir", sdir: "/", sname: "f", ddir: "/", dname: "empty", want: syscall.EISDIR},
		{name: "dir over file", sdir: "/", sname: "empty", ddir: "/", dname: "f", want: syscall.ENOTDIR},
		{name: "dir over file across dirs", sdir: "/a", sname: "b", ddir: "/", dname: "g", want: syscall.ENOTDIR},
		{name: "same file: two links", sdir: "/", sname: "f", ddir: "/", dname: "flink", check: func(t *testing.T, e *tEnv) {
			e.resolve(pRoot, "/f")
			if a := e.attr(e.resolve(pRoot, "/flink")); a.Nlink != 2 {
				t.Errorf("nlink %d", a.Nlink)
			}
		}},
		{name: "same name", sdir: "/", sname: "f", ddir: "/", dname: "f", check: func(t *testing.T, e *tEnv) { e.resolve(pRoot, "/f") }},
		{name: "same dir name", sdir: "/", sname: "a", ddir: "/", dname: "a", check: func(t *testing.T, e *tEnv) { e.resolve(pRoot, "/a/b") }},
		{name: "symlink", sdir: "/", sname: "sym", ddir: "/a", dname: "sym2", check: func(t *testing.T, e *tEnv) {
			if tg, err := e.f.Readlink(e.resolve(pRoot, "/a/sym2")); tg != "f" || err != nil {
				t.Errorf("readlink %q %v", tg, err)
			}
		}, gone: []string{"/sym"}},
		{name: "missing source", sdir: "/", sname: "nope", ddir: "/", dname: "x", want: syscall.ENOENT},
		{name: "source dot", sdir: "/a", sname: ".", ddir: "/", dname: "x", want: syscall.EINVAL},
		{name: "source dotdot", sdir: "/a", sname: "..", ddir: "/", dname: "x", want: syscall.EINVAL},
		{name: "to a name with @@", sdir: "/", sname: "f", ddir: "/", dname: "f@@2020-01-01", want: syscall.EINVAL},
		{name: "to a name ending in @@", sdir: "/", sname: "f", ddir: "/", dname: "f@@", want: syscall.EINVAL},
		{name: "to a name too long", sdir: "/", sname: "f", ddir: "/", dname: strings.Repeat("n", 256), want: syscall.ENAMETOOLONG},
		{name: "to a name of 255 bytes", sdir: "/", sname: "f", ddir: "/", dname: strings.Repeat("n", 255)},
		{name: "into a file", sdir: "/", sname: "g", ddir: "/f", dname: "x", want: syscall.ENOTDIR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := build(t)
			sd, dd := e.resolve(pRoot, tc.sdir), e.resolve(pRoot, tc.ddir)
			before, _ := e.f.Lookup(pRoot, sd, tc.sname)
			err := e.f.Rename(pRoot, sd, tc.sname, dd, tc.dname)
			wantErr(t, "rename", err, tc.want)
			if tc.want != 0 {
				// Nothing changed.
				if tc.sname != "." && tc.sname != ".." && tc.sname != "nope" {
					if n, err := e.f.Lookup(pRoot, sd, tc.sname); err != nil || n.Obj != before.Obj {
						t.Errorf("source after failed rename: %v %v", n, err)
					}
				}
				return
			}
			n, err := e.f.Lookup(pRoot, dd, tc.dname)
			if err != nil || n.Obj != before.Obj {
				t.Errorf("target after rename: %v %v, want object %d", n, err, before.Obj)
			}
			for _, p := range tc.gone {
				if _, err := e.f.Resolve(pRoot, p); Errno(err) != syscall.ENOENT {
					t.Errorf("%s after rename: %v, want ENOENT", p, err)
				}
			}
			if tc.check != nil {
				tc.check(t, e)
			}
			// The result survives a commit and a reopen.
			e.commit(time.Second)
			e.reopen()
			if n, err := e.f.Lookup(pRoot, e.resolve(pRoot, tc.ddir), tc.dname); err != nil || n.Obj != before.Obj {
				t.Errorf("target after reopen: %v %v", n, err)
			}
		})
	}

	// The replaced target is gone, and its past is kept.
	e := build(t)
	gOld := e.resolve(pRoot, "/g")
	t1 := e.commit(time.Second)
	if err := e.f.Rename(pRoot, e.f.Root(), "f", e.f.Root(), "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Getattr(gOld); Errno(err) != syscall.ENOENT {
		t.Errorf("replaced target still live: %v", err)
	}
	e.commit(time.Second)
	if got := string(e.readAll(pRoot, e.resolve(pRoot, "/g@@"+FormatTID(uint64(t1))))); got != "gee" {
		t.Errorf("replaced target in the past reads %q", got)
	}
	// A non-root caller needs write permission on a directory it moves to
	// another parent (its .. changes).
	e.mkdir(pRoot, "/pub", 0o777)
	e.mkdir(pRoot, "/pub/theirs", 0o755)
	e.chown(e.resolve(pRoot, "/pub/theirs"), pOther.Uid, pOther.Gid)
	e.mkdir(pRoot, "/pub/sub", 0o777)
	wantErr(t, "move another's dir to another parent", e.f.Rename(pUser, e.resolve(pRoot, "/pub"), "theirs", e.resolve(pRoot, "/pub/sub"), "t"), syscall.EACCES)
	wantErr(t, "rename another's dir within its parent", e.f.Rename(pUser, e.resolve(pRoot, "/pub"), "theirs", e.resolve(pRoot, "/pub"), "t"), 0)
	wantErr(t, "rename in the past", e.f.Rename(pRoot, e.resolve(pRoot, "/@@"+FormatTID(uint64(t1))), "f", e.f.Root(), "z"), syscall.EROFS)
	wantErr(t, "rename from a dir without write permission", e.f.Rename(pUser, e.resolve(pRoot, "/a"), "h", e.resolve(pRoot, "/pub"), "z"), syscall.EACCES)
	// The root of a new store is 1777, like /tmp: anyone may write there,
	// but not move away what others own.
	wantErr(t, "rename another's file out of the sticky root", e.f.Rename(pUser, e.f.Root(), "g", e.resolve(pRoot, "/pub"), "z"), syscall.EPERM)
}

// ---------------------------------------------------------------------------
// rmdir and unlink.

func TestPosixRemove(t *testing.T) {
	e := newTEnv(t)
	d := e.mkdir(pRoot, "/d", 0o755)
	e.file(pRoot, "/d/f", 0o644, "")
	e.mkdir(pRoot, "/d/sub", 0o755)
	e.mkdir(pRoot, "/empty", 0o755)
	r := e.f.Root()
	wantErr(t, "rmdir non-empty", e.f.Remove(pRoot, r, "d", true), syscall.ENOTEMPTY)
	wantErr(t, "unlink a dir", e.f.Remove(pRoot, r, "empty", false), syscall.EISDIR)
	wantErr(t, "rmdir a file", e.f.Remove(pRoot, d, "f", true), syscall.ENOTDIR)
	wantErr(t, "unlink missing", e.f.Remove(pRoot, d, "nope", false), syscall.ENOENT)
	wantErr(t, "rmdir .", e.f.Remove(pRoot, d, ".", true), syscall.EINVAL)
	wantErr(t, "rmdir ..", e.f.Remove(pRoot, d, "..", true), syscall.ENOTEMPTY)
	wantErr(t, "unlink a name too long", e.f.Remove(pRoot, d, strings.Repeat("x", 256), false), syscall.ENAMETOOLONG)
	wantErr(t, "unlink in a file", e.f.Remove(pRoot, e.resolve(pRoot, "/d/f"), "x", false), syscall.ENOTDIR)
	wantErr(t, "rmdir empty", e.f.Remove(pRoot, r, "empty", true), 0)
	wantErr(t, "unlink file", e.f.Remove(pRoot, d, "f", false), 0)
	wantErr(t, "rmdir non-empty after unlink", e.f.Remove(pRoot, r, "d", true), syscall.ENOTEMPTY)
	wantErr(t, "rmdir sub", e.f.Remove(pRoot, d, "sub", true), 0)
	wantErr(t, "rmdir now empty", e.f.Remove(pRoot, r, "d", true), 0)
	if _, err := e.f.Getattr(d); Errno(err) != syscall.ENOENT {
		t.Errorf("removed dir: %v", err)
	}
	if got := e.names(pRoot, r); len(got) != 0 {
		t.Errorf("root lists %v", got)
	}
	if a := e.attr(r); a.Nlink != 2 {
		t.Errorf("root nlink %d", a.Nlink)
	}
	// A non-root caller needs write permission on the directory.
	e.mkdir(pRoot, "/ro", 0o755)
	e.file(pRoot, "/ro/f", 0o666, "")
	wantErr(t, "unlink in a 0755 dir of root", e.f.Remove(pUser, e.resolve(pRoot, "/ro"), "f", false), syscall.EACCES)
}

// ---------------------------------------------------------------------------
// Names: limits, ".", "..", and the reserved @@.

func TestPosixNames(t *testing.T) {
	e := newTEnv(t)
	r := e.f.Root()
	d := e.mkdir(pRoot, "/d", 0o755)
	n255 := strings.Repeat("a", 255)
	n256 := strings.Repeat("a", 256)
	if _, _, err := e.f.Create(pRoot, d, n255, 0o644, true); err != nil {
		t.Errorf("create a 255-byte name: %v", err)
	}
	if _, err := e.f.Lookup(pRoot, d, n255); err != nil {
		t.Errorf("lookup a 255-byte name: %v", err)
	}
	// Multi-byte: 85 three-byte runes is 255 bytes, one more is 258.
	if _, err := e.f.Mkdir(pRoot, d, strings.Repeat("€", 85), 0o755); err != nil {
		t.Errorf("mkdir a 255-byte UTF-8 name: %v", err)
	}
	wantErr(t, "mkdir a 258-byte UTF-8 name", func() error { _, err := e.f.Mkdir(pRoot, d, strings.Repeat("€", 86), 0o755); return err }(), syscall.ENAMETOOLONG)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"create", func() error { _, _, err := e.f.Create(pRoot, d, n256, 0o644, true); return err }()},
		{"mkdir", func() error { _, err := e.f.Mkdir(pRoot, d, n256, 0o755); return err }()},
		{"symlink", func() error { _, err := e.f.Symlink(pRoot, d, n256, "x"); return err }()},
		{"mknod", func() error {
			_, err := e.f.Mknod(pRoot, d, n256, NewAttr{Kind: history.KindFifo, Mode: 0o644})
			return err
		}()},
		{"link", e.f.Link(pRoot, e.resolve(pRoot, "/d/"+n255), d, n256)},
		{"lookup", func() error { _, err := e.f.Lookup(pRoot, d, n256); return err }()},
		{"resolve", func() error { _, err := e.f.Resolve(pRoot, "/d/"+n256); return err }()},
		{"rename to", e.f.Rename(pRoot, d, n255, d, n256)},
		{"rename from", e.f.Rename(pRoot, d, n256, d, "x")},
		{"remove", e.f.Remove(pRoot, d, n256, false)},
		{"symlink target over PathMax", func() error { _, err := e.f.Symlink(pRoot, d, "s", strings.Repeat("t", PathMax+1)); return err }()},
	} {
		wantErr(t, tc.name+" with a 256-byte name", tc.err, syscall.ENAMETOOLONG)
	}
	// Paths: over 4096 bytes is ENAMETOOLONG even when every name is short;
	// exactly 4096 is looked at.
	long := strings.Repeat("/abcdefg", PathMax/8) // 4096 bytes
	if len(long) != PathMax {
		t.Fatal(len(long))
	}
	wantErr(t, "resolve a 4096-byte path", func() error { _, err := e.f.Resolve(pRoot, long); return err }(), syscall.ENOENT)
	wantErr(t, "resolve a 4097-byte path", func() error { _, err := e.f.Resolve(pRoot, long+"x"); return err }(), syscall.ENAMETOOLONG)
	wantErr(t, "resolve a 4097-byte path of dots", func() error { _, err := e.f.Resolve(pRoot, strings.Repeat("./", 2048)+"d"); return err }(), syscall.ENAMETOOLONG)
	// A deep tree reached by a path just under the limit.
	p := ""
	for i := 0; len(p) < PathMax-200; i++ {
		p += "/" + strings.Repeat("x", 99)
		dir, name := path.Split(p)
		if _, err := e.f.Mkdir(pRoot, e.resolve(pRoot, dir), name, 0o755); err != nil {
			t.Fatalf("mkdir %d: %v", i, err)
		}
	}
	if _, err := e.f.Resolve(pRoot, p); err != nil {
		t.Errorf("resolve a %d-byte path: %v", len(p), err)
	}

	// "." and "..".
	sub := e.mkdir(pRoot, "/d/sub", 0o755)
	for _, tc := range []struct {
		dir  Node
		name string
		want Node
	}{
		{d, ".", d}, {d, "..", r}, {sub, "..", d}, {sub, ".", sub}, {r, "..", r}, {r, ".", r},
	} {
		got, err := e.f.Lookup(pRoot, tc.dir, tc.name)
		if err != nil || got != tc.want {
			t.Errorf("lookup %q in %d = %+v %v, want %+v", tc.name, tc.dir.Obj, got, err, tc.want)
		}
	}
	// No name names nothing (a protocol lookup; paths skip empty components).
	if n, err := e.f.Lookup(pRoot, d, ""); Errno(err) != syscall.ENOENT {
		t.Errorf("lookup of the empty name: %+v %v, want ENOENT", n, err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/d/sub/..", "/d"}, {"/d/./sub/../sub", "/d/sub"}, {"/..", "/"}, {"/../../d", "/d"}, {"//d//sub//", "/d/sub"},
		{"d/sub", "/d/sub"}, {"", "/"}, {"/d/sub/../..", "/"}, {".", "/"},
	} {
		got, err := e.f.Resolve(pRoot, tc.path)
		if err != nil || got != e.resolve(pRoot, tc.want) {
			t.Errorf("resolve %q = %+v %v, want %s", tc.path, got, err, tc.want)
		}
	}
	wantErr(t, "resolve through a file", func() error {
		_, err := e.f.Resolve(pRoot, "/d/"+n255+"/x")
		return err
	}(), syscall.ENOTDIR)
	wantErr(t, "create .", func() error { _, _, err := e.f.Create(pRoot, d, ".", 0o644, true); return err }(), syscall.EEXIST)
	wantErr(t, "mkdir ..", func() error { _, err := e.f.Mkdir(pRoot, d, "..", 0o755); return err }(), syscall.EEXIST)
	wantErr(t, "create empty name", func() error { _, _, err := e.f.Create(pRoot, d, "", 0o644, true); return err }(), syscall.EINVAL)
	wantErr(t, "create a name with a slash", func() error { _, _, err := e.f.Create(pRoot, d, "a/b", 0o644, true); return err }(), syscall.EINVAL)
	wantErr(t, "create a name with NUL", func() error { _, _, err := e.f.Create(pRoot, d, "a\x00b", 0o644, true); return err }(), syscall.EINVAL)
	for _, name := range e.names(pRoot, d) {
		if name == "." || name == ".." {
			t.Errorf("readdir lists %q", name)
		}
	}
	// ".." in the past stays in the past.
	tid := e.commit(time.Second)
	hsub := e.resolve(pRoot, "/d/sub@@"+FormatTID(uint64(tid)))
	up, err := e.f.Lookup(pRoot, hsub, "..")
	if err != nil || up.Obj != d.Obj || up.At != hsub.At {
		t.Errorf(".. of a historical dir = %+v %v", up, err)
	}
	if got := e.resolve(pRoot, "/@@"+FormatTID(uint64(tid))+"/d/sub/../.."); got.Obj != r.Obj || got.At != history.TID(tid) {
		t.Errorf("/@@T/d/sub/../.. = %+v", got)
	}

	// @@ in a new name is refused.
	f := e.resolve(pRoot, "/d/"+n255)
	for _, name := range []string{"x@@y", "x@@", "@@", "@@2020-01-01", "a@@@b", "@@x"} {
		wantErr(t, "create "+name, func() error { _, _, err := e.f.Create(pRoot, d, name, 0o644, true); return err }(), syscall.EINVAL)
		wantErr(t, "mkdir "+name, func() error { _, err := e.f.Mkdir(pRoot, d, name, 0o755); return err }(), syscall.EINVAL)
		wantErr(t, "symlink "+name, func() error { _, err := e.f.Symlink(pRoot, d, name, "t"); return err }(), syscall.EINVAL)
		wantErr(t, "mknod "+name, func() error {
			_, err := e.f.Mknod(pRoot, d, name, NewAttr{Kind: history.KindFifo, Mode: 0o644})
			return err
		}(), syscall.EINVAL)
		wantErr(t, "link "+name, e.f.Link(pRoot, f, d, name), syscall.EINVAL)
		wantErr(t, "rename to "+name, e.f.Rename(pRoot, d, n255, d, name), syscall.EINVAL)
	}
	// A single @ is an ordinary character.
	if _, _, err := e.f.Create(pRoot, d, "a@b", 0o644, true); err != nil {
		t.Errorf("create a@b: %v", err)
	}
	// Listings never show @@ names.
	for _, name := range e.names(pRoot, d) {
		if strings.Contains(name, "@@") {
			t.Errorf("listing shows %q", name)
		}
	}
}

// ---------------------------------------------------------------------------
// Data: truncate, extend, sparse, append.

func TestPosixData(t *testing.T) {
	e := newTEnv(t)
	n := e.file(pRoot, "/f", 0o644, "hello, world")
	e.setattr(pRoot, n, SetAttr{Size: u64(5)})
	if got := string(e.readAll(pRoot, n)); got != "hello" {
		t.Errorf("truncated down: %q", got)
	}
	e.setattr(pRoot, n, SetAttr{Size: u64(12)})
	if got := e.readAll(pRoot, n); !bytes.Equal(got, []byte("hello\x00\x00\x00\x00\x00\x00\x00")) {
		t.Errorf("extended: %q (old bytes must not come back)", got)
	}
	// Across chunks: a file of 3 chunks and a bit, cut inside the second.
	big := make([]byte, 3*history.ChunkSize+1000)
	for i := range big {
		big[i] = byte(i*7 + i>>16)
	}
	b := e.create(pRoot, "/big", 0o644)
	e.write(pRoot, b, 0, big)
	e.commit(time.Second)
	cut := uint64(history.ChunkSize + 123)
	e.setattr(pRoot, b, SetAttr{Size: u64(cut)})
	e.setattr(pRoot, b, SetAttr{Size: u64(uint64(len(big)))})
	want := append(append([]byte(nil), big[:cut]...), make([]byte, uint64(len(big))-cut)...)
	if got := e.readAll(pRoot, b); !bytes.Equal(got, want) {
		t.Errorf("cut and extended across chunks: differs")
	}
	e.commit(time.Second)
	e.reopen()
	b = e.resolve(pRoot, "/big")
	if got := e.readAll(pRoot, b); !bytes.Equal(got, want) {
		t.Errorf("cut and extended across chunks, after reopen: differs")
	}
	// Truncate to zero and write again.
	e.setattr(pRoot, b, SetAttr{Size: u64(0)})
	if a := e.attr(b); a.Size != 0 {
		t.Errorf("size after truncate to 0: %d", a.Size)
	}
	e.write(pRoot, b, 3, []byte("x"))
	if got := e.readAll(pRoot, b); !bytes.Equal(got, []byte("\x00\x00\x00x")) {
		t.Errorf("write after truncate: %q", got)
	}

	// Sparse: one byte a terabyte out.
	st0, _ := e.f.Stats()
	sp := e.create(pRoot, "/sparse", 0o644)
	far := int64(1) << 40
	e.write(pRoot, sp, far, []byte("end"))
	e.write(pRoot, sp, 0, []byte("start"))
	e.commit(time.Second)
	if a := e.attr(sp); a.Size != uint64(far)+3 {
		t.Errorf("sparse size %d", a.Size)
	}
	p := make([]byte, 8)
	if k, err := e.f.Read(pRoot, sp, p, far-5); err != nil || k != 8 || !bytes.Equal(p, []byte("\x00\x00\x00\x00\x00end")) {
		t.Errorf("sparse read at the end: %d %v %q", k, err, p)
	}
	if k, err := e.f.Read(pRoot, sp, p, far/2); err != nil || k != 8 || !bytes.Equal(p, make([]byte, 8)) {
		t.Errorf("sparse read in the hole: %d %v %q", k, err, p)
	}
	if k, err := e.f.Read(pRoot, sp, p, 0); err != nil || k != 8 || string(p) != "start\x00\x00\x00" {
		t.Errorf("sparse read at the start: %d %v %q", k, err, p)
	}
	if k, err := e.f.Read(pRoot, sp, p, far+3); err != nil || k != 0 {
		t.Errorf("read at EOF: %d %v", k, err)
	}
	if k, err := e.f.Read(pRoot, sp, p, far+1000); err != nil || k != 0 {
		t.Errorf("read past EOF: %d %v", k, err)
	}
	st1, _ := e.f.Stats()
	if grew := st1.BlockBytes - st0.BlockBytes; grew > 1<<20 {
		t.Errorf("a sparse terabyte stored %d block bytes", grew)
	}
	// Extending by truncate stores nothing either.
	e.setattr(pRoot, sp, SetAttr{Size: u64(1 << 45)})
	e.commit(time.Second)
	st2, _ := e.f.Stats()
	if grew := st2.BlockBytes - st1.BlockBytes; grew > 1<<20 {
		t.Errorf("extending to 32 TiB stored %d block bytes", grew)
	}
	wantErr(t, "read at a negative offset", func() error { _, err := e.f.Read(pRoot, sp, p, -1); return err }(), syscall.EINVAL)
	wantErr(t, "write at a negative offset", func() error { _, err := e.f.Write(pRoot, sp, p, -1, false); return err }(), syscall.EINVAL)
	wantErr(t, "write beyond the largest file", func() error { _, err := e.f.Write(pRoot, sp, p, 1<<62, false); return err }(), syscall.EFBIG)

	// O_APPEND writes at the end whatever the offset says.
	a := e.file(pRoot, "/append", 0o644, "abc")
	for _, s := range []string{"def", "g"} {
		if k, err := e.f.Write(pRoot, a, []byte(s), 0, true); err != nil || k != len(s) {
			t.Fatalf("append %q: %d %v", s, k, err)
		}
	}
	if got := string(e.readAll(pRoot, a)); got != "abcdefg" {
		t.Errorf("after appends: %q", got)
	}
	e.commit(time.Second)
	if _, err := e.f.Write(pRoot, a, []byte("!"), 2, true); err != nil {
		t.Fatal(err)
	}
	if got := string(e.readAll(pRoot, a)); got != "abcdefg!" {
		t.Errorf("append after commit: %q", got)
	}
	// Writes to directories and special files.
	d := e.mkdir(pRoot, "/dir", 0o755)
	wantErr(t, "write a dir", func() error { _, err := e.f.Write(pRoot, d, []byte("x"), 0, false); return err }(), syscall.EISDIR)
	wantErr(t, "read a dir", func() error { _, err := e.f.Read(pRoot, d, p, 0); return err }(), syscall.EISDIR)
	wantErr(t, "truncate a dir", func() error { _, err := e.f.Setattr(pRoot, d, SetAttr{Size: u64(0)}); return err }(), syscall.EISDIR)
	wantErr(t, "open a dir for write", e.f.Open(pRoot, d, AccessWrite), syscall.EISDIR)
}

// ---------------------------------------------------------------------------
// Times.

func TestPosixTimes(t *testing.T) {
	e := newTEnv(t)
	d := e.mkdir(pRoot, "/d", 0o755)
	at := func(n Node) (a, m, c time.Time) { x := e.attr(n); return x.Atime, x.Mtime, x.Ctime }
	is := func(what string, got, want time.Time) {
		t.Helper()
		if !got.Equal(want) {
			t.Errorf("%s = %v, want %v", what, got.UTC(), want.UTC())
		}
	}

	t1 := e.clk.Add(time.Minute)
	f := e.create(pRoot, "/d/f", 0o644)
	fa, fm, fc := at(f)
	is("new file atime", fa, t1)
	is("new file mtime", fm, t1)
	is("new file ctime", fc, t1)
	is("new file btime", e.attr(f).Btime, t1)
	_, dm, dc := at(d)
	is("dir mtime after create", dm, t1)
	is("dir ctime after create", dc, t1)

	t2 := e.clk.Add(time.Minute)
	e.write(pRoot, f, 0, []byte("data"))
	_, fm, fc = at(f)
	is("mtime after write", fm, t2)
	is("ctime after write", fc, t2)
	_, dm, _ = at(d)
	is("dir mtime after a write to a file in it", dm, t1)

	t3 := e.clk.Add(time.Minute)
	e.chmod(f, 0o600)
	_, fm, fc = at(f)
	is("mtime after chmod", fm, t2)
	is("ctime after chmod", fc, t3)

	t4 := e.clk.Add(time.Minute)
	e.setattr(pRoot, f, SetAttr{Size: u64(2)})
	_, fm, fc = at(f)
	is("mtime after truncate", fm, t4)
	is("ctime after truncate", fc, t4)

	t5 := e.clk.Add(time.Minute)
	if err := e.f.Link(pRoot, f, d, "g"); err != nil {
		t.Fatal(err)
	}
	_, fm, fc = at(f)
	is("mtime after link", fm, t4)
	is("ctime after link", fc, t5)
	_, dm, dc = at(d)
	is("dir mtime after link", dm, t5)
	is("dir ctime after link", dc, t5)

	t6 := e.clk.Add(time.Minute)
	if err := e.f.Remove(pRoot, d, "g", false); err != nil {
		t.Fatal(err)
	}
	_, fm, fc = at(f)
	is("mtime after unlink of one link", fm, t4)
	is("ctime after unlink of one link", fc, t6)
	_, dm, dc = at(d)
	is("dir mtime after unlink", dm, t6)
	is("dir ctime after unlink", dc, t6)

	t7 := e.clk.Add(time.Minute)
	e2 := e.mkdir(pRoot, "/e", 0o755)
	if err := e.f.Rename(pRoot, d, "f", e2, "f"); err != nil {
		t.Fatal(err)
	}
	_, fm, fc = at(f)
	is("mtime after rename", fm, t4)
	is("ctime after rename", fc, t7)
	_, dm, dc = at(d)
	is("source dir mtime after rename", dm, t7)
	is("source dir ctime after rename", dc, t7)
	_, dm, _ = at(e2)
	is("target dir mtime after rename", dm, t7)

	// utimes: explicit and now.
	t8 := e.clk.Add(time.Minute)
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	e.setattr(pRoot, f, SetAttr{Atime: &old, Mtime: &old})
	fa, fm, fc = at(f)
	is("atime set", fa, old)
	is("mtime set", fm, old)
	is("ctime after utimes", fc, t8)
	t9 := e.clk.Add(time.Minute)
	e.setattr(pRoot, f, SetAttr{AtimeNow: true, MtimeNow: true})
	fa, fm, _ = at(f)
	is("atime now", fa, t9)
	is("mtime now", fm, t9)

	// Read updates atime as relatime does: only when it is older than
	// mtime or ctime, or a day old.
	e.setattr(pRoot, f, SetAttr{Atime: &old})
	t10 := e.clk.Add(time.Minute)
	e.readAll(pRoot, f)
	fa, _, _ = at(f)
	is("atime after read of a file with an old atime", fa, t10)
	e.clk.Add(time.Minute)
	e.readAll(pRoot, f)
	fa, _, _ = at(f)
	is("atime after a second read (relatime)", fa, t10)
	t11 := e.clk.Add(25 * time.Hour)
	e.readAll(pRoot, f)
	fa, _, _ = at(f)
	is("atime after a read a day later", fa, t11)

	// xattr changes change ctime only.
	t12 := e.clk.Add(time.Minute)
	if err := e.f.SetXattr(pRoot, f, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	_, fm, fc = at(f)
	is("mtime after setxattr", fm, t9)
	is("ctime after setxattr", fc, t12)

	// The past keeps the times it had.
	tid := e.commit(time.Minute)
	e.clk.Add(time.Minute)
	e.write(pRoot, f, 0, []byte("new"))
	e.commit(time.Minute)
	_, fm, _ = at(e.resolve(pRoot, "/e/f@@"+FormatTID(uint64(tid))))
	is("mtime in the past", fm, t9)
}

// ---------------------------------------------------------------------------
// Extended attributes.

func TestPosixXattr(t *testing.T) {
	e := newTEnv(t)
	e.home()
	f := e.file(pUser, "/home/f", 0o644, "")
	d := e.resolve(pRoot, "/home")
	l, err := e.f.Symlink(pUser, d, "l", "f")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "get missing", func() error { _, err := e.f.GetXattr(pUser, f, "user.a"); return err }(), syscall.ENODATA)
	wantErr(t, "replace missing", e.f.SetXattr(pUser, f, "user.a", []byte("1"), XattrReplace), syscall.ENODATA)
	wantErr(t, "remove missing", e.f.RemoveXattr(pUser, f, "user.a"), syscall.ENODATA)
	wantErr(t, "create", e.f.SetXattr(pUser, f, "user.a", []byte("1"), XattrCreate), 0)
	wantErr(t, "create existing", e.f.SetXattr(pUser, f, "user.a", []byte("2"), XattrCreate), syscall.EEXIST)
	if v, err := e.f.GetXattr(pUser, f, "user.a"); err != nil || string(v) != "1" {
		t.Errorf("get after failed create: %q %v", v, err)
	}
	wantErr(t, "replace existing", e.f.SetXattr(pUser, f, "user.a", []byte("2"), XattrReplace), 0)
	wantErr(t, "set without flags", e.f.SetXattr(pUser, f, "user.b", []byte(""), 0), 0)
	wantErr(t, "set without flags again", e.f.SetXattr(pUser, f, "user.b", []byte("bee"), 0), 0)
	wantErr(t, "set on a dir", e.f.SetXattr(pUser, d, "user.dir", []byte("d"), 0), 0)
	if v, err := e.f.GetXattr(pUser, f, "user.a"); err != nil || string(v) != "2" {
		t.Errorf("get after replace: %q %v", v, err)
	}
	names, err := e.f.ListXattr(pUser, f)
	if err != nil || strings.Join(names, ",") != "user.a,user.b" {
		t.Errorf("list: %v %v", names, err)
	}
	tid := e.commit(time.Second)
	wantErr(t, "remove", e.f.RemoveXattr(pUser, f, "user.a"), 0)
	wantErr(t, "get removed", func() error { _, err := e.f.GetXattr(pUser, f, "user.a"); return err }(), syscall.ENODATA)
	// Permissions: user.* follows the mode; other namespaces are root's.
	wantErr(t, "other user sets user.* on a 0644 file", e.f.SetXattr(pOther, f, "user.x", []byte("1"), 0), syscall.EACCES)
	wantErr(t, "other user reads user.* of a 0644 file", func() error { _, err := e.f.GetXattr(pOther, f, "user.b"); return err }(), 0)
	wantErr(t, "non-root sets trusted.*", e.f.SetXattr(pUser, f, "trusted.x", []byte("1"), 0), syscall.EPERM)
	wantErr(t, "non-root removes trusted.*", e.f.RemoveXattr(pUser, f, "trusted.x"), syscall.EPERM)
	wantErr(t, "root sets trusted.*", e.f.SetXattr(pRoot, f, "trusted.x", []byte("1"), 0), 0)
	wantErr(t, "user.* on a symlink", e.f.SetXattr(pUser, l, "user.x", []byte("1"), 0), syscall.EPERM)
	wantErr(t, "empty name", e.f.SetXattr(pUser, f, "", []byte("1"), 0), syscall.ERANGE)
	wantErr(t, "name too long", e.f.SetXattr(pUser, f, "user."+strings.Repeat("n", 251), []byte("1"), 0), syscall.ERANGE)
	wantErr(t, "value too big", e.f.SetXattr(pUser, f, "user.big", make([]byte, XattrSizeMax+1), 0), syscall.E2BIG)
	wantErr(t, "largest value", e.f.SetXattr(pUser, f, "user.big", bytes.Repeat([]byte("v"), XattrSizeMax), 0), 0)
	// The past keeps its xattrs, read only.
	e.commit(time.Second)
	past := e.resolve(pRoot, "/home/f@@"+FormatTID(uint64(tid)))
	if v, err := e.f.GetXattr(pUser, past, "user.a"); err != nil || string(v) != "2" {
		t.Errorf("xattr in the past: %q %v", v, err)
	}
	if names, _ := e.f.ListXattr(pUser, past); strings.Join(names, ",") != "user.a,user.b" {
		t.Errorf("list in the past: %v", names)
	}
	wantErr(t, "set in the past", e.f.SetXattr(pRoot, past, "user.c", nil, 0), syscall.EROFS)
	wantErr(t, "remove in the past", e.f.RemoveXattr(pRoot, past, "user.a"), syscall.EROFS)
	// Survive reopen.
	e.reopen()
	f = e.resolve(pRoot, "/home/f")
	if v, err := e.f.GetXattr(pUser, f, "user.big"); err != nil || len(v) != XattrSizeMax {
		t.Errorf("big xattr after reopen: %d %v", len(v), err)
	}
}

// ---------------------------------------------------------------------------
// Symlinks and special files.

func TestPosixSymlinkMknod(t *testing.T) {
	e := newTEnv(t)
	r := e.f.Root()
	e.file(pRoot, "/target", 0o644, "pointed at")
	// A target is a path: 1 to PathMax-1 bytes (PathMax with its NUL), no NUL.
	for _, tc := range []struct {
		target string
		want   syscall.Errno
	}{{strings.Repeat("p", PathMax), syscall.ENAMETOOLONG}, {"", syscall.EINVAL}, {"a\x00b", syscall.EINVAL}} {
		_, err := e.f.Symlink(pRoot, r, "bad", tc.target)
		wantErr(t, fmt.Sprintf("symlink to a %d-byte target", len(tc.target)), err, tc.want)
	}
	for _, target := range []string{"target", "/abs/path", "../up", "dangling", "with space and ünïcode", strings.Repeat("p", PathMax-1)} {
		name := fmt.Sprintf("l%d", len(target))
		l, err := e.f.Symlink(pRoot, r, name, target)
		if err != nil {
			t.Fatalf("symlink %q: %v", target, err)
		}
		a := e.attr(l)
		if a.Kind != history.KindSymlink || a.Size != uint64(len(target)) || a.Mode != 0o777 || a.Nlink != 1 {
			t.Errorf("symlink attrs: %+v", a)
		}
		if a.FileMode()&os.ModeSymlink == 0 || a.UnixMode()&syscall.S_IFMT != syscall.S_IFLNK {
			t.Errorf("symlink modes %v %o", a.FileMode(), a.UnixMode())
		}
		if got, err := e.f.Readlink(l); got != target || err != nil {
			t.Errorf("readlink = %q %v, want %q", got, err, target)
		}
	}
	wantErr(t, "readlink of a file", func() error { _, err := e.f.Readlink(e.resolve(pRoot, "/target")); return err }(), syscall.EINVAL)
	wantErr(t, "symlink over an existing name", func() error { _, err := e.f.Symlink(pRoot, r, "target", "x"); return err }(), syscall.EEXIST)
	wantErr(t, "read a symlink", func() error { _, err := e.f.Read(pRoot, e.resolve(pRoot, "/l6"), make([]byte, 4), 0); return err }(), syscall.EINVAL)
	// Resolve does not follow symlinks: they are the clients' business.
	if n := e.resolve(pRoot, "/l6"); e.attr(n).Kind != history.KindSymlink {
		t.Errorf("resolve followed a symlink")
	}

	for _, tc := range []struct {
		kind  history.Kind
		rdev  uint64
		ifmt  uint32
		gomod os.FileMode
	}{
		{history.KindFifo, 0, syscall.S_IFIFO, os.ModeNamedPipe},
		{history.KindChar, 1<<8 | 3, syscall.S_IFCHR, os.ModeDevice | os.ModeCharDevice},
		{history.KindBlock, 8<<8 | 1, syscall.S_IFBLK, os.ModeDevice},
		{history.KindSocket, 0, syscall.S_IFSOCK, os.ModeSocket},
		{history.KindFile, 0, syscall.S_IFREG, 0},
	} {
		name := "node-" + tc.kind.String()
		n, err := e.f.Mknod(pRoot, r, name, NewAttr{Kind: tc.kind, Mode: 0o640, Rdev: tc.rdev})
		if err != nil {
			t.Fatalf("mknod %v: %v", tc.kind, err)
		}
		a := e.attr(e.resolve(pRoot, "/"+name))
		if a.Kind != tc.kind || a.Rdev != tc.rdev || a.Mode != 0o640 || a.Size != 0 || a.Nlink != 1 {
			t.Errorf("%v attrs: %+v", tc.kind, a)
		}
		if a.UnixMode() != tc.ifmt|0o640 {
			t.Errorf("%v st_mode %o", tc.kind, a.UnixMode())
		}
		if a.FileMode() != tc.gomod|0o640 {
			t.Errorf("%v FileMode %v", tc.kind, a.FileMode())
		}
		if tc.kind != history.KindFile {
			wantErr(t, "read a "+tc.kind.String(), func() error { _, err := e.f.Read(pRoot, n, make([]byte, 4), 0); return err }(), syscall.EINVAL)
			wantErr(t, "write a "+tc.kind.String(), func() error { _, err := e.f.Write(pRoot, n, []byte("x"), 0, false); return err }(), syscall.EINVAL)
			wantErr(t, "truncate a "+tc.kind.String(), func() error { _, err := e.f.Setattr(pRoot, n, SetAttr{Size: u64(0)}); return err }(), syscall.EINVAL)
		}
		// Special files can be linked, renamed and removed like files.
		if err := e.f.Link(pRoot, n, r, name+"-link"); err != nil {
			t.Errorf("link a %v: %v", tc.kind, err)
		}
		if err := e.f.Rename(pRoot, r, name+"-link", r, name+"-moved"); err != nil {
			t.Errorf("rename a %v: %v", tc.kind, err)
		}
		if a := e.attr(n); a.Nlink != 2 {
			t.Errorf("%v nlink %d", tc.kind, a.Nlink)
		}
	}
	wantErr(t, "mknod a dir", func() error {
		_, err := e.f.Mknod(pRoot, r, "dir", NewAttr{Kind: history.KindDir, Mode: 0o755})
		return err
	}(), syscall.EINVAL)
	wantErr(t, "mknod a symlink", func() error {
		_, err := e.f.Mknod(pRoot, r, "sl", NewAttr{Kind: history.KindSymlink, Mode: 0o777})
		return err
	}(), syscall.EINVAL)
	// Directory mode: the type bits.
	if a := e.attr(r); a.UnixMode()&syscall.S_IFMT != syscall.S_IFDIR || !a.FileMode().IsDir() {
		t.Errorf("root modes %o %v", a.UnixMode(), a.FileMode())
	}
	sx := e.file(pRoot, "/suid", 0o644, "")
	e.chmod(sx, 0o7755)
	if m := e.attr(sx).FileMode(); m != os.ModeSetuid|os.ModeSetgid|os.ModeSticky|0o755 {
		t.Errorf("FileMode of 07755: %v", m)
	}
	// Everything survives a reopen and reads the same in the past.
	tid := e.commit(time.Second)
	e.reopen()
	for _, p := range []string{"/node-char", "/@@" + FormatTID(uint64(tid)) + "/node-char"} {
		if a := e.attr(e.resolve(pRoot, p)); a.Kind != history.KindChar || a.Rdev != 1<<8|3 {
			t.Errorf("%s: %+v", p, a)
		}
	}
	if got, err := e.f.Readlink(e.resolve(pRoot, "/l6@@"+FormatTID(uint64(tid)))); got != "target" || err != nil {
		t.Errorf("historical readlink %q %v", got, err)
	}

	// Create (non-exclusive) of an existing name opens it; of a dir, EISDIR.
	n, created, err := e.f.Create(pRoot, r, "target", 0o600, false)
	if err != nil || created || n != e.resolve(pRoot, "/target") {
		t.Errorf("create existing: %v %v %v", n, created, err)
	}
	if a := e.attr(n); a.Mode != 0o644 {
		t.Errorf("create of an existing file changed its mode to %o", a.Mode)
	}
	e.mkdir(pRoot, "/dd", 0o755)
	_, _, err = e.f.Create(pRoot, r, "dd", 0o600, false)
	wantErr(t, "create over a dir", err, syscall.EISDIR)
	_, _, err = e.f.Create(pRoot, r, "target", 0o600, true)
	wantErr(t, "exclusive create of an existing file", err, syscall.EEXIST)
	_, err = e.f.Mkdir(pRoot, r, "target", 0o755)
	wantErr(t, "mkdir over a file", err, syscall.EEXIST)
}

// ---------------------------------------------------------------------------
// setgid directories: BSD group semantics.

func TestPosixSetgidDir(t *testing.T) {
	e := newTEnv(t)
	d := e.mkdir(pRoot, "/proj", 0o777)
	e.chown(d, 0, 50)
	e.chmod(d, 0o2777)
	f := e.create(pUser, "/proj/f", 0o644)
	if a := e.attr(f); a.Gid != 50 || a.Uid != pUser.Uid {
		t.Errorf("file in setgid dir: uid %d gid %d", a.Uid, a.Gid)
	}
	s := e.mkdir(pUser, "/proj/sub", 0o755)
	if a := e.attr(s); a.Gid != 50 || a.Mode != 0o2755 {
		t.Errorf("dir in setgid dir: gid %d mode %o", a.Gid, a.Mode)
	}
	// A non-member cannot create a setgid file of a group it is not in.
	g, _, err := e.f.Create(pUser, d, "g", 0o2755, true)
	if err != nil {
		t.Fatal(err)
	}
	if a := e.attr(g); a.Mode != 0o755 {
		t.Errorf("setgid file by a non-member: mode %o", a.Mode)
	}
	// Outside a setgid dir a new object gets the caller's group.
	e.mkdir(pRoot, "/plain", 0o777)
	h := e.create(pUser, "/plain/h", 0o644)
	if a := e.attr(h); a.Gid != pUser.Gid || a.Uid != pUser.Uid {
		t.Errorf("new file: uid %d gid %d", a.Uid, a.Gid)
	}
}

// ---------------------------------------------------------------------------
// The open-unlinked file.

func TestPosixOpenUnlinked(t *testing.T) {
	e := newTEnv(t)
	e.home()
	home := e.resolve(pRoot, "/home")
	n := e.file(pUser, "/home/f", 0o644, "still here")
	t0 := e.commit(time.Second)
	if err := e.f.Open(pUser, n, AccessRead|AccessWrite); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Open(pUser, n, AccessRead); err != nil { // a second open
		t.Fatal(err)
	}
	if err := e.f.Remove(pUser, home, "f", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Lookup(pUser, home, "f"); Errno(err) != syscall.ENOENT {
		t.Errorf("lookup of the unlinked name: %v", err)
	}
	if names := e.names(pUser, home); len(names) != 0 {
		t.Errorf("dir lists %v", names)
	}
	a, err := e.f.Getattr(n)
	if err != nil || a.Nlink != 0 || a.Size != 10 {
		t.Errorf("getattr of the open unlinked file: %+v %v", a, err)
	}
	if got := string(e.readAll(pUser, n)); got != "still here" {
		t.Errorf("read: %q", got)
	}
	// Writes through the handle keep working, across a commit too.
	e.write(pUser, n, 0, []byte("STILL"))
	e.commit(time.Second)
	if got := string(e.readAll(pUser, n)); got != "STILL here" {
		t.Errorf("read after write and commit: %q", got)
	}
	// A link cannot bring it back.
	wantErr(t, "link an unlinked file", e.f.Link(pUser, n, home, "back"), syscall.ENOENT)
	if err := e.f.Release(n); err != nil {
		t.Fatal(err)
	}
	if got := string(e.readAll(pUser, n)); got != "STILL here" {
		t.Errorf("read after the first release: %q", got)
	}
	if err := e.f.Release(n); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Getattr(n); Errno(err) != syscall.ENOENT {
		t.Errorf("getattr after the last release: %v, want ENOENT", err)
	}
	wantErr(t, "read after the last release", func() error { _, err := e.f.Read(pUser, n, make([]byte, 4), 0); return err }(), syscall.ENOENT)
	e.commit(time.Second)
	if _, err := e.f.Getattr(n); Errno(err) != syscall.ENOENT {
		t.Errorf("getattr after commit: %v, want ENOENT", err)
	}
	// History keeps it.
	if got := string(e.readAll(pUser, e.resolve(pUser, "/home/f@@"+FormatTID(uint64(t0))))); got != "still here" {
		t.Errorf("past: %q", got)
	}

	// A file open while its last name goes by rename-over.
	v := e.file(pUser, "/home/victim", 0o644, "victim")
	e.file(pUser, "/home/winner", 0o644, "winner")
	if err := e.f.Open(pUser, v, AccessRead); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Rename(pUser, home, "winner", home, "victim"); err != nil {
		t.Fatal(err)
	}
	if got := string(e.readAll(pUser, v)); got != "victim" {
		t.Errorf("read of a renamed-over open file: %q", got)
	}
	if err := e.f.Release(v); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Getattr(v); Errno(err) != syscall.ENOENT {
		t.Errorf("renamed-over file after release: %v", err)
	}
	// A file that is not open ends with its last name at once.
	w := e.file(pUser, "/home/w", 0o644, "w")
	if err := e.f.Remove(pUser, home, "w", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Getattr(w); Errno(err) != syscall.ENOENT {
		t.Errorf("unlinked closed file: %v", err)
	}
	// Open and release of a file with names left ends nothing.
	x := e.file(pUser, "/home/x", 0o644, "x")
	if err := e.f.Open(pUser, x, AccessRead); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Release(x); err != nil {
		t.Fatal(err)
	}
	e.resolve(pUser, "/home/x")
	// Open checks permissions.
	y := e.file(pRoot, "/home/y", 0o600, "")
	e.chown(y, pOther.Uid, pOther.Gid)
	wantErr(t, "open 0600 file of another user", e.f.Open(pUser, y, AccessRead), syscall.EACCES)
	wantErr(t, "owner opens own 0600 file", e.f.Open(pOther, y, AccessRead), 0)
	e.f.Release(y)
}

// ---------------------------------------------------------------------------
// errno mapping.

func TestPosixErrno(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{syscall.EACCES, syscall.EACCES},
		{fmt.Errorf("wrapped: %w", syscall.ENOTEMPTY), syscall.ENOTEMPTY},
		{fmt.Errorf("object 3: %w", syscall.ENOENT), syscall.ENOENT},
		{history.ErrNotFound, syscall.ENOENT},
		{fmt.Errorf("x: %w", history.ErrNotFound), syscall.ENOENT},
		{ErrBadWhen, syscall.EINVAL},
		{fmt.Errorf("%w: %w", syscall.EINVAL, ErrBadWhen), syscall.EINVAL},
		{os.ErrNotExist, syscall.ENOENT},
		{os.ErrExist, syscall.EEXIST},
		{os.ErrPermission, syscall.EACCES},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.ENOSPC}, syscall.ENOSPC},
		{errors.New("something else"), syscall.EIO},
		{history.ErrCorrupt, syscall.EIO},
	} {
		if got := Errno(tc.err); got != tc.want {
			t.Errorf("Errno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	// Errors as the operations return them.
	e := newTEnv(t)
	_, err := e.f.Resolve(pRoot, "/nope")
	wantErr(t, "resolve missing", err, syscall.ENOENT)
	_, err = e.f.Resolve(pRoot, "/@@2007-13-01")
	wantErr(t, "bad when", err, syscall.EINVAL)
	if !errors.Is(err, ErrBadWhen) {
		t.Errorf("bad when does not wrap ErrBadWhen: %v", err)
	}
	_, err = e.f.Getattr(Node{Obj: 999999, At: history.Live})
	wantErr(t, "getattr of no object", err, syscall.ENOENT)
	// A read-only export refuses every change with EROFS.
	ro := New(e.s, Options{ReadOnly: true, Clock: e.clk.Now})
	_, err = ro.Mkdir(pRoot, ro.Root(), "x", 0o755)
	wantErr(t, "mkdir on a read-only export", err, syscall.EROFS)
	_, _, err = ro.Create(pRoot, ro.Root(), "x", 0o644, true)
	wantErr(t, "create on a read-only export", err, syscall.EROFS)
	_, err = ro.Setattr(pRoot, ro.Root(), SetAttr{Mode: u32(0o700)})
	wantErr(t, "chmod on a read-only export", err, syscall.EROFS)
	wantErr(t, "open for write on a read-only export", ro.Open(pRoot, ro.Root(), AccessWrite), syscall.EROFS)
	if got, _ := ro.Access(pRoot, ro.Root(), AccessWrite|AccessRead); got != AccessRead {
		t.Errorf("Access on a read-only export: %03b", got)
	}
}

// ---------------------------------------------------------------------------
// The past refuses every change.

func TestPosixPastIsReadOnly(t *testing.T) {
	e := newTEnv(t)
	d := e.mkdir(pRoot, "/d", 0o755)
	f := e.file(pRoot, "/d/f", 0o644, "x")
	if _, err := e.f.Symlink(pRoot, d, "l", "f"); err != nil {
		t.Fatal(err)
	}
	tid := e.commit(time.Second)
	when := FormatTID(uint64(tid))
	pd := e.resolve(pRoot, "/d@@"+when)
	pf := e.resolve(pRoot, "/d/f@@"+when)
	vd := e.resolve(pRoot, "/d/f@@")
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"create", func() error { _, _, err := e.f.Create(pRoot, pd, "n", 0o644, true); return err }()},
		{"mkdir", func() error { _, err := e.f.Mkdir(pRoot, pd, "n", 0o755); return err }()},
		{"symlink", func() error { _, err := e.f.Symlink(pRoot, pd, "n", "t"); return err }()},
		{"mknod", func() error { _, err := e.f.Mknod(pRoot, pd, "n", NewAttr{Kind: history.KindFifo}); return err }()},
		{"write", func() error { _, err := e.f.Write(pRoot, pf, []byte("y"), 0, false); return err }()},
		{"truncate", func() error { _, err := e.f.Setattr(pRoot, pf, SetAttr{Size: u64(0)}); return err }()},
		{"chmod", func() error { _, err := e.f.Setattr(pRoot, pf, SetAttr{Mode: u32(0o600)}); return err }()},
		{"remove", e.f.Remove(pRoot, pd, "f", false)},
		{"remove via @@ name", e.f.Remove(pRoot, d, "f@@"+when, false)},
		{"link into the past", e.f.Link(pRoot, f, pd, "n")},
		{"link of a past file", e.f.Link(pRoot, pf, d, "n")},
		{"rename into the past", e.f.Rename(pRoot, d, "f", pd, "n")},
		{"create in a version listing", func() error { _, _, err := e.f.Create(pRoot, vd, "n", 0o644, true); return err }()},
		{"setxattr", e.f.SetXattr(pRoot, pf, "user.x", nil, 0)},
		{"clone into the past", func() error { _, err := e.f.Clone(pRoot, "/d/f", "/d@@"+when+"/g"); return err }()},
	} {
		wantErr(t, tc.name+" in the past", tc.err, syscall.EROFS)
	}
	if got := string(e.readAll(pRoot, f)); got != "x" {
		t.Errorf("live file changed: %q", got)
	}
}

// TestPosixOpenUnlinkedAfterRestart: a file unlinked while open has no
// name and no open handle once the server restarts (open counts live in
// memory), so like ext4's orphan list at mount it must end then rather
// than stay a live object for ever, counted in stats and never pruned.
func TestPosixOpenUnlinkedAfterRestart(t *testing.T) {
	e := newTEnv(t)
	n := e.file(pRoot, "/f", 0o644, "orphan data")
	if err := e.f.Open(pRoot, n, AccessRead); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Remove(pRoot, e.f.Root(), "f", false); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Second)
	e.reopen() // the server restarts: no handle survives
	e.commit(time.Second)
	if a, err := e.f.Getattr(n); Errno(err) != syscall.ENOENT {
		t.Errorf("an unlinked file that was open before a restart is still live: %+v %v", a, err)
	}
	if st, _ := e.f.Stats(); st.Objects != 1 || st.LogicalBytes != 0 {
		t.Errorf("stats count the orphan: objects %d logical bytes %d", st.Objects, st.LogicalBytes)
	}
}

// TestPosixXattrTrustedHidden: trusted.* attributes are visible and
// accessible only to root (Linux xattr(7)); other callers neither read
// them nor see their names.
func TestPosixXattrTrustedHidden(t *testing.T) {
	e := newTEnv(t)
	e.mkdir(pRoot, "/open", 0o777)
	n := e.file(pUser, "/open/f", 0o644, "")
	if err := e.f.SetXattr(pRoot, n, "trusted.secret", []byte("root only"), 0); err != nil {
		t.Fatal(err)
	}
	if err := e.f.SetXattr(pUser, n, "user.plain", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if v, err := e.f.GetXattr(pUser, n, "trusted.secret"); err == nil {
		t.Errorf("non-root read trusted.secret = %q", v)
	}
	if names, _ := e.f.ListXattr(pUser, n); slicesContains(names, "trusted.secret") {
		t.Errorf("non-root lists %v", names)
	}
	if names, _ := e.f.ListXattr(pRoot, n); !slicesContains(names, "trusted.secret") || !slicesContains(names, "user.plain") {
		t.Errorf("root lists %v", names)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestPosixMknodDevicesNeedRoot: creating a character or block device
// needs privilege (mknod(2): EPERM without CAP_MKNOD); fifos and sockets
// do not. Otherwise a user could make a 0666 /dev/mem on an export that a
// client mounts without nodev.
func TestPosixMknodDevicesNeedRoot(t *testing.T) {
	e := newTEnv(t)
	h := e.home()
	for _, tc := range []struct {
		kind history.Kind
		want syscall.Errno
	}{
		{history.KindChar, syscall.EPERM},
		{history.KindBlock, syscall.EPERM},
		{history.KindFifo, 0},
		{history.KindSocket, 0},
	} {
		_, err := e.f.Mknod(pUser, h, "n-"+tc.kind.String(), NewAttr{Kind: tc.kind, Mode: 0o666, Rdev: 1<<8 | 1})
		wantErr(t, "non-root mknod of a "+tc.kind.String(), err, tc.want)
		_, err = e.f.Mknod(pRoot, h, "r-"+tc.kind.String(), NewAttr{Kind: tc.kind, Mode: 0o666, Rdev: 1<<8 | 1})
		wantErr(t, "root mknod of a "+tc.kind.String(), err, 0)
	}
}

// Found by driving the server with a raw NFS client: what knfsd and Linux
// do where asof did otherwise.
func TestPosixEdgesKnfsdAgrees(t *testing.T) {
	e := newTEnv(t)
	r := e.f.Root()
	f := e.file(pRoot, "/f", 0o644, "abc")
	// A write of nothing changes nothing, not even at an offset past the end.
	before := e.attr(f)
	e.clk.Add(time.Second)
	if n, err := e.f.Write(pRoot, f, nil, 1000000, false); err != nil || n != 0 {
		t.Fatalf("write of nothing: %d %v", n, err)
	}
	if a := e.attr(f); a.Size != 3 || !a.Mtime.Equal(before.Mtime) {
		t.Errorf("after a write of nothing: size %d mtime %v, want 3 and %v", a.Size, a.Mtime, before.Mtime)
	}
	// A size past the largest file is EFBIG, not a file nothing can read.
	for _, size := range []uint64{maxFileSize + 1, 1<<63 - 1, 1<<64 - 1} {
		_, err := e.f.Setattr(pRoot, f, SetAttr{Size: u64(size)})
		wantErr(t, fmt.Sprintf("truncate to %d", size), err, syscall.EFBIG)
	}
	if _, err := e.f.Setattr(pRoot, f, SetAttr{Size: u64(maxFileSize)}); err != nil {
		t.Errorf("truncate to the largest size: %v", err)
	}
	// A symlink's mode stays 0777.
	l, err := e.f.Symlink(pRoot, r, "l", "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Setattr(pRoot, l, SetAttr{Mode: u32(0o600)}); err != nil {
		t.Fatal(err)
	}
	if a := e.attr(l); a.Mode != 0o777 {
		t.Errorf("symlink mode after chmod 600: %o, want 777", a.Mode)
	}
	// mkdir keeps the sticky bit; setuid and setgid it does not take from
	// the mode (setgid comes from the parent).
	d, err := e.f.Mkdir(pRoot, r, "d", 0o7777)
	if err != nil {
		t.Fatal(err)
	}
	if a := e.attr(d); a.Mode != 0o1777 {
		t.Errorf("mkdir 7777: mode %o, want 1777", a.Mode)
	}
	// A create that may open an existing name opens a regular file only.
	for _, name := range []string{"l", "d"} {
		_, _, err := e.f.Create(pRoot, r, name, 0o644, false)
		want := syscall.EEXIST
		if name == "d" {
			want = syscall.EISDIR
		}
		wantErr(t, "create over "+name, err, want)
	}
	// A file has at most LinkMax names (ext4's 65000; PATHCONF says so).
	if err := e.s.Update(func(tx *history.Tx) error {
		ino, err := tx.Inode(f.Obj)
		if err != nil {
			return err
		}
		ino.Nlink = LinkMax
		return tx.PutInode(f.Obj, ino)
	}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "link past LinkMax", e.f.Link(pRoot, f, r, "one-too-many"), syscall.EMLINK)
	// chmod with a chown drops the set-id bits it asks for.
	if _, err := e.f.Setattr(pRoot, f, SetAttr{Mode: u32(0o6755), Uid: u32(0)}); err != nil {
		t.Fatal(err)
	}
	if a := e.attr(f); a.Mode != 0o755 {
		t.Errorf("chmod 6755 with chown: mode %o, want 755", a.Mode)
	}
}
