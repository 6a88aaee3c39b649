package nfs

import (
	"testing"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/nfs/sunrpc"
)

// createAs makes name in dir over c (GUARDED, mode given) and returns the
// status and the new file's attributes.
func createAs(t *testing.T, c *rawConn, dir []byte, name string, mode uint32) (uint32, *fattr) {
	t.Helper()
	w := &xdrWriter{b: diropArgs(dir, name)}
	w.u32(1) // GUARDED
	w.bool(true)
	w.u32(mode)
	w.b = append(w.b, make([]byte, 5*4)...) // uid, gid, size, atime, mtime: unset
	x := c.call(procCreate, w.b)
	st := x.u32()
	if st != nfsOK {
		return st, nil
	}
	if !x.bool() {
		t.Fatalf("CREATE %s: no handle", name)
	}
	x.handle()
	a := x.postOp()
	if x.err != nil || a == nil {
		t.Fatalf("CREATE %s: no attributes (%v)", name, x.err)
	}
	return st, a
}

// Each call acts as the identity its AUTH_SYS credential carries, trusted
// as knfsd trusts it: a file it creates is the caller's; mode bits keep
// another uid out and let the owner (any client that says it is the
// owner) in; group bits admit a caller through a supplementary group.
// AUTH_NONE acts as the anonymous identity.
func TestCallsActAsTheirCredential(t *testing.T) {
	s := newTestStore(t)
	f := fs.New(s, fs.Options{}) // exports.squash root, the default
	ts := serveFS(t, f)
	rootFH := ts.fh(f.Root())
	shared, err := f.Mkdir(root, f.Root(), "shared", 0o770)
	if err != nil {
		t.Fatal(err)
	}
	gid := uint32(500)
	if _, err := f.Setattr(root, shared, fs.SetAttr{Gid: &gid}); err != nil {
		t.Fatal(err)
	}
	sharedFH := ts.fh(shared)

	alice := dialAs(t, ts.addr, 1000, 1000)
	st, a := createAs(t, alice, rootFH, "alices", 0o600)
	if st != nfsOK || a.uid != 1000 || a.gid != 1000 || a.mode != 0o600 {
		t.Fatalf("CREATE as uid 1000: status %d, attributes %+v; want a file owned by 1000:1000", st, a)
	}
	res := alice.lookup(rootFH, "alices")
	if res.status != nfsOK {
		t.Fatalf("LOOKUP alices: %d", res.status)
	}
	alicesFH := res.fh
	if _, err := f.Write(root, mustLookup(t, f, "alices"), []byte("secret"), 0, false); err != nil {
		t.Fatal(err)
	}

	// Another uid is kept out by the mode bits; a client that says it is
	// 1000 is 1000.
	bob := dialAs(t, ts.addr, 1001, 1001)
	if r := bob.read(alicesFH, 0, 10); r.status != 13 {
		t.Errorf("READ of a 0600 file of uid 1000 as uid 1001: status %d, want ACCES", r.status)
	}
	forged := dialAs(t, ts.addr, 1000, 1000)
	if r := forged.read(alicesFH, 0, 10); r.status != nfsOK || string(r.data) != "secret" {
		t.Errorf("READ as a second client claiming uid 1000: status %d %q, want the data", r.status, r.data)
	}

	// Group bits, through a supplementary group.
	if st, _ := createAs(t, bob, sharedFH, "b", 0o644); st != 13 {
		t.Errorf("CREATE in a 0770 directory of group 500, not in the group: status %d, want ACCES", st)
	}
	member := dialAs(t, ts.addr, 1001, 1001, 20, 500)
	if st, a := createAs(t, member, sharedFH, "b", 0o644); st != nfsOK || a.uid != 1001 || a.gid != 1001 {
		t.Errorf("CREATE in a 0770 directory of group 500 with 500 among the groups: status %d %+v", st, a)
	}

	// AUTH_NONE, and root under the default squash, act as 65534.
	anon := dialFlavor(t, ts.addr, sunrpc.AuthNone, nil)
	if st, a := createAs(t, anon, rootFH, "anon", 0o644); st != nfsOK || a.uid != fs.AnonID || a.gid != fs.AnonID {
		t.Errorf("CREATE with AUTH_NONE: status %d %+v; want a file of 65534:65534", st, a)
	}
	if st, a := createAs(t, dialRaw(t, ts.addr), rootFH, "squashed", 0o644); st != nfsOK || a.uid != fs.AnonID || a.gid != fs.AnonID {
		t.Errorf("CREATE as root with root squashed: status %d %+v; want a file of 65534:65534", st, a)
	}
	if r := dialRaw(t, ts.addr).read(alicesFH, 0, 10); r.status != 13 {
		t.Errorf("READ of a 0600 file as squashed root: status %d, want ACCES", r.status)
	}

	// With squash none, root is root.
	none := serveFS(t, fs.New(s, fs.Options{Squash: fs.SquashNone}))
	if st, a := createAs(t, dialRaw(t, none.addr), rootFH, "rooted", 0o644); st != nfsOK || a.uid != 0 || a.gid != 0 {
		t.Errorf("CREATE as root with squash none: status %d %+v; want a file of 0:0", st, a)
	}
}

func mustLookup(t *testing.T, f *fs.FS, name string) fs.Node {
	t.Helper()
	n, err := f.Lookup(root, f.Root(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A credential of another flavour than AUTH_SYS and AUTH_NONE is refused
// MSG_DENIED, AUTH_ERROR, AUTH_TOOWEAK; a malformed AUTH_SYS body
// AUTH_BADCRED. The connection goes on.
func TestOtherFlavoursRefused(t *testing.T) {
	ts := serveFS(t, newFS(t))
	fh := xdrHandle(ts.fh(ts.f.Root()))
	c := dialRaw(t, ts.addr)
	for _, tc := range []struct {
		what   string
		flavor uint32
		cred   []byte
		why    uint32
	}{
		{"RPCSEC_GSS", 6, []byte{0, 0, 0, 1, 0, 0, 0, 0}, sunrpc.AuthTooWeak},
		{"AUTH_DH", 3, nil, sunrpc.AuthTooWeak},
		{"a truncated AUTH_SYS", sunrpc.AuthSys, authSys(1000, 1000)[:12], sunrpc.AuthBadCred},
		{"AUTH_SYS with 17 groups", sunrpc.AuthSys, authSys(1000, 1000, make([]uint32, 17)...), sunrpc.AuthBadCred},
	} {
		if _, err := c.c.Write(encodeCallAuth(77, progNFS, 3, procGetattr, tc.flavor, tc.cred, fh)); err != nil {
			t.Fatal(err)
		}
		rec, err := c.recvRecord()
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		x := &xdrReader{b: rec}
		xid, mtype, stat, rstat, why := x.u32(), x.u32(), x.u32(), x.u32(), x.u32()
		if xid != 77 || mtype != 1 || stat != 1 || rstat != 1 || why != tc.why || x.err != nil || len(x.b) != 0 {
			t.Errorf("GETATTR with %s: xid %d reply %d, reply_stat %d, reject_stat %d, auth_stat %d (%v, %d bytes more); want MSG_DENIED(1) AUTH_ERROR(1) %d",
				tc.what, xid, mtype, stat, rstat, why, x.err, len(x.b), tc.why)
		}
	}
	if st := c.call(procGetattr, fh).u32(); st != nfsOK {
		t.Errorf("GETATTR with AUTH_SYS after the refusals: %d", st)
	}
}
