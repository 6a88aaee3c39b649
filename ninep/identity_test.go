package ninep

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/asof/asof/fs"
)

// rootCred makes the fixtures of these tests through fs, whatever the
// squash of the fs they run on.
var rootCred = fs.Cred{}

func (m *mux) open(fid uint32, flags p9.OpenFlags) (linux.Errno, error) {
	errno, _, err := m.do(msgTlopen, func(e *encoder) { e.u32(fid); e.u32(uint32(flags)) })
	return errno, err
}

// attachAt attaches a new fid as nuname (or uname, when nuname is noUID)
// and fails the test unless that works.
func attachAt(t *testing.T, m *mux, uname string, nuname uint32) uint32 {
	t.Helper()
	fid := m.fid()
	if _, errno, err := m.attach(fid, uname, "", nuname); err != nil || errno != 0 {
		t.Fatalf("attach as %q/%d: %v %v", uname, nuname, errno, err)
	}
	return fid
}

// openAs walks from an attached fid to name and opens it with flags.
func openAs(t *testing.T, m *mux, root uint32, name string, flags p9.OpenFlags) linux.Errno {
	t.Helper()
	fid := m.fid()
	if _, errno, err := m.walk(root, fid, name); err != nil || errno != 0 {
		t.Fatalf("walk to %s: %v %v", name, errno, err)
	}
	defer m.clunk(fid)
	errno, err := m.open(fid, flags)
	if err != nil {
		t.Fatal(err)
	}
	return errno
}

