package fs

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

// snapTree describes the tree below n, one line per path, with everything
// a copy must keep: kind, mode, owner, size, link count, content, symlink
// target, xattrs, and which paths name one object (the link group, by the
// first path that named it).
func snapTree(t testing.TB, f *FS, n Node) map[string]string {
	t.Helper()
	out := map[string]string{}
	first := map[history.ObjID]string{}
	var walk func(n Node, p string)
	walk = func(n Node, p string) {
		a, err := f.Getattr(n)
		if err != nil {
			t.Fatalf("snap %s: %v", p, err)
		}
		desc := fmt.Sprintf("%v %04o %d:%d nlink %d", a.Kind, a.Mode, a.Uid, a.Gid, a.Nlink)
		switch a.Kind {
		case history.KindFile:
			buf := make([]byte, a.Size+1)
			k, err := f.Read(pRoot, n, buf, 0)
			if err != nil || uint64(k) != a.Size {
				t.Fatalf("snap %s: read %d of %d: %v", p, k, a.Size, err)
			}
			desc += fmt.Sprintf(" size %d sha %x mtime %d", a.Size, sha256.Sum256(buf[:k]), a.Mtime.UnixNano())
		case history.KindSymlink:
			tg, err := f.Readlink(n)
			if err != nil {
				t.Fatalf("snap %s: %v", p, err)
			}
			desc += " -> " + tg
		case history.KindChar, history.KindBlock:
			desc += fmt.Sprintf(" rdev %d", a.Rdev)
		}
		if names, err := f.ListXattr(pRoot, n); err == nil {
			for _, x := range names {
				v, err := f.GetXattr(pRoot, n, x)
				if err != nil {
					t.Fatalf("snap %s: xattr %s: %v", p, x, err)
				}
				desc += fmt.Sprintf(" %s=%q", x, v)
			}
		} else {
			t.Fatalf("snap %s: listxattr: %v", p, err)
		}
		if a.Kind != history.KindDir {
			if q, ok := first[n.Obj]; ok {
				desc += " link-of " + q
			} else {
				first[n.Obj] = p
			}
		}
		out[p] = desc
		if a.Kind == history.KindDir {
			var ents []Dirent
			if err := f.ReadDir(pRoot, n, "", func(d Dirent) bool { ents = append(ents, d); return true }); err != nil {
				t.Fatalf("snap %s: %v", p, err)
			}
			for _, d := range ents {
				walk(d.Node, p+"/"+d.Name)
			}
		}
	}
	walk(n, ".")
	return out
}

// diffSnaps describes how two snapshots differ, "" when they do not.
func diffSnaps(a, b map[string]string) string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		if a[k] != b[k] {
			out = append(out, fmt.Sprintf("%s:\n\t\t%q\n\t\t%q", k, a[k], b[k]))
		}
	}
	return strings.Join(out, "\n\t")
}

// randBytes is n reproducible bytes that do not compress or repeat.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0xabcdef))
	p := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return p
}

