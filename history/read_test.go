package history

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestXattrsAndSymlinksAsOf(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	step := func() TID { clk.add(time.Second); return commit(t, s) }
	f := newFile(t, s, RootID, "f")
	t0 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.a", []byte("1")) })
	t1 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.SetXattr(f, "user.a", []byte("2")); err != nil {
			return err
		}
		return tx.SetXattr(f, "user.b", bytes.Repeat([]byte("x"), 3000))
	})
	t2 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.RemoveXattr(f, "user.a") })
	t3 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.c", []byte("c")) }) // pending only

	xa := func(name string, at TID) string {
		v, err := s.Xattr(f, name, at)
		if errors.Is(err, ErrNotFound) {
			return "<none>"
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	xs := func(at TID) string {
		names, err := s.Xattrs(f, at)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(names, ",")
	}
	for _, c := range []struct {
		at      TID
		a, list string
	}{
		{t0, "<none>", ""},
		{t1 - 1, "<none>", ""},
		{t1, "1", "user.a"},
		{t2 - 1, "1", "user.a"},
		{t2, "2", "user.a,user.b"},
		{t3, "<none>", "user.b"},
		{Live, "<none>", "user.b,user.c"},
	} {
		if got := xa("user.a", c.at); got != c.a {
			t.Fatalf("user.a as of %s: %q, want %q", c.at, got, c.a)
		}
		if got := xs(c.at); got != c.list {
			t.Fatalf("xattrs as of %s: %q, want %q", c.at, got, c.list)
		}
	}
	if got := xa("user.b", t2); got != strings.Repeat("x", 3000) {
		t.Fatal("user.b reads wrong")
	}
	if got := xa("user.c", Live); got != "c" {
		t.Fatalf("a pending xattr reads %q", got)
	}

	// Symlinks.
	var l ObjID
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		if l, err = tx.NewObject(Inode{Kind: KindSymlink, Mode: 0o777, Nlink: 1}); err != nil {
			return err
		}
		if err := tx.SetSymlink(l, "target/one"); err != nil {
			return err
		}
		return tx.SetDirent(RootID, "link", l, KindSymlink)
	})
	if got, err := s.Readlink(l, Live); err != nil || got != "target/one" {
		t.Fatalf("live readlink before commit: %q %v", got, err)
	}
	s1 := step()
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetSymlink(l, "../target/two") })
	s2 := step()
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "link"); err != nil {
			return err
		}
		return tx.EndObject(l)
	})
	s3 := step()
	for _, c := range []struct {
		at   TID
		want string
	}{{s1 - 1, "<none>"}, {s1, "target/one"}, {s2 - 1, "target/one"}, {s2, "../target/two"}, {s3, "<none>"}, {Live, "<none>"}} {
		got, err := s.Readlink(l, c.at)
		if errors.Is(err, ErrNotFound) {
			got = "<none>"
		} else if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Fatalf("readlink as of %s: %q, want %q", c.at, got, c.want)
		}
	}
	if child, k, err := s.Lookup(RootID, "link", s2); err != nil || child != l || k != KindSymlink {
		t.Fatalf("lookup of the link at s2: %d %v %v", child, k, err)
	}
	if _, _, err := s.Lookup(RootID, "link", s3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of the removed link: %v", err)
	}
	if ino, err := s.Inode(l, s2); err != nil || ino.Kind != KindSymlink {
		t.Fatalf("inode of the link at s2: %+v %v", ino, err)
	}
}

// TestEmptyXattrValue: an extended attribute may hold an empty value
// (setfattr -n user.x FILE); it exists, and reads as empty, live, after the
// commit, and after the intent log is replayed.
func TestEmptyXattrValue(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, nil)
	f := newFile(t, s, RootID, "f")
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.empty", nil) })
	check := func(s *Store, when string) {
		t.Helper()
		names, err := s.Xattrs(f, Live)
		if err != nil || fmt.Sprint(names) != "[user.empty]" {
			t.Errorf("%s: xattrs %v %v, want [user.empty]", when, names, err)
		}
		if v, err := s.Xattr(f, "user.empty", Live); err != nil || len(v) != 0 {
			t.Errorf("%s: the empty xattr reads %q, %v; want an empty value", when, v, err)
		}
	}
	check(s, "pending")
	if err := s.Durable(); err != nil {
		t.Fatal(err)
	}
	img := crashImage(t, dir, intentSynced(s))
	commit(t, s)
	check(s, "committed")
	s.Close()
	c := openTest(t, img, nil)
	defer c.Close()
	check(c, "replayed from the intent log and committed")
}

