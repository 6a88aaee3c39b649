package nfs_test

import (
	"context"
	"testing"

	"github.com/asof/asof/integration/clients"
	"github.com/asof/asof/integration/serverproc"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// Status codes the identity tests expect (RFC 1813).
const (
	errPerm  = 1
	errAcces = 13
)

// libnfsDenied is how libnfs's tools say that the server's ACCESS reply refused what they
// were about to do: nfs-cat asks ACCESS before it reads.
const libnfsDenied = "ACCESS denied"

// startSquash runs asof serving NFS with exports.squash set (empty: the default, root),
// and more of the environment from env.
func startSquash(t *testing.T, squash string, env map[string]string) *serverproc.Server {
	t.Helper()
	e := map[string]string{"ASOF_HISTORY_FLUSH_INTERVAL": flush.String()}
	if squash != "" {
		e["ASOF_EXPORTS_SQUASH"] = squash
	}
	for k, v := range env {
		e[k] = v
	}
	return serverproc.Start(t, serverproc.Options{NoNineP: true, Env: e})
}

// owner is the UID and GID nfs-ls shows for name in the export's root.
func owner(t *testing.T, nfs clients.NFS, name string) [2]int {
	t.Helper()
	ents, err := nfs.List(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	e, ok := entry(ents, name)
	if !ok {
		t.Fatalf("nfs-ls /: no %s in %v", name, names(ents))
	}
	return [2]int{e.UID, e.GID}
}

// libnfs acting as several users through its URL's uid= and gid= (AUTH_SYS), against the
// default exports.squash (root): each caller is the identity its credential names, which
// the server trusts as knfsd does, whether or not any user here has that uid (the test
// runs as root: uid 1000 is simply claimed); uid 0 is squashed to 65534, and so is libnfs's
// default credential, this process's root.
func TestLibNFSIdentity(t *testing.T) {
	needLibNFS(t)
	s := startSquash(t, "", nil)
	ctx := context.Background()
	u1000 := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 1000, GID: 1000}}
	u1001 := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 1001, GID: 1001}}
	root := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 0, GID: 0}}
	self := clients.NFS{Addr: s.NFSAddr} // libnfs's default: this process's uid and gid

	if err := u1000.Write(ctx, "/mine.txt", []byte("mine\n")); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, u1001, "mine.txt"); got != [2]int{1000, 1000} {
		t.Errorf("a file uid 1000 wrote: nfs-ls shows uid/gid %v, want [1000 1000]", got)
	}
	p := dialProto(t, s.NFSAddr, "/")
	as1000 := p.as(authSys(1000, 1000))
	as1001 := p.as(authSys(1001, 1001))
	mine := p.lookup("mine.txt")
	if st := as1000.setattrMode(mine, 0o600); st != nfsOK {
		t.Fatalf("uid 1000: chmod 0600 of its own file: %s", statusName(st))
	}

	// the owner reads it: a claimed uid is trusted
	if got, err := u1000.Cat(ctx, "/mine.txt"); err != nil || string(got) != "mine\n" {
		t.Errorf("uid 1000 reads its 0600 file: %q, %v", got, err)
	}
	// nobody else does
	_, err := u1001.Cat(ctx, "/mine.txt")
	expectFail(t, "uid 1001 reads uid 1000's 0600 file", err, libnfsDenied)
	_, err = root.Cat(ctx, "/mine.txt")
	expectFail(t, "uid 0 (squashed) reads uid 1000's 0600 file", err, libnfsDenied)
	_, err = self.Cat(ctx, "/mine.txt")
	expectFail(t, "libnfs's default credential (root, squashed) reads uid 1000's 0600 file", err, libnfsDenied)
	if st, _ := as1001.readAll(mine); st != errAcces {
		t.Errorf("uid 1001: READ of uid 1000's 0600 file: %s, want NFS3ERR_ACCES", statusName(st))
	}
	if st := as1001.write(mine, 0, []byte("theirs\n")); st != errAcces {
		t.Errorf("uid 1001: WRITE to uid 1000's 0600 file: %s, want NFS3ERR_ACCES", statusName(st))
	}
	if st := as1001.setattrMode(mine, 0o666); st != errPerm {
		t.Errorf("uid 1001: chmod of uid 1000's file: %s, want NFS3ERR_PERM", statusName(st))
	}
	u1001id, g1001 := uint32(1001), uint32(1001)
	if st := as1000.setattrOwner(mine, &u1001id, nil); st != errPerm {
		t.Errorf("uid 1000: chown of its file to uid 1001: %s, want NFS3ERR_PERM", statusName(st))
	}
	if st := as1000.setattrOwner(mine, nil, &g1001); st != errPerm {
		t.Errorf("uid 1000: chgrp of its file to a group it is not in: %s, want NFS3ERR_PERM", statusName(st))
	}
	if st := p.as(authSys(0, 0)).setattrOwner(mine, &u1001id, nil); st != errPerm {
		t.Errorf("uid 0 (squashed): chown of uid 1000's file: %s, want NFS3ERR_PERM", statusName(st))
	}
	if got, err := u1000.Cat(ctx, "/mine.txt"); err != nil || string(got) != "mine\n" {
		t.Errorf("uid 1000's file after the refused calls: %q, %v", got, err)
	}
	if got := owner(t, u1000, "mine.txt"); got != [2]int{1000, 1000} {
		t.Errorf("uid 1000's file after the refused calls: owner %v", got)
	}

	// root is squashed to the anonymous identity, 65534
	if err := root.Write(ctx, "/by-root.txt", []byte("r\n")); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, u1000, "by-root.txt"); got != [2]int{65534, 65534} {
		t.Errorf("a file uid 0 wrote: owner %v, want [65534 65534] (root squashed)", got)
	}
	if err := self.Write(ctx, "/by-default.txt", []byte("d\n")); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, u1000, "by-default.txt"); got != [2]int{65534, 65534} {
		t.Errorf("a file written with libnfs's default credential (root): owner %v, want [65534 65534]", got)
	}
	// any uid is trusted, known here or not
	stranger := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 424242, GID: 424243}}
	if err := stranger.Write(ctx, "/stranger.txt", []byte("s\n")); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, u1000, "stranger.txt"); got != [2]int{424242, 424243} {
		t.Errorf("a file uid 424242 wrote: owner %v, want [424242 424243]", got)
	}

	// supplementary groups come from the credential (libnfs sends none: go-nfs-client)
	g2000 := uint32(2000)
	as1000g := p.as(authSys(1000, 1000, 2000))
	if err := u1000.Write(ctx, "/group.txt", []byte("g\n")); err != nil {
		t.Fatal(err)
	}
	grp := p.lookup("group.txt")
	if st := as1000.setattrOwner(grp, nil, &g2000); st != errPerm {
		t.Errorf("uid 1000 without group 2000: chgrp to 2000: %s, want NFS3ERR_PERM", statusName(st))
	}
	if st := as1000g.setattrOwner(grp, nil, &g2000); st != nfsOK {
		t.Fatalf("uid 1000 with group 2000 in its credential: chgrp to 2000: %s", statusName(st))
	}
	if st := as1000g.setattrMode(grp, 0o640); st != nfsOK {
		t.Fatalf("uid 1000: chmod 0640: %s", statusName(st))
	}
	if got := owner(t, u1000, "group.txt"); got != [2]int{1000, 2000} {
		t.Errorf("group.txt: owner %v, want [1000 2000]", got)
	}
	if st, b := p.as(authSys(1001, 1001, 7, 2000)).readAll(grp); st != nfsOK || string(b) != "g\n" {
		t.Errorf("uid 1001 with group 2000: READ of a 0640 file of group 2000: %s %q", statusName(st), b)
	}
	if st, _ := as1001.readAll(grp); st != errAcces {
		t.Errorf("uid 1001 without group 2000: READ of a 0640 file of group 2000: %s, want NFS3ERR_ACCES", statusName(st))
	}
	_, err = u1001.Cat(ctx, "/group.txt")
	expectFail(t, "libnfs as uid 1001 (no groups) reads a 0640 file of group 2000", err, libnfsDenied)

	// AUTH_NONE is the anonymous identity; other flavours are refused as too weak
	st, anon := p.as(rpc.AuthNull).create(p.root, "anon.txt")
	if st != nfsOK {
		t.Fatalf("CREATE with AUTH_NONE: %s", statusName(st))
	}
	if st, a := p.getattr(anon); st != nfsOK || a.UID != 65534 || a.GID != 65534 {
		t.Errorf("a file made with AUTH_NONE: %s, owner %v", statusName(st), a)
	}
	for _, flavor := range []uint32{2, 3, 6} { // AUTH_SHORT, AUTH_DH, RPCSEC_GSS
		reject, auth, denied := rpcDenied(t, s.NFSAddr, rpc.Auth{Flavor: flavor, Body: []byte{0, 0, 0, 1}}, p.root)
		if !denied || reject != 1 || auth != 5 {
			t.Errorf("GETATTR with credential flavour %d: denied=%v reject_stat=%d auth_stat=%d, want MSG_DENIED AUTH_ERROR AUTH_TOOWEAK (1, 5)",
				flavor, denied, reject, auth)
		}
	}
}