// buildSrc makes /src: files, a hard link across directories, symlinks,
// xattrs, a fifo, a device, an empty dir, a big and a sparse file.
func buildSrc(e *tEnv) {
	e.t.Helper()
	src := e.mkdir(pRoot, "/src", 0o755)
	e.setattr(pRoot, src, SetAttr{Uid: u32(1000), Gid: u32(50)})
	a := e.file(pRoot, "/src/a", 0o640, "alpha")
	e.chown(a, 1000, 1000)
	e.mkdir(pRoot, "/src/sub", 0o750)
	e.mkdir(pRoot, "/src/sub/deep", 0o700)
	e.mkdir(pRoot, "/src/empty", 0o755)
	if err := e.f.Link(pRoot, a, e.resolve(pRoot, "/src/sub"), "a2"); err != nil {
		e.t.Fatal(err)
	}
	if err := e.f.Link(pRoot, a, e.resolve(pRoot, "/src/sub/deep"), "a3"); err != nil {
		e.t.Fatal(err)
	}
	big := e.create(pRoot, "/src/sub/big", 0o644)
	e.write(pRoot, big, 0, randBytes(1, 300<<10))
	sp := e.create(pRoot, "/src/sparse", 0o600)
	e.write(pRoot, sp, 3<<20, []byte("far"))
	if _, err := e.f.Symlink(pRoot, src, "l", "sub/big"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.f.Symlink(pRoot, e.resolve(pRoot, "/src/sub"), "up", "../a"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.f.Mknod(pRoot, src, "fifo", NewAttr{Kind: history.KindFifo, Mode: 0o620}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.f.Mknod(pRoot, src, "null", NewAttr{Kind: history.KindChar, Mode: 0o666, Rdev: 1<<8 | 3}); err != nil {
		e.t.Fatal(err)
	}
	for _, x := range []struct {
		p, name, v string
	}{{"/src/a", "user.tag", "one"}, {"/src", "user.dirtag", "d"}, {"/src/sub/big", "trusted.t", "tt"}, {"/src/l", "trusted.l", "on a symlink"}} {
		if err := e.f.SetXattr(pRoot, e.resolve(pRoot, x.p), x.name, []byte(x.v), 0); err != nil {
			e.t.Fatalf("setxattr %s %s: %v", x.p, x.name, err)
		}
	}
}

func TestCloneIndependence(t *testing.T) {
	e := newTEnv(t)
	buildSrc(e)
	e.commit(time.Second)
	before := snapTree(t, e.f, e.resolve(pRoot, "/src"))
	rootNlink := e.attr(e.f.Root()).Nlink
	e.clk.Add(time.Minute)
	dst, err := e.f.Clone(pRoot, "/src", "/dst")
	if err != nil {
		t.Fatal(err)
	}
	if dst != e.resolve(pRoot, "/dst") {
		t.Errorf("clone returned %+v", dst)
	}
	if a := e.attr(e.f.Root()); a.Nlink != rootNlink+1 {
		t.Errorf("root nlink after cloning a dir: %d, want %d", a.Nlink, rootNlink+1)
	}
	// The copy is the source: same tree, links, modes, owners, xattrs.
	if d := diffSnaps(before, snapTree(t, e.f, dst)); d != "" {
		t.Errorf("clone differs from its source:\n\t%s", d)
	}
	// Hard links stay links inside the clone, and are new objects.
	ca, ca2, ca3 := e.resolve(pRoot, "/dst/a"), e.resolve(pRoot, "/dst/sub/a2"), e.resolve(pRoot, "/dst/sub/deep/a3")
	sa := e.resolve(pRoot, "/src/a")
	if ca.Obj != ca2.Obj || ca.Obj != ca3.Obj {
		t.Errorf("hard links in the clone are separate objects: %d %d %d", ca.Obj, ca2.Obj, ca3.Obj)
	}
	if ca.Obj == sa.Obj {
		t.Errorf("the clone shares an object with the source")
	}
	if a := e.attr(ca); a.Nlink != 3 {
		t.Errorf("clone's linked file nlink %d, want 3", a.Nlink)
	}
	if a := e.attr(sa); a.Nlink != 3 {
		t.Errorf("source's linked file nlink %d after clone, want 3", a.Nlink)
	}
	if a := e.attr(dst); !a.Ctime.Equal(e.clk.Now()) {
		t.Errorf("clone's ctime %v, want now %v", a.Ctime, e.clk.Now())
	}
	// .. of the copied directories is inside the copy.
	if up := e.resolve(pRoot, "/dst/sub/.."); up.Obj != dst.Obj {
		t.Errorf("/dst/sub/.. is %d, want /dst %d", up.Obj, dst.Obj)
	}
	if up := e.resolve(pRoot, "/dst/.."); up.Obj != history.RootID {
		t.Errorf("/dst/.. is %d", up.Obj)
	}

	// Change the clone: the source stays.
	e.write(pRoot, ca2, 0, []byte("ALPHA"))
	if got := string(e.readAll(pRoot, ca)); got != "ALPHA" {
		t.Errorf("write through one link of the clone, read through another: %q", got)
	}
	if err := e.f.SetXattr(pRoot, ca, "user.tag", []byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	e.setattr(pRoot, e.resolve(pRoot, "/dst/sub/big"), SetAttr{Size: u64(10)})
	e.chmod(e.resolve(pRoot, "/dst/sub"), 0o700)
	if err := e.f.Remove(pRoot, e.resolve(pRoot, "/dst/sub/deep"), "a3", false); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Rename(pRoot, dst, "l", dst, "l2"); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Remove(pRoot, dst, "empty", true); err != nil {
		t.Fatal(err)
	}
	e.file(pRoot, "/dst/new", 0o644, "new")
	e.write(pRoot, e.resolve(pRoot, "/dst/sparse"), 0, []byte("start"))
	check := func(what string) {
		t.Helper()
		if d := diffSnaps(before, snapTree(t, e.f, e.resolve(pRoot, "/src"))); d != "" {
			t.Errorf("%s: the source changed:\n\t%s", what, d)
		}
	}
	check("after changing the clone")
	e.commit(time.Second)
	check("after changing the clone and committing")
	cloneState := snapTree(t, e.f, e.resolve(pRoot, "/dst"))

	// And the other way round: change the source, the clone stays.
	e.write(pRoot, sa, 0, []byte("source!"))
	e.setattr(pRoot, e.resolve(pRoot, "/src/sub/big"), SetAttr{Size: u64(0)})
	if err := e.f.Remove(pRoot, e.resolve(pRoot, "/src"), "fifo", false); err != nil {
		t.Fatal(err)
	}
	if err := e.f.RemoveXattr(pRoot, e.resolve(pRoot, "/src"), "user.dirtag"); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Second)
	e.reopen()
	if d := diffSnaps(cloneState, snapTree(t, e.f, e.resolve(pRoot, "/dst"))); d != "" {
		t.Errorf("changing the source changed the clone:\n\t%s", d)
	}

	// A subtree holding two of a file's three names: the copy has two.
	if _, err := e.f.Clone(pRoot, "/src/sub", "/subcopy"); err != nil {
		t.Fatal(err)
	}
	s2, s3 := e.resolve(pRoot, "/subcopy/a2"), e.resolve(pRoot, "/subcopy/deep/a3")
	if s2.Obj != s3.Obj || e.attr(s2).Nlink != 2 {
		t.Errorf("subtree clone: links %d %d, nlink %d; want one object with nlink 2", s2.Obj, s3.Obj, e.attr(s2).Nlink)
	}
	if a := e.attr(e.resolve(pRoot, "/subcopy")); a.Nlink != 3 {
		t.Errorf("subtree clone: dir nlink %d, want 3", a.Nlink)
	}
	// A single file: a copy with one name, whatever links the source has.
	one, err := e.f.Clone(pRoot, "/src/sub/a2", "/one")
	if err != nil {
		t.Fatal(err)
	}
	if a := e.attr(one); a.Nlink != 1 || a.Kind != history.KindFile {
		t.Errorf("cloned linked file: nlink %d kind %v", a.Nlink, a.Kind)
	}
	if got := string(e.readAll(pRoot, one)); got != "source!" {
		t.Errorf("cloned file reads %q", got)
	}
	if v, err := e.f.GetXattr(pRoot, one, "user.tag"); err != nil || string(v) != "one" {
		t.Errorf("cloned file's xattr %q %v", v, err)
	}
	// A symlink and a device clone as themselves.
	if _, err := e.f.Clone(pRoot, "/src/l", "/l"); err != nil {
		t.Fatal(err)
	}
	if tg, _ := e.f.Readlink(e.resolve(pRoot, "/l")); tg != "sub/big" {
		t.Errorf("cloned symlink -> %q", tg)
	}
	if _, err := e.f.Clone(pRoot, "/src/null", "/null"); err != nil {
		t.Fatal(err)
	}
	if a := e.attr(e.resolve(pRoot, "/null")); a.Kind != history.KindChar || a.Rdev != 1<<8|3 {
		t.Errorf("cloned device %+v", a)
	}
	// Uncommitted changes are part of a live source.
	e.write(pRoot, sa, 0, []byte("pending"))
	if _, err := e.f.Clone(pRoot, "/src/a", "/pending"); err != nil {
		t.Fatal(err)
	}
	if got := string(e.readAll(pRoot, e.resolve(pRoot, "/pending"))); got != "pending" {
		t.Errorf("clone of a file with uncommitted data reads %q", got)
	}
	// A tree cloned into itself copies it as it was (no recursion).
	if _, err := e.f.Clone(pRoot, "/src", "/src/sub/again"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Resolve(pRoot, "/src/sub/again/sub/big"); err != nil {
		t.Errorf("clone into itself: %v", err)
	}
	if _, err := e.f.Resolve(pRoot, "/src/sub/again/sub/again"); Errno(err) != syscall.ENOENT {
		t.Errorf("clone into itself copied itself: %v", err)
	}

	// Errors.
	for _, tc := range []struct {
		c        Cred
		src, dst string
		want     syscall.Errno
	}{
		{pRoot, "/src", "/dst", syscall.EEXIST},
		{pRoot, "/nope", "/x", syscall.ENOENT},
		{pRoot, "/src", "/nope/x", syscall.ENOENT},
		{pRoot, "/src", "/x@@y", syscall.EINVAL},
		{pRoot, "/src", "/" + strings.Repeat("x", 256), syscall.ENAMETOOLONG},
		{pRoot, "/src/a@@", "/x", syscall.EISDIR},
		{pRoot, "/src", "/src/a/x", syscall.ENOTDIR},
		{pUser, "/src", "/x", syscall.EACCES},
	} {
		_, err := e.f.Clone(tc.c, tc.src, tc.dst)
		wantErr(t, fmt.Sprintf("clone %s %s", tc.src, tc.dst), err, tc.want)
	}
}

func TestCloneSharesBlocks(t *testing.T) {
	e := newTEnv(t)
	const size = 10 << 20
	data := randBytes(42, size)
	n := e.create(pRoot, "/big", 0o644)
	e.write(pRoot, n, 0, data)
	e.commit(time.Second)
	st0, err := e.f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st0.BlockBytes < size {
		t.Fatalf("10 MiB stored in %d block bytes", st0.BlockBytes)
	}
	if _, err := e.f.Clone(pRoot, "/big", "/big2"); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Second)
	st1, err := e.f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if grew := st1.BlockBytes - st0.BlockBytes; grew != 0 {
		t.Errorf("clone of 10 MiB added %d block bytes", grew)
	}
	if grew := st1.StoredBytes - st0.StoredBytes; grew > 1<<20 {
		t.Errorf("clone of 10 MiB added %d stored bytes", grew)
	}
	if st1.LogicalBytes != 2*st0.LogicalBytes {
		t.Errorf("logical bytes %d after clone, %d before", st1.LogicalBytes, st0.LogicalBytes)
	}
	if got := e.readAll(pRoot, e.resolve(pRoot, "/big2")); !bytes.Equal(got, data) {
		t.Errorf("clone reads different bytes")
	}
	// Changing one chunk of the copy stores one chunk.
	e.write(pRoot, e.resolve(pRoot, "/big2"), 5<<20, randBytes(43, history.ChunkSize))
	e.commit(time.Second)
	st2, _ := e.f.Stats()
	if grew := st2.BlockBytes - st1.BlockBytes; grew < history.ChunkSize || grew > 2*history.ChunkSize {
		t.Errorf("a 64 KiB change to the clone stored %d block bytes", grew)
	}
	if got := e.readAll(pRoot, e.resolve(pRoot, "/big")); !bytes.Equal(got, data) {
		t.Errorf("source changed")
	}
	// Writing the same data again (cp through a mount) stores nothing new.
	cp := e.create(pRoot, "/big3", 0o644)
	for off := 0; off < size; off += 1 << 20 {
		e.write(pRoot, cp, int64(off), data[off:off+1<<20])
	}
	e.commit(time.Second)
	st3, _ := e.f.Stats()
	if grew := st3.BlockBytes - st2.BlockBytes; grew != 0 {
		t.Errorf("a copy of 10 MiB written again stored %d block bytes", grew)
	}
}

func TestCloneHistorical(t *testing.T) {
	e := newTEnv(t)
	buildSrc(e)
	t1 := e.commit(time.Hour)
	want := snapTree(t, e.f, e.resolve(pRoot, "/src"))
	// Change everything.
	e.clk.Add(time.Hour)
	e.write(pRoot, e.resolve(pRoot, "/src/a"), 0, []byte("changed"))
	if err := e.f.Remove(pRoot, e.resolve(pRoot, "/src/sub"), "big", false); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Rename(pRoot, e.resolve(pRoot, "/src"), "sub", e.f.Root(), "moved"); err != nil {
		t.Fatal(err)
	}
	e.file(pRoot, "/src/added", 0o644, "added")
	e.chmod(e.resolve(pRoot, "/src"), 0o700)
	t2 := e.commit(time.Hour)
	for i, p := range []string{
		"/src@@" + FormatTID(uint64(t1)),
		"/src@@" + FormatVersionName(uint64(t1)),
		"/@@" + FormatTID(uint64(t1)) + "/src",
		"/src/@@" + FormatTID(uint64(t1)),
		"/src@@" + FormatVersionName(uint64(t2)-1),
	} {
		dst := "/copy" + fmt.Sprint(i)
		n, err := e.f.Clone(pRoot, p, dst)
		if err != nil {
			t.Fatalf("clone %s: %v", p, err)
		}
		if !n.Live() {
			t.Errorf("clone of %s is not live: %+v", p, n)
		}
		if d := diffSnaps(want, snapTree(t, e.f, n)); d != "" {
			t.Errorf("clone of %s differs from the tree then:\n\t%s", p, d)
		}
		// The copy is live and changeable.
		e.file(pRoot, dst+"/fresh", 0o644, "x")
	}
	// A file that is gone now, cloned from then.
	if _, err := e.f.Clone(pRoot, "/moved@@"+FormatTID(uint64(t1)), "/x"); Errno(err) != syscall.ENOENT {
		t.Errorf("clone of a name that did not exist then: %v", err)
	}
	n, err := e.f.Clone(pRoot, "/src/sub/big@@"+FormatTID(uint64(t1)), "/big-back")
	if err == nil {
		err = fmt.Errorf("it worked")
	}
	// /src/sub does not exist live (it moved): the path cannot be resolved.
	wantErr(t, "clone through a live path that moved", err, syscall.ENOENT)
	n, err = e.f.Clone(pRoot, "/src@@"+FormatTID(uint64(t1))+"/sub/big", "/big-back")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.readAll(pRoot, n); !bytes.Equal(got, randBytes(1, 300<<10)) {
		t.Errorf("cloned deleted file differs")
	}
	// A version from a name@@ listing.
	vd := e.resolve(pRoot, "/src/a@@")
	var names []string
	e.f.ReadDir(pRoot, vd, "", func(d Dirent) bool { names = append(names, d.Name); return true })
	if len(names) < 2 {
		t.Fatalf("versions of /src/a: %v", names)
	}
	n, err = e.f.Clone(pRoot, "/src/a@@/"+names[0], "/a-first")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(e.readAll(pRoot, n)); got != "alpha" {
		t.Errorf("clone of the first version reads %q", got)
	}
	// The source's history is untouched.
	e.commit(time.Second)
	if d := diffSnaps(want, snapTree(t, e.f, e.resolve(pRoot, "/src@@"+FormatTID(uint64(t1))))); d != "" {
		t.Errorf("the past changed:\n\t%s", d)
	}
}

func TestRestoreFile(t *testing.T) {
	e := newTEnv(t)
	f := e.file(pRoot, "/f", 0o644, "version one")
	if err := e.f.SetXattr(pRoot, f, "user.v", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	t1 := e.commit(time.Hour)
	e.write(pRoot, f, 0, []byte("VERSION TWO, longer"))
	e.chmod(f, 0o600)
	if err := e.f.SetXattr(pRoot, f, "user.v", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	if err := e.f.SetXattr(pRoot, f, "user.extra", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	t2 := e.commit(time.Hour)
	want := snapTree(t, e.f, e.resolve(pRoot, "/f@@"+FormatTID(uint64(t1))))
	replaced := snapTree(t, e.f, f)

	e.clk.Add(time.Hour)
	n, err := e.f.Restore(pRoot, "/f@@"+FormatTID(uint64(t1)))
	if err != nil {
		t.Fatal(err)
	}
	if n.Obj != f.Obj {
		t.Errorf("restore in place made another object: %d, was %d", n.Obj, f.Obj)
	}
	got := snapTree(t, e.f, f)
	if d := diffSnaps(want, got); d != "" {
		t.Errorf("restored file differs from then:\n\t%s", d)
	}
	if a := e.attr(f); !a.Ctime.Equal(e.clk.Now()) {
		t.Errorf("restore did not stamp ctime: %v", a.Ctime)
	}
	t3 := e.s.LastTID() // a restore commits itself
	// History keeps the replaced state, and the restore is a new version.
	if d := diffSnaps(replaced, snapTree(t, e.f, e.resolve(pRoot, "/f@@"+FormatTID(uint64(t2))))); d != "" {
		t.Errorf("the replaced state is not kept:\n\t%s", d)
	}
	if d := diffSnaps(replaced, snapTree(t, e.f, e.resolve(pRoot, "/f@@"+FormatTID(uint64(t3)-1)))); d != "" {
		t.Errorf("the moment before the restore does not read the replaced state:\n\t%s", d)
	}
	vs, err := e.f.History(pRoot, "/f")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[2].TID != FormatTID(uint64(t3)) || vs[2].Size != uint64(len("version one")) {
		t.Errorf("history after restore: %+v", vs)
	}
	// A file deleted since comes back.
	e.file(pRoot, "/gone", 0o640, "gone but not forgotten")
	t4 := e.commit(time.Hour)
	if err := e.f.Remove(pRoot, e.f.Root(), "gone", false); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Hour)
	g, err := e.f.Restore(pRoot, "/gone@@"+FormatVersionName(uint64(t4)))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(e.readAll(pRoot, g)); got != "gone but not forgotten" || e.attr(g).Mode != 0o640 {
		t.Errorf("restored deleted file: %q %o", got, e.attr(g).Mode)
	}
	if r := e.resolve(pRoot, "/gone"); r != g {
		t.Errorf("restore returned %+v, the name is %+v", g, r)
	}
	// Errors.
	_, err = e.f.Restore(pRoot, "/f")
	if err == nil || Errno(err) != syscall.EIO && Errno(err) != syscall.EINVAL {
		t.Logf("restore of a live path: %v (errno %v)", err, Errno(err))
	}
	if err == nil {
		t.Errorf("restore of a live path worked")
	}
	_, err = e.f.Restore(pRoot, "/never@@"+FormatTID(uint64(t1)))
	wantErr(t, "restore of a name that did not exist then", err, syscall.ENOENT)
	_, err = e.f.Restore(pRoot, "/f@@")
	wantErr(t, "restore of a version listing", err, syscall.EISDIR)
	_, err = e.f.Restore(pRoot, "/f@@2007-13-01")
	wantErr(t, "restore of a malformed moment", err, syscall.EINVAL)
	// A restore through the name@@/<version> form restores that version.
	vd := e.resolve(pRoot, "/f@@")
	var names []string
	e.f.ReadDir(pRoot, vd, "", func(d Dirent) bool { names = append(names, d.Name); return true })
	if _, err := e.f.Restore(pRoot, "/f@@/"+names[1]); err != nil {
		t.Fatalf("restore /f@@/%s: %v", names[1], err)
	}
	if got := string(e.readAll(pRoot, f)); got != "VERSION TWO, longer" {
		t.Errorf("after restoring version %s: %q", names[1], got)
	}
}

func TestRestoreTree(t *testing.T) {
	e := newTEnv(t)
	e.mkdir(pRoot, "/docs", 0o755)
	e.file(pRoot, "/docs/a", 0o644, "a one")
	e.file(pRoot, "/docs/b", 0o644, "b one")
	e.mkdir(pRoot, "/docs/sub", 0o755)
	e.file(pRoot, "/docs/sub/c", 0o600, "c one")
	e.mkdir(pRoot, "/docs/sub/deep", 0o755)
	e.file(pRoot, "/docs/sub/deep/d", 0o644, strings.Repeat("d", 10000))
	if _, err := e.f.Symlink(pRoot, e.resolve(pRoot, "/docs"), "l", "a"); err != nil {
		t.Fatal(err)
	}
	e.file(pRoot, "/docs/kind", 0o644, "was a file")
	e.file(pRoot, "/outside", 0o644, "not in docs")
	t1 := e.commit(time.Hour)
	then := snapTree(t, e.f, e.resolve(pRoot, "/docs@@"+FormatTID(uint64(t1))))

	// Changed, deleted, added, renamed, moved out, kind changed.
	e.clk.Add(time.Hour)
	e.write(pRoot, e.resolve(pRoot, "/docs/a"), 0, []byte("A TWO"))
	if err := e.f.Remove(pRoot, e.resolve(pRoot, "/docs"), "b", false); err != nil {
		t.Fatal(err)
	}
	e.file(pRoot, "/docs/added", 0o644, "added")
	e.mkdir(pRoot, "/docs/newdir", 0o755)
	e.file(pRoot, "/docs/newdir/x", 0o644, "x")
	e.file(pRoot, "/docs/sub/e", 0o644, "e")
	if err := e.f.Rename(pRoot, e.resolve(pRoot, "/docs/sub"), "c", e.resolve(pRoot, "/docs/sub"), "c2"); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Rename(pRoot, e.resolve(pRoot, "/docs/sub"), "deep", e.f.Root(), "deep-moved"); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Remove(pRoot, e.resolve(pRoot, "/docs"), "kind", false); err != nil {
		t.Fatal(err)
	}
	e.mkdir(pRoot, "/docs/kind", 0o755)
	if err := e.f.Rename(pRoot, e.f.Root(), "outside", e.resolve(pRoot, "/docs"), "came-in"); err != nil {
		t.Fatal(err)
	}
	e.chmod(e.resolve(pRoot, "/docs"), 0o700)
	e.chmod(e.resolve(pRoot, "/docs/sub"), 0o711)
	t2 := e.commit(time.Hour)
	replaced := snapTree(t, e.f, e.resolve(pRoot, "/docs"))

	e.clk.Add(time.Hour)
	if _, err := e.f.Restore(pRoot, "/docs@@"+FormatTID(uint64(t1))); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		if d := diffSnaps(then, snapTree(t, e.f, e.resolve(pRoot, "/docs"))); d != "" {
			t.Errorf("%s: restored tree differs from then:\n\t%s", what, d)
		}
		// Directory link counts are right: 2 + subdirectories.
		for _, p := range []string{"/", "/docs", "/docs/sub", "/docs/sub/deep"} {
			n := e.resolve(pRoot, p)
			subdirs := 0
			e.f.ReadDir(pRoot, n, "", func(d Dirent) bool {
				if d.Kind == history.KindDir {
					subdirs++
				}
				return true
			})
			if a := e.attr(n); a.Nlink != uint32(2+subdirs) {
				t.Errorf("%s: %s nlink %d, has %d subdirectories", what, p, a.Nlink, subdirs)
			}
		}
		if up := e.resolve(pRoot, "/docs/sub/deep/.."); up != e.resolve(pRoot, "/docs/sub") {
			t.Errorf("%s: restored dir's .. is %+v", what, up)
		}
	}
	check("live")
	// What lives outside the tree is not touched.
	if got := string(e.readAll(pRoot, e.resolve(pRoot, "/deep-moved/d"))); len(got) != 10000 {
		t.Errorf("moved-out directory changed")
	}
	if _, err := e.f.Resolve(pRoot, "/outside"); Errno(err) != syscall.ENOENT {
		t.Errorf("/outside came back: %v", err)
	}
	t3 := e.s.LastTID() // a restore commits itself
	check("committed")
	// History keeps the replaced state: the moment before the restore
	// still reads it.
	for _, w := range []string{FormatTID(uint64(t2)), FormatTID(uint64(t3) - 1), FormatVersionName(uint64(t2))} {
		if d := diffSnaps(replaced, snapTree(t, e.f, e.resolve(pRoot, "/docs@@"+w))); d != "" {
			t.Errorf("docs@@%s no longer reads the replaced state:\n\t%s", w, d)
		}
	}
	if got := string(e.readAll(pRoot, e.resolve(pRoot, "/docs/added@@"+FormatTID(uint64(t2))))); got != "added" {
		t.Errorf("a file the restore removed, in the past: %q", got)
	}
	e.reopen()
	check("after reopen")

	// The whole tree: /@@WHEN restores the root in place.
	e.file(pRoot, "/late", 0o644, "late")
	e.commit(time.Hour)
	if _, err := e.f.Restore(pRoot, "/@@"+FormatTID(uint64(t1))); err != nil {
		t.Fatal(err)
	}
	if d := diffSnaps(snapTree(t, e.f, e.resolve(pRoot, "/@@"+FormatTID(uint64(t1)))), snapTree(t, e.f, e.f.Root())); d != "" {
		t.Errorf("restored root differs from then:\n\t%s", d)
	}
}

// TestRestoreKeepsHardLinks: hard links inside a restored tree are links
// again, as they were.
func TestRestoreKeepsHardLinks(t *testing.T) {
	e := newTEnv(t)
	e.mkdir(pRoot, "/docs", 0o755)
	a := e.file(pRoot, "/docs/a", 0o644, "linked")
	if err := e.f.Link(pRoot, a, e.resolve(pRoot, "/docs"), "a2"); err != nil {
		t.Fatal(err)
	}
	e.file(pRoot, "/docs/b", 0o644, "b")
	if err := e.f.Link(pRoot, e.resolve(pRoot, "/docs/b"), e.resolve(pRoot, "/docs"), "b2"); err != nil {
		t.Fatal(err)
	}
	t1 := e.commit(time.Hour)
	then := snapTree(t, e.f, e.resolve(pRoot, "/docs@@"+FormatTID(uint64(t1))))
	// One name of a goes; both names of b go.
	if err := e.f.Remove(pRoot, e.resolve(pRoot, "/docs"), "a2", false); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b", "b2"} {
		if err := e.f.Remove(pRoot, e.resolve(pRoot, "/docs"), n, false); err != nil {
			t.Fatal(err)
		}
	}
	e.commit(time.Hour)
	if _, err := e.f.Restore(pRoot, "/docs@@"+FormatTID(uint64(t1))); err != nil {
		t.Fatal(err)
	}
	if d := diffSnaps(then, snapTree(t, e.f, e.resolve(pRoot, "/docs"))); d != "" {
		t.Errorf("restored tree differs from then:\n\t%s", d)
	}
}

func TestStats(t *testing.T) {
	e := newTEnv(t)
	st0, err := e.f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st0.Objects != 1 || st0.LogicalBytes != 0 || st0.BlockBytes != 0 || st0.DedupRatio != 1 {
		t.Errorf("empty store: %+v", st0)
	}
	if !st0.Oldest.Equal(tEnvStart) || !st0.Newest.Equal(tEnvStart) {
		t.Errorf("empty store: oldest %v newest %v, want %v", st0.Oldest, st0.Newest, tEnvStart)
	}
	const size = 1 << 20
	data := randBytes(7, size)
	for _, p := range []string{"/one", "/two"} {
		n := e.create(pRoot, p, 0o644)
		e.write(pRoot, n, 0, data)
	}
	e.file(pRoot, "/small", 0o644, "tiny")
	e.mkdir(pRoot, "/dir", 0o755)
	if _, err := e.f.Symlink(pRoot, e.f.Root(), "link", "one"); err != nil {
		t.Fatal(err)
	}
	// Uncommitted data is not in the figures yet.
	if st, _ := e.f.Stats(); st.LogicalBytes != 0 {
		t.Errorf("uncommitted: logical bytes %d", st.LogicalBytes)
	}
	t1 := e.commit(time.Hour)
	st, err := e.f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.LogicalBytes != 2*size+4 {
		t.Errorf("logical bytes %d, want %d", st.LogicalBytes, 2*size+4)
	}
	if st.BlockBytes < size || st.BlockBytes > size+size/16 {
		t.Errorf("block bytes %d for the same MiB written twice", st.BlockBytes)
	}
	if st.StoredBytes < st.BlockBytes {
		t.Errorf("stored bytes %d < block bytes %d", st.StoredBytes, st.BlockBytes)
	}
	if st.DedupRatio < 1.9 || st.DedupRatio > 2.01 {
		t.Errorf("dedup ratio %.3f, want about 2", st.DedupRatio)
	}
	if st.Objects != 6 {
		t.Errorf("objects %d, want 6 (root, 3 files, a dir, a symlink)", st.Objects)
	}
	if st.Versions < 6 || st.Records <= st.Objects {
		t.Errorf("versions %d records %d", st.Versions, st.Records)
	}
	if !st.Oldest.Equal(tEnvStart) || !st.Newest.Equal(history.TID(t1).Time()) {
		t.Errorf("oldest %v newest %v", st.Oldest, st.Newest)
	}
	// Deleting a file: logical bytes go, stored blocks stay (history).
	if err := e.f.Remove(pRoot, e.f.Root(), "two", false); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Hour)
	st2, _ := e.f.Stats()
	if st2.LogicalBytes != size+4 || st2.BlockBytes != st.BlockBytes || st2.Objects != 5 {
		t.Errorf("after delete: logical %d block %d objects %d", st2.LogicalBytes, st2.BlockBytes, st2.Objects)
	}
	// The deleted copy's records are history, and still share the blocks.
	if st2.DedupRatio != st.DedupRatio {
		t.Errorf("after delete: dedup ratio %.3f, was %.3f", st2.DedupRatio, st.DedupRatio)
	}
	if st2.Versions <= st.Versions {
		t.Errorf("versions did not grow: %d -> %d", st.Versions, st2.Versions)
	}
	// The JSON names docs/SPEC.md section 4 promises.
	b, err := json.Marshal(st2)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, k := range []string{"logical_bytes", "stored_bytes", "dedup_ratio", "objects", "versions", "oldest"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stats JSON lacks %q: %s", k, b)
		}
	}
	if o, _ := m["oldest"].(string); o != FormatMoment(tEnvStart) {
		t.Errorf("oldest in JSON %q", o)
	}
	// Survives reopen.
	e.reopen()
	st3, _ := e.f.Stats()
	if st3.LogicalBytes != st2.LogicalBytes || st3.Objects != st2.Objects || st3.BlockBytes != st2.BlockBytes {
		t.Errorf("after reopen: %+v, before %+v", st3, st2)
	}
}

var tidRE = regexp.MustCompile(`^0x[0-9a-f]{16}$`)

func TestHistory(t *testing.T) {
	e := newTEnv(t)
	d := e.mkdir(pRoot, "/d", 0o755)
	f := e.create(pRoot, "/d/f", 0o644)
	var tids []history.TID
	commit := func() {
		tids = append(tids, e.commit(time.Duration(len(tids)+1)*time.Hour+time.Duration(len(tids))*123456789))
	}
	commit() // created
	e.write(pRoot, f, 0, []byte("hello"))
	commit() // written
	e.chmod(f, 0o600)
	commit() // attributes
	if err := e.f.Rename(pRoot, d, "f", e.f.Root(), "g"); err != nil {
		t.Fatal(err)
	}
	commit() // renamed
	e.setattr(pRoot, f, SetAttr{Size: u64(2)})
	commit() // written (truncate)
	if err := e.f.SetXattr(pRoot, f, "user.x", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	commit() // xattr
	e.write(pRoot, f, 10, []byte("x"))
	e.chmod(f, 0o640)
	commit() // written (and attributes)
	vs, err := e.f.History(pRoot, "/g")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		size   uint64
		change string
	}{
		{0, "created"}, {5, "written"}, {5, "attributes"}, {5, "renamed"}, {2, "written"}, {2, "xattr"}, {11, "written"},
	}
	if len(vs) != len(want) {
		t.Fatalf("history of /g: %+v", vs)
	}
	for i, v := range vs {
		if !tidRE.MatchString(v.TID) || v.TID != FormatTID(uint64(tids[i])) {
			t.Errorf("version %d: tid %q, want %s", i, v.TID, FormatTID(uint64(tids[i])))
		}
		if !v.Time.Equal(tids[i].Time()) || v.Time.Location() != time.UTC {
			t.Errorf("version %d: time %v, want %v UTC", i, v.Time, tids[i].Time())
		}
		if v.Size != want[i].size || v.Change != want[i].change {
			t.Errorf("version %d: size %d change %q, want %d %q", i, v.Size, v.Change, want[i].size, want[i].change)
		}
		// Every tid reads back that version.
		n := e.resolve(pRoot, "/@@"+v.TID)
		if a := e.attr(Node{Obj: f.Obj, At: n.At}); a.Size != v.Size {
			t.Errorf("version %d read back: size %d", i, a.Size)
		}
	}
	// The JSON form: tid, time (RFC 3339 with nanoseconds), size, change.
	b, _ := json.Marshal(vs[1])
	var m map[string]any
	json.Unmarshal(b, &m)
	if m["tid"] != vs[1].TID || m["time"] != FormatVersionName(uint64(tids[1])) || m["size"] != 5.0 || m["change"] != "written" {
		t.Errorf("history JSON %s", b)
	}
	if !regexp.MustCompile(`"time":"2021-03-04T\d\d:\d\d:\d\d\.\d{9}Z"`).Match(b) {
		t.Errorf("history JSON time without nanoseconds: %s", b)
	}
	// A directory: created, then written as entries come and go.
	dv, err := e.f.History(pRoot, "/d")
	if err != nil {
		t.Fatal(err)
	}
	if len(dv) != 2 || dv[0].Change != "created,written" || dv[1].Change != "written" {
		t.Errorf("history of /d: %+v", dv)
	}
	// A deleted file, through the past: its last version says deleted.
	e.file(pRoot, "/tmp", 0o644, "x")
	t1 := e.commit(time.Hour)
	if err := e.f.Remove(pRoot, e.f.Root(), "tmp", false); err != nil {
		t.Fatal(err)
	}
	t2 := e.commit(time.Hour)
	for _, p := range []string{"/tmp@@" + FormatTID(uint64(t1)), "/tmp"} {
		hv, err := e.f.History(pRoot, p)
		if err != nil {
			t.Fatalf("history of %s: %v", p, err)
		}
		if len(hv) != 2 || hv[0].Change != "created,written" || hv[1].Change != "deleted" || hv[1].TID != FormatTID(uint64(t2)) {
			t.Errorf("history of the deleted file %s: %+v", p, hv)
		}
	}
	// A name that never was, or a past name that did not exist then.
	for _, p := range []string{"/never", "/never/x", "/tmp@@" + FormatTID(uint64(t2))} {
		if _, err := e.f.History(pRoot, p); Errno(err) != syscall.ENOENT {
			t.Errorf("history of %s: %v, want ENOENT", p, err)
		}
	}
	// A name the file left by a rename: the file, renamed.
	e.file(pRoot, "/before", 0o644, "y")
	e.commit(time.Hour)
	if err := e.f.Rename(pRoot, e.f.Root(), "before", e.f.Root(), "after"); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Hour)
	if hv, err := e.f.History(pRoot, "/before"); err != nil || len(hv) != 2 || hv[1].Change != "renamed" {
		t.Errorf("history of a name left by a rename: %+v %v", hv, err)
	}
	// Leading slash optional; the root has a history too.
	if a, err := e.f.History(pRoot, "g"); err != nil || len(a) != len(vs) {
		t.Errorf("history without a leading slash: %d %v", len(a), err)
	}
	if rv, err := e.f.History(pRoot, "/"); err != nil || len(rv) == 0 || rv[0].TID != FormatTID(uint64(history.TIDAt(tEnvStart))) {
		t.Errorf("history of the root: %+v %v", rv, err)
	}
	// name@@ lists the same versions, minus the deletion.
	var names []string
	e.f.ReadDir(pRoot, e.resolve(pRoot, "/g@@"), "", func(d Dirent) bool { names = append(names, d.Name); return true })
	var fromHistory []string
	for _, v := range vs {
		fromHistory = append(fromHistory, FormatVersionName(uint64(mustParseTID(t, v.TID))))
	}
	if !slices.Equal(names, fromHistory) {
		t.Errorf("g@@ lists %v, history says %v", names, fromHistory)
	}
}

