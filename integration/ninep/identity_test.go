// Package ninep_test tests asof's 9P2000.L server end to end with diod's userspace
// clients (diodls, diodcat), which nobody on the project wrote. The Linux kernel's v9fs
// client is tested in integration/vm.
package ninep_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/asof/asof/integration/clients"
	"github.com/asof/asof/integration/serverproc"
	"github.com/asof/asof/integration/testusers"
)

func TestMain(m *testing.M) { os.Exit(serverproc.Main(m)) }

// needUsers skips without diod's and libnfs's clients, and returns the test users, which
// must be in this machine's user database: the server's, where 9P finds a caller's groups.
func needUsers(t *testing.T) testusers.IDs {
	t.Helper()
	if err := clients.Available(); err != nil {
		t.Skip(err)
	}
	ids, err := testusers.Ensure()
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	return ids
}

// ninePAs is diod's clients against s, attaching as uid (nil: this process's euid).
func ninePAs(s *serverproc.Server, uid *int) clients.NineP {
	return clients.NineP{Addr: s.NinePAddr, Aname: "/", As: uid}
}

// longLine is the line of diodls -l output that names name.
func longLine(t *testing.T, c clients.NineP, name string) string {
	t.Helper()
	out, err := c.LsLong(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == name {
			return l
		}
	}
	t.Fatalf("diodls -l: no %s in\n%s", name, out)
	return ""
}

// denied reports whether err is a diod client's "Permission denied".
func denied(err error) bool {
	var ce *clients.Error
	return errors.As(err, &ce) && strings.Contains(string(ce.Stderr), "Permission denied")
}

// Each 9P attach acts as the uid it names, with that user's groups from the server's
// user database (as diod does), and root's attach is squashed to 65534 by default. Files
// are made through libnfs as the same users (libnfs-utils creates them 0660).
func TestDiodIdentity(t *testing.T) {
	ids := needUsers(t)
	s := serverproc.Start(t, serverproc.Options{})
	ctx := context.Background()
	nfs := func(uid, gid int) clients.NFS {
		return clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: uid, GID: gid}}
	}
	if err := nfs(ids.U1, ids.G1).Write(ctx, "/own.txt", []byte("own\n")); err != nil {
		t.Fatal(err)
	}
	if err := nfs(ids.U1, ids.Shared).Write(ctx, "/shared.txt", []byte("shared\n")); err != nil {
		t.Fatal(err)
	}
	u1, u2, u3 := ninePAs(s, &ids.U1), ninePAs(s, &ids.U2), ninePAs(s, &ids.U3)
	root := ninePAs(s, nil) // the tests run as root

	// owners, as diodls names them from this machine's user database
	if l, want := longLine(t, u3, "own.txt"), testusers.User1+" "+testusers.User1; !strings.Contains(l, want) {
		t.Errorf("diodls -l own.txt: %q, want owner and group %q", l, want)
	}
	if l, want := longLine(t, u3, "shared.txt"), testusers.User1+" "+testusers.SharedGroup; !strings.Contains(l, want) {
		t.Errorf("diodls -l shared.txt: %q, want owner and group %q", l, want)
	}

	read := func(who string, c clients.NineP, file, want string) {
		t.Helper()
		got, err := c.Cat(ctx, file)
		switch {
		case want == "" && !denied(err):
			t.Errorf("%s reads %s: %q, %v; want Permission denied", who, file, got, err)
		case want != "" && (err != nil || string(got) != want):
			t.Errorf("%s reads %s: %q, %v; want %q", who, file, got, err, want)
		}
	}
	read(testusers.User1+" (owner)", u1, "own.txt", "own\n")
	read(testusers.User2+" (other)", u2, "own.txt", "")
	read(testusers.User2+" (in "+testusers.SharedGroup+")", u2, "shared.txt", "shared\n")
	read(testusers.User3+" (not in "+testusers.SharedGroup+")", u3, "shared.txt", "")
	read("root (squashed to 65534)", root, "own.txt", "")
	read("root (squashed to 65534)", root, "shared.txt", "")
}

// With exports.squash=none, root's attach acts as root: it reads any file.
func TestDiodNoSquash(t *testing.T) {
	ids := needUsers(t)
	s := serverproc.Start(t, serverproc.Options{Env: map[string]string{"ASOF_EXPORTS_SQUASH": "none"}})
	ctx := context.Background()
	u1 := clients.NFS{Addr: s.NFSAddr, As: &clients.ID{UID: ids.U1, GID: ids.G1}}
	if err := u1.Write(ctx, "/own.txt", []byte("own\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := ninePAs(s, nil).Cat(ctx, "own.txt"); err != nil || string(got) != "own\n" {
		t.Errorf("root reads %s's 0660 file: %q, %v", testusers.User1, got, err)
	}
	if _, err := ninePAs(s, &ids.U3).Cat(ctx, "own.txt"); !denied(err) {
		t.Errorf("%s reads %s's 0660 file: %v, want Permission denied", testusers.User3, testusers.User1, err)
	}
}