// With exports.squash=none, uid 0 acts as root: it owns what it makes, reads any file and
// gives files away.
func TestLibNFSNoSquash(t *testing.T) {
	needLibNFS(t)
	s := startSquash(t, "none", nil)
	ctx := context.Background()
	u1000 := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 1000, GID: 1000}}
	root := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 0, GID: 0}}
	if err := u1000.Write(ctx, "/mine.txt", []byte("mine\n")); err != nil {
		t.Fatal(err)
	}
	p := dialProto(t, s.NFSAddr, "/")
	mine := p.lookup("mine.txt")
	if st := p.as(authSys(1000, 1000)).setattrMode(mine, 0o600); st != nfsOK {
		t.Fatalf("uid 1000: chmod 0600: %s", statusName(st))
	}
	if got, err := root.Cat(ctx, "/mine.txt"); err != nil || string(got) != "mine\n" {
		t.Errorf("uid 0 reads uid 1000's 0600 file: %q, %v", got, err)
	}
	if err := root.Write(ctx, "/by-root.txt", []byte("r\n")); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, u1000, "by-root.txt"); got != [2]int{0, 0} {
		t.Errorf("a file uid 0 wrote: owner %v, want [0 0]", got)
	}
	u1001 := uint32(1001)
	if st := p.as(authSys(0, 0)).setattrOwner(mine, &u1001, nil); st != nfsOK {
		t.Errorf("uid 0: chown of uid 1000's file to 1001: %s", statusName(st))
	}
	if got := owner(t, u1000, "mine.txt"); got != [2]int{1001, 1000} {
		t.Errorf("after root's chown: owner %v, want [1001 1000]", got)
	}
}