func mustParseTID(t *testing.T, s string) uint64 {
	t.Helper()
	w, err := ParseWhen(s, time.Now(), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return w.TID
}

// TestCloneAsNonRoot: clone is a copy made by the caller, so a non-root
// caller needs to be able to read what it copies, and the copy is its own,
// as cp makes it: it cannot give objects away to other users (chown's rule)
// nor copy a setuid bit of someone else's program.
func TestCloneAsNonRoot(t *testing.T) {
	e := newTEnv(t)
	e.home()
	e.mkdir(pRoot, "/open", 0o777)
	secret := e.file(pRoot, "/open/secret", 0o600, "secret")
	e.chown(secret, pOther.Uid, pOther.Gid)
	prog := e.file(pRoot, "/open/prog", 0o755, "#!/bin/sh\n")
	e.chown(prog, pOther.Uid, pOther.Gid)
	e.chmod(prog, 0o6755)
	e.commit(time.Second)

	_, err := e.f.Clone(pUser, "/open/secret", "/home/stolen")
	wantErr(t, "non-root clone of a file it cannot read", err, syscall.EACCES)

	n, err := e.f.Clone(pUser, "/open/prog", "/home/prog")
	if err != nil {
		t.Fatal(err)
	}
	if a := e.attr(n); a.Uid != pUser.Uid || a.Gid != pUser.Gid || a.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		t.Errorf("non-root clone of another's setuid program: uid %d gid %d mode %04o; want owned by %d:%d without setuid/setgid",
			a.Uid, a.Gid, a.Mode, pUser.Uid, pUser.Gid)
	}
	// Root's clone keeps everything, as cp -a run by root does.
	n, err = e.f.Clone(pRoot, "/open/prog", "/home/prog-root")
	if err != nil {
		t.Fatal(err)
	}
	if a := e.attr(n); a.Uid != pOther.Uid || a.Mode != 0o6755 {
		t.Errorf("root clone: uid %d mode %04o", a.Uid, a.Mode)
	}
}

