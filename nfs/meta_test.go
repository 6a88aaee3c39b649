package nfs

import (
	"bytes"
	"testing"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/nfs/sunrpc"
)

// lookupRes is a LOOKUP reply.
type lookupRes struct {
	status    uint32
	fh        []byte
	obj, dir  *fattr
	remaining int
}

func (r *rawConn) lookup(dir []byte, name string) lookupRes {
	r.t.Helper()
	x := r.call(procLookup, diropArgs(dir, name))
	var res lookupRes
	res.status = x.u32()
	if res.status == nfsOK {
		res.fh = bytes.Clone(x.handle())
		res.obj = x.postOp()
	}
	res.dir = x.postOp()
	if x.err != nil {
		r.t.Fatalf("LOOKUP %q: short reply", name)
	}
	res.remaining = len(x.b)
	return res
}

// LOOKUP, GETATTR, CREATE and REMOVE answer with their statuses, handles
// and attributes, each read once: the directory's attributes in a LOOKUP
// reply and the pre-op ones of a change are those read to check the handle.
func TestMetadataReplies(t *testing.T) {
	s := newTestStore(t)
	f := fs.New(s, fs.Options{Squash: fs.SquashNone})
	ts := serveFS(t, f)
	file := mustCreate(t, f, f.Root(), "file", 0o644)
	dir, err := f.Mkdir(root, f.Root(), "dir", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := f.Mkdir(root, f.Root(), "closed", 0o700)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := f.Mkdir(root, f.Root(), "gone", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	goneFH := ts.fh(gone)
	if err := f.Remove(root, f.Root(), "gone", true); err != nil {
		t.Fatal(err)
	}
	rootFH, fileFH, dirFH := ts.fh(f.Root()), ts.fh(file), ts.fh(dir)
	rootIno := f.Root().Ino()
	c, cu := dialRaw(t, ts.addr), dialAs(t, ts.addr, 1000, 1000)

	// Found: the handle, the object's attributes, the directory's.
	res := c.lookup(rootFH, "file")
	if res.status != nfsOK || !bytes.Equal(res.fh, fileFH) || res.obj == nil || res.obj.ino != file.Ino() ||
		res.obj.kind != 1 || res.dir == nil || res.dir.ino != rootIno || res.remaining != 0 {
		t.Errorf("LOOKUP file: %+v", res)
	}
	res = c.lookup(rootFH, "dir")
	if res.status != nfsOK || !bytes.Equal(res.fh, dirFH) || res.obj == nil || res.obj.kind != 2 {
		t.Errorf("LOOKUP dir: %+v", res)
	}
	if res = c.lookup(dirFH, ".."); res.status != nfsOK || res.obj == nil || res.obj.ino != rootIno ||
		res.dir == nil || res.dir.ino != dir.Ino() {
		t.Errorf("LOOKUP ..: %+v", res)
	}
	for _, tc := range []struct {
		c       *rawConn
		dir     []byte
		name    string
		want    uint32
		dirAttr bool
	}{
		{c, rootFH, "missing", 2, true},      // NOENT, with the directory's attributes
		{c, fileFH, "x", 20, true},           // NOTDIR, with the file's
		{cu, ts.fh(closed), "x", 13, true},   // ACCES: no search permission
		{c, rootFH, "file@@bad", 22, true},   // INVAL: a WHEN that does not parse
		{c, goneFH, "x", nfsErrStale, false}, // the directory is gone
		{c, bytes.Repeat([]byte{7}, handleLen), "x", nfsErrBadHandl, false},
	} {
		res := tc.c.lookup(tc.dir, tc.name)
		if res.status != tc.want || (res.dir != nil) != tc.dirAttr || res.remaining != 0 {
			t.Errorf("LOOKUP %q: status %d, dir attributes %v; want %d, %v", tc.name, res.status, res.dir != nil, tc.want, tc.dirAttr)
		}
	}
	if _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if res := c.lookup(rootFH, "file@@"); res.status != nfsOK || res.obj == nil || res.obj.kind != 2 {
		t.Errorf("LOOKUP file@@: %+v", res)
	}

	// GETATTR.
	x := c.call(procGetattr, xdrHandle(fileFH))
	if st := x.u32(); st != nfsOK {
		t.Errorf("GETATTR: %d", st)
	} else if a := x.fattr(); a.ino != file.Ino() || a.mode != 0o644 || len(x.b) != 0 {
		t.Errorf("GETATTR: %+v", a)
	}
	if st := c.call(procGetattr, xdrHandle(goneFH)).u32(); st != nfsErrStale {
		t.Errorf("GETATTR of a removed directory: %d", st)
	}

	// CREATE then REMOVE: the directory's size and times before, its
	// attributes after.
	w := &xdrWriter{b: diropArgs(dirFH, "new")}
	w.u32(1) // GUARDED
	w.bool(true)
	w.u32(0o600)
	w.b = append(w.b, make([]byte, 5*4)...)
	x = c.call(procCreate, w.b)
	if st := x.u32(); st != nfsOK {
		t.Fatalf("CREATE: %d", st)
	}
	if !x.bool() {
		t.Fatal("CREATE: no handle")
	}
	nfh := bytes.Clone(x.handle())
	a := x.postOp()
	pre, post := x.wccData()
	if a == nil || a.mode != 0o600 || a.kind != 1 || pre < 0 || post == nil || post.ino != dir.Ino() || x.err != nil || len(x.b) != 0 {
		t.Errorf("CREATE: %+v pre %d post %+v", a, pre, post)
	}
	if res := c.lookup(dirFH, "new"); res.status != nfsOK || !bytes.Equal(res.fh, nfh) {
		t.Errorf("LOOKUP of the new file: %+v", res)
	}
	x = c.call(procRemove, diropArgs(dirFH, "new"))
	st := x.u32()
	pre, post = x.wccData()
	if st != nfsOK || pre < 0 || post == nil || post.ino != dir.Ino() || x.err != nil || len(x.b) != 0 {
		t.Errorf("REMOVE: %d pre %d post %+v", st, pre, post)
	}
	if n, err := f.Lookup(root, dir, "new"); err == nil {
		t.Errorf("removed, yet found: %v", n)
	}
	x = c.call(procRemove, diropArgs(goneFH, "x"))
	st = x.u32()
	if pre, post = x.wccData(); st != nfsErrStale || pre != -1 || post != nil {
		t.Errorf("REMOVE in a removed directory: %d pre %d post %v", st, pre, post)
	}
}

// NULL, READLINK, FSSTAT, UMNT and UMNTALL answer as RFC 1813 has them:
// NULL and UMNTALL with nothing, UMNT with nothing once its path decodes,
// READLINK with the target and the link's attributes (INVAL for a file),
// FSSTAT with fs's figures and the object's own attributes: its mode and
// its three times, as GETATTR has them. PATHCONF has fs's limits.
func TestNullReadlinkFsstatUmntPathconf(t *testing.T) {
	f := newFS(t)
	ts := serveFS(t, f)
	link, err := f.Symlink(root, f.Root(), "link", "some/target")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := f.Mkdir(root, f.Root(), "dir", 0o751)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Unix(1000000000, 5)
	if _, err := f.Setattr(root, dir, fs.SetAttr{Atime: &past}); err != nil {
		t.Fatal(err)
	}
	file := mustCreate(t, f, f.Root(), "file", 0o644)
	c := dialRaw(t, ts.addr)

	for _, p := range []struct {
		what       string
		prog, proc uint32
		args       []byte
	}{
		{"NFS NULL", progNFS, procNull, nil},
		{"MOUNT NULL", progMount, mountProcNull, nil},
		{"UMNT", progMount, mountProcUmnt, func() []byte { w := &xdrWriter{}; w.opaque([]byte("/dir")); return w.b }()},
		{"UMNTALL", progMount, mountProcUmntAll, nil},
	} {
		if x := c.callProg(p.prog, p.proc, p.args); len(x.b) != 0 {
			t.Errorf("%s: %d bytes of results, want none", p.what, len(x.b))
		}
	}
	xid := c.send(progMount, mountProcUmnt, []byte{0, 0, 1})
	if got, st, _ := c.recv(); got != xid || st != sunrpc.GarbageArgs {
		t.Errorf("UMNT of a path that does not decode: accept_stat %d, want GARBAGE_ARGS", st)
	}

	x := c.call(procReadlink, xdrHandle(ts.fh(link)))
	st := x.u32()
	a := x.postOp()
	if target := string(x.opaque(4096)); st != nfsOK || a == nil || a.kind != 5 || a.ino != link.Ino() || target != "some/target" || x.err != nil || len(x.b) != 0 {
		t.Errorf("READLINK: %d %+v %q %v", st, a, target, x.err)
	}
	x = c.call(procReadlink, xdrHandle(ts.fh(file)))
	if st, a := x.u32(), x.postOp(); st != nfsErrInval || a == nil || a.ino != file.Ino() {
		t.Errorf("READLINK of a file: %d %+v, want INVAL with the file's attributes", st, a)
	}

	want := c.call(procGetattr, xdrHandle(ts.fh(dir)))
	want.u32()
	wa := want.fattr()
	x = c.call(procFsstat, xdrHandle(ts.fh(dir)))
	st = x.u32()
	a = x.postOp()
	var v [6]uint64
	for i := range v {
		v[i] = x.u64()
	}
	x.u32() // invarsec
	if st != nfsOK || a == nil || x.err != nil || len(x.b) != 0 {
		t.Fatalf("FSSTAT: status %d, attributes %v, %v, %d bytes more", st, a != nil, x.err, len(x.b))
	}
	if *a != wa || a.mode != 0o751 || a.kind != 2 || !a.atime.Equal(past) || a.atime.Equal(a.mtime) || a.fsid != f.Fsid() {
		t.Errorf("FSSTAT attributes %+v, want GETATTR's %+v (mode 751, atime %v, fsid %x)", *a, wa, past, f.Fsid())
	}
	statfs, err := f.Statfs()
	if err != nil {
		t.Fatal(err)
	}
	if v[0] != statfs.Bytes || v[0] == 0 || v[1] > v[0] || v[2] > v[1] || v[3] < v[4] || v[5] != v[4] {
		t.Errorf("FSSTAT figures %v; statfs %+v", v, statfs)
	}

	x = c.call(procPathconf, xdrHandle(ts.fh(f.Root())))
	st = x.u32()
	a = x.postOp()
	linkMax, nameMax := x.u32(), x.u32()
	noTrunc, chownRestricted, caseInsensitive, casePreserving := x.bool(), x.bool(), x.bool(), x.bool()
	if st != nfsOK || a == nil || linkMax != fs.LinkMax || nameMax != fs.NameMax || !noTrunc || !chownRestricted ||
		caseInsensitive || !casePreserving || x.err != nil || len(x.b) != 0 {
		t.Errorf("PATHCONF: status %d attributes %v linkmax %d namemax %d no_trunc %v chown_restricted %v case_insensitive %v case_preserving %v (%v)",
			st, a != nil, linkMax, nameMax, noTrunc, chownRestricted, caseInsensitive, casePreserving, x.err)
	}
}

// xdrHandle encodes a handle as GETATTR's arguments.
func xdrHandle(fh []byte) []byte {
	w := &xdrWriter{}
	w.opaque(fh)
	return w.b
}

// CREATE UNCHECKED of a name that exists opens that file: as with knfsd
// and POSIX open(O_CREAT), its mode stays; only a size in the attributes
// (a truncation) applies. A new file takes the mode asked.
func TestCreateUncheckedKeepsAnExistingFile(t *testing.T) {
	s := newTestStore(t)
	f := fs.New(s, fs.Options{Squash: fs.SquashNone})
	ts := serveFS(t, f)
	file := mustCreate(t, f, f.Root(), "keep", 0o600)
	if _, err := f.Write(root, file, []byte("hello"), 0, false); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, ts.addr)
	rootFH := ts.fh(f.Root())
	create := func(name string, mode uint32, size *uint64) *fattr {
		t.Helper()
		w := &xdrWriter{b: diropArgs(rootFH, name)}
		w.u32(0) // UNCHECKED
		w.bool(true)
		w.u32(mode)
		w.bool(false) // uid
		w.bool(false) // gid
		w.bool(size != nil)
		if size != nil {
			w.u64(*size)
		}
		w.u32(0) // atime: don't change
		w.u32(0) // mtime
		x := c.call(procCreate, w.b)
		if st := x.u32(); st != nfsOK {
			t.Fatalf("CREATE %s: status %d", name, st)
		}
		if !x.bool() {
			t.Fatalf("CREATE %s: no handle", name)
		}
		x.handle()
		a := x.postOp()
		if a == nil {
			t.Fatalf("CREATE %s: no attributes", name)
		}
		return a
	}
	if a := create("keep", 0o644, nil); a.mode != 0o600 || a.size != 5 || a.ino != file.Ino() {
		t.Errorf("CREATE UNCHECKED of an existing file: mode %o size %d ino %d; want 600, 5, %d", a.mode, a.size, a.ino, file.Ino())
	}
	zero := uint64(0)
	if a := create("keep", 0o644, &zero); a.mode != 0o600 || a.size != 0 {
		t.Errorf("CREATE UNCHECKED with size 0 of an existing file: mode %o size %d; want 600, 0", a.mode, a.size)
	}
	if a := create("new", 0o640, nil); a.mode != 0o640 || a.size != 0 {
		t.Errorf("CREATE UNCHECKED of a new file: mode %o size %d; want 640, 0", a.mode, a.size)
	}
}
