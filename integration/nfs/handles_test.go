package nfs_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"

	"github.com/asof/asof/integration/serverproc"
)

// held is a handle a client keeps, with what it must keep answering.
type held struct {
	name    string
	fh      []byte
	dir     bool
	fileid  uint64
	content string // for files
}

// use checks that every held handle still works: GETATTR (same type and file id), READ for
// files, and for directories LOOKUP of the child, which must hand back the very same handle.
func use(t *testing.T, p *proto, when string, hs []held, children map[string]held) {
	t.Helper()
	for _, h := range hs {
		st, a := p.getattr(h.fh)
		if st != nfsOK {
			t.Errorf("%s: GETATTR of the %s handle: %s", when, h.name, statusName(st))
			continue
		}
		wantType := uint32(nfsc.NF3Reg)
		if h.dir {
			wantType = nfsc.NF3Dir
		}
		if a.Type != wantType || a.Fileid != h.fileid {
			t.Errorf("%s: GETATTR of the %s handle: type %d fileid %d, want type %d fileid %d", when, h.name, a.Type, a.Fileid, wantType, h.fileid)
		}
		if !h.dir {
			st, b := p.readAll(h.fh)
			if st != nfsOK || string(b) != h.content {
				t.Errorf("%s: READ of the %s handle: %s %q, want %q", when, h.name, statusName(st), b, h.content)
			}
			continue
		}
		if c, ok := children[h.name]; ok {
			name := c.name
			st, fh, _ := p.lookupFH(h.fh, name)
			if st != nfsOK || !bytes.Equal(fh, c.fh) {
				t.Errorf("%s: LOOKUP %q in the %s handle: %s, handle %x, want %x", when, name, h.name, statusName(st), fh, c.fh)
			}
		}
	}
}

func take(t *testing.T, p *proto, path, content string) held {
	t.Helper()
	fh := p.lookup(path)
	st, a := p.getattr(fh)
	if st != nfsOK {
		t.Fatalf("GETATTR %s: %s", path, statusName(st))
	}
	return held{name: path, fh: fh, dir: a.Type == nfsc.NF3Dir, fileid: a.Fileid, content: content}
}

