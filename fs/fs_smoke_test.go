package fs

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

func newTestFS(t *testing.T) (*FS, *history.Store) {
	t.Helper()
	s, err := history.Open(t.TempDir(), history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return New(s, Options{}), s
}

var root = Cred{}

func TestSmokeCreateWriteTimeTravel(t *testing.T) {
	f, s := newTestFS(t)
	d, err := f.Mkdir(root, f.Root(), "docs", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := f.Create(root, d, "a.txt", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(root, n, []byte("first"), 0, false); err != nil {
		t.Fatal(err)
	}
	t1, _ := s.Commit()
	time.Sleep(2 * time.Millisecond)
	if _, err := f.Write(root, n, []byte("SECOND"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := f.Rename(root, d, "a.txt", f.Root(), "b.txt"); err != nil {
		t.Fatal(err)
	}
	s.Commit()

	read := func(path string) string {
		t.Helper()
		n, err := f.Resolve(root, path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p := make([]byte, 100)
		k, err := f.Read(root, n, p, 0)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return string(p[:k])
	}
	if got := read("/b.txt"); got != "SECOND" {
		t.Fatalf("live: %q", got)
	}
	hex := FormatTID(uint64(t1))
	for _, p := range []string{"/docs/a.txt@@" + hex, "/docs@@" + hex + "/a.txt", "/@@" + hex + "/docs/a.txt", "/docs/@@" + hex + "/a.txt"} {
		if got := read(p); got != "first" {
			t.Fatalf("%s: %q", p, got)
		}
	}
	// The version listing of b.txt.
	vd, err := f.Resolve(root, "/b.txt@@")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	f.ReadDir(root, vd, "", func(e Dirent) bool { names = append(names, e.Name); return true })
	if len(names) != 2 {
		t.Fatalf("versions of b.txt: %v", names)
	}
	if got := read("/b.txt@@/" + names[0]); got != "first" {
		t.Fatalf("first version: %q", got)
	}
	// The past is read-only; @@ names are reserved; bad WHEN is EINVAL.
	past, _ := f.Resolve(root, "/docs@@"+hex)
	if _, err := f.Mkdir(root, past, "x", 0o755); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("mkdir in the past: %v", err)
	}
	if _, err := f.Mkdir(root, f.Root(), "x@@y", 0o755); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("mkdir x@@y: %v", err)
	}
	if _, err := f.Resolve(root, "/docs@@2007-13-01"); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("bad when: %v", err)
	}
	if _, err := f.Resolve(root, "/docs@@1999-01-01"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("before the store: %v", err)
	}
	// Inode numbers: distinct between live and past, stable for a moment.
	a1, _ := f.Getattr(past)
	a2, _ := f.Getattr(d)
	p2, _ := f.Resolve(root, "/docs@@"+hex)
	a3, _ := f.Getattr(p2)
	if a1.Ino == a2.Ino || a1.Ino != a3.Ino {
		t.Fatalf("inos live %x past %x again %x", a2.Ino, a1.Ino, a3.Ino)
	}
	// Clone and restore.
	if _, err := f.Clone(root, "/docs@@"+hex, "/docs-restored"); err != nil {
		t.Fatal(err)
	}
	if got := read("/docs-restored/a.txt"); got != "first" {
		t.Fatalf("clone: %q", got)
	}
	if _, err := f.Restore(root, "/docs@@"+hex); err != nil {
		t.Fatal(err)
	}
	if got := read("/docs/a.txt"); got != "first" {
		t.Fatalf("restore: %q", got)
	}
}

// LookupIn, given the directory's attributes, answers as Lookup does.
func TestLookupInAnswersAsLookup(t *testing.T) {
	f, s := newTestFS(t)
	user := Cred{Uid: 1000, Gid: 1000}
	d, err := f.Mkdir(root, f.Root(), "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := f.Mkdir(root, f.Root(), "closed", 0o700)
	if err != nil {
		t.Fatal(err)
	}
	file, _, err := f.Create(root, d, "f", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	versions, err := f.Lookup(root, d, "f@@")
	if err != nil {
		t.Fatal(err)
	}
	var first string
	f.ReadDir(root, versions, "", func(e Dirent) bool { first = e.Name; return false })
	for _, tc := range []struct {
		c    Cred
		dir  Node
		name string
	}{
		{root, d, "f"}, {root, d, "missing"}, {root, d, "."}, {root, d, ".."}, {root, f.Root(), ".."},
		{root, file, "x"}, {user, closed, "x"}, {root, closed, "x"}, {root, d, "f@@bad"}, {root, d, "f@@"},
		{root, d, "@@0x7fffffffffffffff"}, {root, versions, first}, {root, versions, "nope"},
	} {
		want, werr := f.Lookup(tc.c, tc.dir, tc.name)
		da, err := f.Getattr(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		got, gerr := f.LookupIn(tc.c, tc.dir, da, tc.name)
		if got != want || Errno(gerr) != Errno(werr) {
			t.Errorf("%v %q: LookupIn %v %v, Lookup %v %v", tc.dir, tc.name, got, gerr, want, werr)
		}
	}
}