// TestEndedObjectLiveReadsMatchCommitted: once an object is ended, a live
// read of its keys says the same before and after the flush commits it.
func TestEndedObjectLiveReadsMatchCommitted(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	f := newFile(t, s, RootID, "f")
	mustUpdate(t, s, func(tx *Tx) error { return tx.SetXattr(f, "user.a", []byte("1")) })
	clk.add(time.Second)
	commit(t, s)
	mustUpdate(t, s, func(tx *Tx) error {
		if err := tx.RemoveDirent(RootID, "f"); err != nil {
			return err
		}
		return tx.EndObject(f)
	})
	probe := func() string {
		_, ierr := s.Inode(f, Live)
		_, xerr := s.Xattr(f, "user.a", Live)
		names, _ := s.Xattrs(f, Live)
		return fmt.Sprintf("inode: %v; xattr: %v; xattrs: %v", ierr, xerr, names)
	}
	before := probe()
	clk.add(time.Second)
	commit(t, s)
	if after := probe(); before != after {
		t.Fatalf("live reads of an ended object change when the flush commits:\n before: %s\n after:  %s", before, after)
	}
}

func TestReadDirAsOfManyEntriesAndResume(t *testing.T) {
	clk := epoch()
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	var d ObjID
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		if d, err = tx.NewObject(Inode{Kind: KindDir, Mode: 0o755, Nlink: 2}); err != nil {
			return err
		}
		return tx.SetDirent(RootID, "dir", d, KindDir)
	})
	names := map[string]bool{}
	add := func(name string) {
		newFile(t, s, d, name)
		names[name] = true
	}
	remove := func(name string) {
		mustUpdate(t, s, func(tx *Tx) error { return tx.RemoveDirent(d, name) })
		delete(names, name)
	}
	snapshot := func() []string {
		var out []string
		for n := range names {
			out = append(out, n)
		}
		sort.Strings(out)
		return out
	}
	moments := map[TID][]string{}
	for i := 0; i < 600; i++ {
		add(fmt.Sprintf("e%04d", i))
	}
	add("a")
	add("a b")
	add("é-utf8")
	add("z\x01ctl")
	clk.add(time.Second)
	moments[commit(t, s)] = snapshot()
	for i := 0; i < 600; i += 3 {
		remove(fmt.Sprintf("e%04d", i))
	}
	for i := 0; i < 200; i++ {
		add(fmt.Sprintf("e%04d-new", i*5))
	}
	remove("a")
	clk.add(time.Second)
	moments[commit(t, s)] = snapshot()
	// Pending changes on top, for the live listing.
	for i := 1; i < 600; i += 7 {
		if names[fmt.Sprintf("e%04d", i)] {
			remove(fmt.Sprintf("e%04d", i))
		}
	}
	for i := 0; i < 50; i++ {
		add(fmt.Sprintf("e%04d-live", i*11))
	}
	add("a")
	moments[Live] = snapshot()

	for at, want := range moments {
		if got := listNames(t, s, d, "", at, 0); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("listing as of %s: %d names, want %d", at, len(got), len(want))
		}
		// Pages of 37, each resuming after the last name returned.
		var paged []string
		after := ""
		for {
			page := listNames(t, s, d, after, at, 37)
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			after = page[len(page)-1]
		}
		if fmt.Sprint(paged) != fmt.Sprint(want) {
			t.Fatalf("paged listing as of %s: %d names, want %d", at, len(paged), len(want))
		}
		// Resuming after a name that is not in the directory.
		after = "e0300x"
		i := sort.SearchStrings(want, after)
		if i < len(want) && want[i] == after {
			i++
		}
		if got := listNames(t, s, d, after, at, 0); fmt.Sprint(got) != fmt.Sprint(want[i:]) {
			t.Fatalf("listing as of %s after %q: %d names, want %d", at, after, len(got), len(want)-i)
		}
	}
}

// ---- derived index: rebuild ----