// With exports.squash=all every caller is the anonymous identity, here
// exports.anon_uid/anon_gid 4242/4243: what anyone makes is 4242's, and anyone may read it.
func TestLibNFSSquashAll(t *testing.T) {
	needLibNFS(t)
	s := startSquash(t, "all", map[string]string{"ASOF_EXPORTS_ANON_UID": "4242", "ASOF_EXPORTS_ANON_GID": "4243"})
	ctx := context.Background()
	u1000 := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 1000, GID: 1000}}
	u1001 := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 1001, GID: 1001}}
	root := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: 0, GID: 0}}
	for name, c := range map[string]clients.NFS{"u1000.txt": u1000, "root.txt": root} {
		if err := c.Write(ctx, "/"+name, []byte(name)); err != nil {
			t.Fatal(err)
		}
		if got := owner(t, u1001, name); got != [2]int{4242, 4243} {
			t.Errorf("%s: owner %v, want the anonymous [4242 4243]", name, got)
		}
	}
	p := dialProto(t, s.NFSAddr, "/")
	if st := p.as(authSys(1000, 1000)).setattrMode(p.lookup("u1000.txt"), 0o600); st != nfsOK {
		t.Fatalf("chmod 0600: %s", statusName(st))
	}
	if got, err := u1001.Cat(ctx, "/u1000.txt"); err != nil || string(got) != "u1000.txt" {
		t.Errorf("uid 1001 reads the 0600 file uid 1000 made (both anonymous): %q, %v", got, err)
	}
}