func ownerOf(t *testing.T, e *env, path string) (uid, gid uint32) {
	t.Helper()
	n, err := e.f.Resolve(rootCred, path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	a, err := e.f.Getattr(n)
	if err != nil {
		t.Fatal(err)
	}
	return a.Uid, a.Gid
}

func TestAttachActsAsItsUser(t *testing.T) {
	e := newEnvWith(t, fs.Options{}, Options{})
	m := dialMux(t, e.addr)
	alice := attachAt(t, m, "", 1000)
	if err := m.create(alice, "mine", 0o640); err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(t, e, "/mine"); uid != 1000 || gid != e.f.LocalUser(1000).Gid {
		t.Fatalf("a file made by uid 1000 belongs to %d:%d", uid, gid)
	}
	if errno := openAs(t, m, alice, "mine", p9.ReadWrite); errno != 0 {
		t.Fatalf("the owner opening her file: %v", errno)
	}
	// Another user on the same connection is kept out by the mode bits.
	bob := attachAt(t, m, "", 4242)
	if errno := openAs(t, m, bob, "mine", p9.ReadOnly); errno != linux.EACCES {
		t.Fatalf("another user reading a 0640 file: %v, want EACCES", errno)
	}
	if errno := openAs(t, m, bob, "mine", p9.WriteOnly); errno != linux.EACCES {
		t.Fatalf("another user writing a 0640 file: %v, want EACCES", errno)
	}
	// A fid walked from bob's attach is bob's, even once alice's attach
	// has been clunked.
	m.clunk(alice)
	if errno := openAs(t, m, bob, "mine", p9.ReadOnly); errno != linux.EACCES {
		t.Fatalf("bob after alice's clunk: %v", errno)
	}
}

// groupMember finds, in this machine's user database, a user with a
// supplementary group that is not its primary group.
func groupMember(t *testing.T) (uid uint32, name string, gid uint32) {
	t.Helper()
	f, err := os.Open("/etc/group")
	if err != nil {
		t.Skip("no /etc/group")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 4 || fields[3] == "" {
			continue
		}
		g, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil {
			continue
		}
		for _, member := range strings.Split(fields[3], ",") {
			u, err := user.Lookup(member)
			if err != nil || u.Gid == fields[2] {
				continue
			}
			id, err := strconv.ParseUint(u.Uid, 10, 32)
			if err != nil || id == 0 {
				continue
			}
			return uint32(id), member, uint32(g)
		}
	}
	t.Skip("no user in /etc/group with a supplementary group")
	return 0, "", 0
}

func TestAttachGroupsFromUserDB(t *testing.T) {
	uid, name, gid := groupMember(t)
	e := newEnvWith(t, fs.Options{}, Options{})
	n, _, err := e.f.Create(rootCred, e.f.Root(), "shared", 0o640, true)
	if err != nil {
		t.Fatal(err)
	}
	owner, group := uint32(4242), gid
	if _, err := e.f.Setattr(rootCred, n, fs.SetAttr{Uid: &owner, Gid: &group}); err != nil {
		t.Fatal(err)
	}
	m := dialMux(t, e.addr)
	if errno := openAs(t, m, attachAt(t, m, "", uid), "shared", p9.ReadOnly); errno != 0 {
		t.Fatalf("%s (uid %d), a member of group %d, reading a 0640 file of that group: %v", name, uid, gid, errno)
	}
	if errno := openAs(t, m, attachAt(t, m, name, noUID), "shared", p9.ReadOnly); errno != 0 {
		t.Fatalf("%s attached by name reading a 0640 file of its group: %v", name, errno)
	}
	if errno := openAs(t, m, attachAt(t, m, "", uid), "shared", p9.WriteOnly); errno != linux.EACCES {
		t.Fatalf("a group member writing a 0640 file: %v, want EACCES", errno)
	}
	if errno := openAs(t, m, attachAt(t, m, "", 4243), "shared", p9.ReadOnly); errno != linux.EACCES {
		t.Fatalf("a user outside the group reading a 0640 file: %v, want EACCES", errno)
	}
}

func TestRootIsSquashedUnlessSquashNone(t *testing.T) {
	for _, c := range []struct {
		squash   fs.Squash
		uid, gid uint32
	}{{fs.SquashRoot, fs.AnonID, fs.AnonID}, {fs.SquashNone, 0, 0}} {
		t.Run(c.squash.String(), func(t *testing.T) {
			e := newEnvWith(t, fs.Options{Squash: c.squash}, Options{})
			m := dialMux(t, e.addr)
			if err := m.create(attachAt(t, m, "root", 0), "f", 0o644); err != nil {
				t.Fatal(err)
			}
			if uid, gid := ownerOf(t, e, "/f"); uid != c.uid || gid != c.gid {
				t.Fatalf("squash %v: root made a file of %d:%d, want %d:%d", c.squash, uid, gid, c.uid, c.gid)
			}
		})
	}
}

func TestAttachByNameWhenNoUIDGiven(t *testing.T) {
	u, err := user.LookupId("65534")
	if err != nil {
		t.Skip("no user 65534 in this machine's user database")
	}
	var logs bytes.Buffer
	var lmu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&lmu, &logs}, nil))
	e := newEnvWith(t, fs.Options{Squash: fs.SquashNone}, Options{Logger: log})
	m := dialMux(t, e.addr)
	if err := m.create(attachAt(t, m, u.Username, noUID), "f", 0o644); err != nil {
		t.Fatal(err)
	}
	if uid, _ := ownerOf(t, e, "/f"); uid != 65534 {
		t.Fatalf("%s attached by name made a file of uid %d", u.Username, uid)
	}
	// n_uname wins over uname.
	if err := m.create(attachAt(t, m, u.Username, 1000), "g", 0o644); err != nil {
		t.Fatal(err)
	}
	if uid, _ := ownerOf(t, e, "/g"); uid != 1000 {
		t.Fatalf("n_uname 1000 with uname %s made a file of uid %d", u.Username, uid)
	}
	// A name the database does not know, without a uid, is refused, and
	// logged once.
	for _, name := range []string{"no-such-user-here", "no-such-user-here"} {
		if _, errno, err := m.attach(m.fid(), name, "", noUID); err != nil || errno != linux.EPERM {
			t.Fatalf("attach as unknown %q: %v %v, want EPERM", name, errno, err)
		}
	}
	lmu.Lock()
	defer lmu.Unlock()
	if n := strings.Count(logs.String(), `uname=no-such-user-here`); n != 1 {
		t.Fatalf("the refused name was logged %d times, want once:\n%s", n, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// An attach that names no user at all (p9's own client attaches that way)
// acts as the anonymous identity, as an NFS call without a credential does.
func TestAttachNamingNoUserIsAnonymous(t *testing.T) {
	e := newEnvWith(t, fs.Options{Squash: fs.SquashNone, Anon: &fs.Cred{Uid: 4000, Gid: 4001}}, Options{})
	m := dialMux(t, e.addr)
	if err := m.create(attachAt(t, m, "", noUID), "f", 0o644); err != nil {
		t.Fatal(err)
	}
	if uid, gid := ownerOf(t, e, "/f"); uid != 4000 || gid != 4001 {
		t.Fatalf("an attach naming no one made a file of %d:%d, want 4000:4001", uid, gid)
	}
}
