package ninep

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
)

// TestConcurrentRequestsKeepTheirOwnState runs, from several clients at
// once and many requests at once on each connection, the requests whose
// state the wire carries past p9: chmod with setuid/setgid, xattr walks of
// one name failing differently on different files, walks of "." and "..",
// and attaches as different users. Each must get its own answer, whatever
// order p9 serves them in.
func TestConcurrentRequestsKeepTheirOwnState(t *testing.T) {
	e := newEnv(t)
	const (
		clients  = 4
		workers  = 6
		rounds   = 24
		user     = 1000 // the user the clients attach as
		stranger = 4242
	)
	uc := e.f.LocalUser(user)
	sc := e.f.LocalUser(stranger)

	// /x holds one attribute name that each file answers differently.
	x, err := e.f.Mkdir(e.cred, e.f.Root(), "x", 0o1777)
	if err != nil {
		t.Fatal(err)
	}
	has, _, err := e.f.Create(uc, x, "has", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.f.SetXattr(uc, has, "user.k", []byte("value"), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.f.Create(uc, x, "lacks", 0o644, true); err != nil {
		t.Fatal(err)
	}
	locked, _, err := e.f.Create(sc, x, "locked", 0o600, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.f.SetXattr(sc, locked, "user.k", []byte("secret"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Symlink(uc, x, "link", "has"); err != nil {
		t.Fatal(err)
	}
	xattrWant := []xattrCase{
		{"has", "value", 0}, {"lacks", "", linux.ENODATA}, {"locked", "", linux.EACCES}, {"link", "", linux.EPERM},
	}

	// /d/sub for walks of "." and "..".
	d, err := e.f.Mkdir(e.cred, e.f.Root(), "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := e.f.Mkdir(e.cred, d, "sub", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	// /w: each worker's file to chmod, and where attaches as other users
	// create theirs.
	w, err := e.f.Mkdir(e.cred, e.f.Root(), "w", 0o1777)
	if err != nil {
		t.Fatal(err)
	}
	for c := range clients {
		for k := range workers {
			if _, _, err := e.f.Create(uc, w, fmt.Sprintf("c%d-w%d", c, k), 0o755, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	modes := []uint32{0o4755, 0o2750, 0o6711, 0o640, 0o4700, 0o2755}

	var wg sync.WaitGroup
	errs := make(chan error, clients*workers)
	for c := range clients {
		m := dialMux(t, e.addr)
		root := m.fid()
		if _, errno, err := m.attach(root, "", "", user); err != nil || errno != 0 {
			t.Fatalf("attach: %v %v", errno, err)
		}
		for k := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- func() error {
					own := fmt.Sprintf("c%d-w%d", c, k)
					for r := range rounds {
						var err error
						// Half of the rounds walk xattrs: the errnos of
						// those walks are what arrival order used to mix up.
						switch (r + k) % 6 {
						case 0:
							err = chmodRound(m, root, own, modes[(r+c+k)%len(modes)], time.Unix(1000+int64(r), int64(c*1000+k)))
						case 1, 4, 5:
							err = xattrRound(m, root, xattrWant)
						case 2:
							err = dotRound(m, root, e.f.Root().Ino(), d.Ino(), sub.Ino())
						case 3:
							err = attachRound(e, m, uint32(2000+100*c+k), fmt.Sprintf("new-c%d-w%d-r%d", c, k, r))
						}
						if err != nil {
							return fmt.Errorf("client %d worker %d round %d: %w", c, k, r, err)
						}
					}
					return nil
				}()
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// chmodRound sets a mode with setuid/setgid bits and an exact atime on a
// file, and reads both back.
func chmodRound(m *mux, root uint32, name string, mode uint32, atime time.Time) error {
	fid := m.fid()
	if _, errno, err := m.walk(root, fid, "w", name); err != nil || errno != 0 {
		return fmt.Errorf("walk to %s: %v %v", name, errno, err)
	}
	defer m.clunk(fid)
	if err := m.chmod(fid, mode, atime); err != nil {
		return err
	}
	got, _, _, at, err := m.getattr(fid)
	if err != nil {
		return err
	}
	// Another worker's chmod of the same file would be a test bug: each
	// worker has its own file.
	if got&0o7777 != mode || !at.Equal(atime) {
		return fmt.Errorf("chmod %o atime %v gave %o atime %v", mode, atime, got&0o7777, at)
	}
	return nil
}

// xattrRound walks user.k of every file of /x at once and checks each
// answer.
func xattrRound(m *mux, root uint32, want []xattrCase) error {
	errs := make(chan error, len(want))
	for _, w := range want {
		go func() { errs <- xattrWalk(m, root, w.file, w.value, w.errno) }()
	}
	var first error
	for range want {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

type xattrCase struct {
	file, value string
	errno       linux.Errno
}

// xattrWalk walks user.k of one file of /x and checks the answer.
func xattrWalk(m *mux, root uint32, file, value string, want linux.Errno) error {
	fid := m.fid()
	if _, errno, err := m.walk(root, fid, "x", file); err != nil || errno != 0 {
		return fmt.Errorf("walk to %s: %v %v", file, errno, err)
	}
	defer m.clunk(fid)
	got, errno, err := m.getxattr(fid, "user.k")
	if err != nil {
		return err
	}
	if errno != want || got != value {
		return fmt.Errorf("user.k of %s: %q %v, want %q %v", file, got, errno, value, want)
	}
	return nil
}

// dotRound walks "." and ".." among /d and /d/sub and checks every qid.
func dotRound(m *mux, root uint32, top, d, sub uint64) error {
	fid := m.fid()
	qids, errno, err := m.walk(root, fid, "d", "sub", "..", ".", "sub", ".", "..", "..")
	if err != nil || errno != 0 {
		return fmt.Errorf("walk: %v %v", errno, err)
	}
	defer m.clunk(fid)
	want := []uint64{d, sub, d, d, sub, sub, d, top}
	if len(qids) != len(want) {
		return fmt.Errorf("walk gave %d qids, want %d", len(qids), len(want))
	}
	for i, q := range qids {
		if q.Path != want[i] {
			return fmt.Errorf("qid %d is %d, want %d", i, q.Path, want[i])
		}
	}
	return nil
}

// attachRound attaches as uid on the shared connection, creates a file
// with setgid, and checks through fs that the file is uid's.
func attachRound(e *env, m *mux, uid uint32, name string) error {
	fid := m.fid()
	if _, errno, err := m.attach(fid, "", "/w", uid); err != nil || errno != 0 {
		return fmt.Errorf("attach as %d: %v %v", uid, errno, err)
	}
	defer m.clunk(fid)
	if err := m.create(fid, name, 0o2750); err != nil {
		return err
	}
	n, err := e.f.Resolve(e.cred, "/w/"+name)
	if err != nil {
		return err
	}
	a, err := e.f.Getattr(n)
	if err != nil {
		return err
	}
	if a.Uid != uid || a.Mode != 0o2750 {
		return fmt.Errorf("%s attached as %d made a file of uid %d mode %o", name, uid, a.Uid, a.Mode)
	}
	return nil
}