// The handle test: handles taken with LOOKUP keep working, unchanged, after the server
// restarts (SIGTERM, and kill -9), after their parents (and the file itself) are renamed, and
// handles of the past keep reading the past; a removed file's handle is NFS3ERR_STALE; forged
// and foreign handles are refused.
func TestHandles(t *testing.T) {
	s := start(t)
	p := dialProto(t, s.NFSAddr, "/")

	// /a/b/c/f.txt
	dir := p.root
	for _, d := range []string{"a", "b", "c"} {
		st, fh := p.mkdir(dir, d)
		if st != nfsOK {
			t.Fatalf("MKDIR %s: %s", d, statusName(st))
		}
		dir = fh
	}
	st, ffh := p.create(dir, "f.txt")
	if st != nfsOK {
		t.Fatalf("CREATE f.txt: %s", statusName(st))
	}
	const v1, v2 = "first version\n", "second version, longer\n"
	if st := p.write(ffh, 0, []byte(v1)); st != nfsOK {
		t.Fatalf("WRITE: %s", statusName(st))
	}
	time.Sleep(settle)
	if st := p.write(ffh, 0, []byte(v2)); st != nfsOK {
		t.Fatalf("WRITE: %s", statusName(st))
	}
	time.Sleep(settle)

	file := take(t, p, "a/b/c/f.txt", v2)
	if !bytes.Equal(file.fh, ffh) {
		t.Errorf("LOOKUP a/b/c/f.txt gives handle %x, CREATE gave %x", file.fh, ffh)
	}
	c := take(t, p, "a/b/c", "")
	b := take(t, p, "a/b", "")
	a := take(t, p, "a", "")
	root := take(t, p, "", "")

	// a handle of the past: f.txt as it was at its first version's moment
	var tid string
	for _, v := range history(t, s, "/a/b/c/f.txt") {
		if v.Size == int64(len(v1)) {
			tid = v.TID
		}
	}
	if tid == "" {
		t.Fatal("asof history has no version of the first content")
	}
	past := take(t, p, "a/b/c/f.txt@@"+tid, v1)
	pastDir := take(t, p, "a/b@@"+tid, "")
	if past.fileid == file.fileid {
		t.Errorf("the historical file has the live file's id %d (SPEC 3: they differ)", file.fileid)
	}

	hs := []held{file, c, b, a, root, past, pastDir}
	// what LOOKUP in each directory handle must give: the child's name and handle
	children := map[string]held{
		"a/b/c": {name: "f.txt", fh: file.fh},
		"a/b":   {name: "c", fh: c.fh},
		"a":     {name: "b", fh: b.fh},
		"":      {name: "a", fh: a.fh},
	}
	use(t, p, "before any restart", hs, children)

	// 1. a clean restart; the client keeps its handles and reconnects without MOUNT
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	p = p.redial()
	use(t, p, "after a SIGTERM restart", hs, children)

	// 2. a crash, right after a new file (and its handle) was made
	const v0 = "made just before the crash\n"
	st, nfh := p.create(root.fh, "crash.txt")
	if st != nfsOK {
		t.Fatalf("CREATE crash.txt: %s", statusName(st))
	}
	if st := p.write(nfh, 0, []byte(v0)); st != nfsOK {
		t.Fatalf("WRITE crash.txt: %s", statusName(st))
	}
	fresh := take(t, p, "crash.txt", v0)
	hs = append(hs, fresh)
	if err := s.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	p = p.redial()
	use(t, p, "after kill -9 and a restart", hs, children)

	// 3. rename every parent (a -> A, a/b -> A/B, A/B/c -> A/c2: up a level), and the file
	if st := p.rename(root.fh, "a", root.fh, "A"); st != nfsOK {
		t.Fatalf("RENAME a A: %s", statusName(st))
	}
	if st := p.rename(a.fh, "b", a.fh, "B"); st != nfsOK {
		t.Fatalf("RENAME b B: %s", statusName(st))
	}
	if st := p.rename(b.fh, "c", a.fh, "c2"); st != nfsOK {
		t.Fatalf("RENAME A/B/c A/c2: %s", statusName(st))
	}
	if st := p.rename(c.fh, "f.txt", c.fh, "g.txt"); st != nfsOK {
		t.Fatalf("RENAME f.txt g.txt: %s", statusName(st))
	}
	children = map[string]held{
		"a/b/c": {name: "g.txt", fh: file.fh},
		"a":     {name: "c2", fh: c.fh},
		"":      {name: "A", fh: a.fh},
	}
	use(t, p, "after renaming every parent and the file", hs, children)
	if got := p.lookup("A/c2/g.txt"); !bytes.Equal(got, file.fh) {
		t.Errorf("LOOKUP A/c2/g.txt: %x, want the handle taken before the renames %x", got, file.fh)
	}
	if st, _, _ := p.lookupFH(c.fh, "f.txt"); st != errNoEnt {
		t.Errorf("LOOKUP of the old name f.txt: %s, want NFS3ERR_NOENT", statusName(st))
	}
	// ".." of a directory handle is its parent now, not before the renames
	if st, fh, _ := p.lookupFH(c.fh, ".."); st != nfsOK || !bytes.Equal(fh, a.fh) {
		t.Errorf("LOOKUP .. in the moved directory: %s %x, want its new parent %x", statusName(st), fh, a.fh)
	}
	// a write through the old handle lands in the renamed file
	const v3 = "third version, written through the old handle\n"
	if st := p.write(file.fh, 0, []byte(v3)); st != nfsOK {
		t.Fatalf("WRITE through the kept handle: %s", statusName(st))
	}
	hs[0].content = v3
	if st, got := p.readAll(p.lookup("A/c2/g.txt")); st != nfsOK || string(got) != v3 {
		t.Errorf("READ of a fresh LOOKUP of A/c2/g.txt: %s %q; want %q", statusName(st), got, v3)
	}

	// 4. and right after the renames and the write (all answered as stable), another crash
	if err := s.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	p = p.redial()
	use(t, p, "after the renames and kill -9", hs, children)

	// 5. remove the file: its handle is stale, the past still reads
	if st := p.remove(c.fh, "g.txt", false); st != nfsOK {
		t.Fatalf("REMOVE g.txt: %s", statusName(st))
	}
	staleChecks := func(when string) {
		t.Helper()
		if st, _ := p.getattr(file.fh); st != errStale {
			t.Errorf("%s: GETATTR of the removed file's handle: %s, want NFS3ERR_STALE(70)", when, statusName(st))
		}
		if st, _, _ := p.read(file.fh, 0, 100); st != errStale {
			t.Errorf("%s: READ of the removed file's handle: %s, want NFS3ERR_STALE(70)", when, statusName(st))
		}
		if st := p.write(file.fh, 0, []byte("x")); st != errStale {
			t.Errorf("%s: WRITE to the removed file's handle: %s, want NFS3ERR_STALE(70)", when, statusName(st))
		}
		if st := p.setattrMode(file.fh, 0o600); st != errStale {
			t.Errorf("%s: SETATTR of the removed file's handle: %s, want NFS3ERR_STALE(70)", when, statusName(st))
		}
		if st := p.link(file.fh, c.fh, "resurrected"); st != errStale {
			t.Errorf("%s: LINK of the removed file's handle: %s, want NFS3ERR_STALE(70)", when, statusName(st))
		}
		use(t, p, when+": the past", []held{past, pastDir}, nil)
	}
	staleChecks("after REMOVE")
	// a removed directory too
	if st := p.remove(a.fh, "c2", true); st != nfsOK {
		t.Fatalf("RMDIR c2: %s", statusName(st))
	}
	if st, _ := p.getattr(c.fh); st != errStale {
		t.Errorf("GETATTR of a removed directory's handle: %s, want NFS3ERR_STALE(70)", statusName(st))
	}
	if st, _ := p.create(c.fh, "x"); st != errStale {
		t.Errorf("CREATE in a removed directory's handle: %s, want NFS3ERR_STALE(70)", statusName(st))
	}
	if st, _, _ := p.lookupFH(c.fh, "g.txt"); st != errStale {
		t.Errorf("LOOKUP in a removed directory's handle: %s, want NFS3ERR_STALE(70)", statusName(st))
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	p = p.redial()
	staleChecks("after REMOVE and a restart")

	// 6. forged handles: any flipped byte, a short or long handle, another store's handle
	t.Run("forged", func(t *testing.T) {
		p := p.redial()
		p.t = t
		for _, h := range []held{root, a, past} {
			for i := range h.fh {
				f := slices.Clone(h.fh)
				f[i] ^= 0x01
				st, _ := p.getattr(f)
				if st != errStale && st != errBadHandle {
					t.Errorf("GETATTR of the %s handle with byte %d flipped (%x): %s, want NFS3ERR_BADHANDLE or NFS3ERR_STALE", h.name, i, f, statusName(st))
				}
			}
		}
		f := slices.Clone(a.fh)
		f[len(f)-1] ^= 0x80
		if st, _, _ := p.lookupFH(f, "B"); st != errStale && st != errBadHandle {
			t.Errorf("LOOKUP in a forged directory handle: %s", statusName(st))
		}
		if st, _ := p.create(f, "forged"); st != errStale && st != errBadHandle {
			t.Errorf("CREATE in a forged directory handle: %s", statusName(st))
		}
		if st := p.remove(f, "B", true); st != errStale && st != errBadHandle {
			t.Errorf("RMDIR through a forged directory handle: %s", statusName(st))
		}
		for _, bad := range [][]byte{nil, a.fh[:len(a.fh)-1], append(slices.Clone(a.fh), 0, 0, 0, 0), bytes.Repeat([]byte{0xff}, 64)} {
			// malformed: any refusal will do (go-nfs answers INVAL for an empty one)
			if st, _ := p.getattr(bad); st == nfsOK {
				t.Errorf("GETATTR of a %d-byte garbage handle succeeded", len(bad))
			}
		}
		// another store's root handle: same object id, another secret
		other := serverproc.Start(t, serverproc.Options{NoNineP: true})
		op := dialProto(t, other.NFSAddr, "/")
		if bytes.Equal(op.root, root.fh) {
			t.Errorf("two stores hand out the same root handle %x", op.root)
		}
		if st, _ := p.getattr(op.root); st != errStale && st != errBadHandle {
			t.Errorf("GETATTR of another store's root handle: %s, want it refused", statusName(st))
		}
		if st, _ := p.create(op.root, "foreign"); st != errStale && st != errBadHandle {
			t.Errorf("CREATE in another store's root handle: %s, want it refused", statusName(st))
		}
		// and nothing was created by any of it
		if st, ns := p.readdir(root.fh); st != nfsOK || !slices.Equal(ns, []string{"A", "crash.txt"}) {
			t.Errorf("READDIR /: %s %v, want [A crash.txt]", statusName(st), ns)
		}
	})
}