// TestRestoreAsNonRoot: a restore by a non-root caller may change only what
// the caller could change itself; it must not remove files from, or add
// files to, a directory it cannot write.
func TestRestoreAsNonRoot(t *testing.T) {
	e := newTEnv(t)
	e.home()
	e.mkdir(pUser, "/home/proj", 0o755)
	e.file(pUser, "/home/proj/mine", 0o644, "mine")
	rd := e.mkdir(pRoot, "/home/proj/rootdir", 0o755) // root's, inside the user's tree
	e.file(pRoot, "/home/proj/rootdir/keep", 0o644, "root's")
	t1 := e.commit(time.Hour)
	e.file(pRoot, "/home/proj/rootdir/added-by-root", 0o644, "root's too")
	if err := e.f.Remove(pRoot, rd, "keep", false); err != nil {
		t.Fatal(err)
	}
	e.commit(time.Hour)
	// The user could not do this by hand.
	wantErr(t, "non-root unlink in root's directory", e.f.Remove(pUser, rd, "added-by-root", false), syscall.EACCES)
	_, err := e.f.Restore(pUser, "/home/proj@@"+FormatTID(uint64(t1)))
	if Errno(err) != syscall.EACCES && Errno(err) != syscall.EPERM {
		t.Errorf("non-root restore through a directory it cannot write: %v, want EACCES or EPERM", err)
	}
	if _, err := e.f.Resolve(pRoot, "/home/proj/rootdir/added-by-root"); err != nil {
		t.Errorf("a non-root restore removed a file from root's directory: %v", err)
	}
	if _, err := e.f.Resolve(pRoot, "/home/proj/rootdir/keep"); Errno(err) != syscall.ENOENT {
		t.Errorf("a non-root restore added a file to root's directory: %v", err)
	}
	// The whole tree (/@@WHEN restores the root in place): the root is
	// root's 0755 directory, so a non-root caller may not.
	e.file(pRoot, "/late", 0o644, "late")
	e.commit(time.Hour)
	_, err = e.f.Restore(pUser, "/@@"+FormatTID(uint64(t1)))
	if Errno(err) != syscall.EACCES && Errno(err) != syscall.EPERM {
		t.Errorf("non-root restore of the root: %v, want EACCES or EPERM", err)
	}
	if _, err := e.f.Resolve(pRoot, "/late"); err != nil {
		t.Errorf("a non-root restore of the root removed root's file: %v", err)
	}
}
