package nfs

import (
	"fmt"
	"sync"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// serve starts the NFS server in this process over a new store.
func serve(t *testing.T) (*fs.FS, string) {
	t.Helper()
	s, err := history.Open(t.TempDir(), history.Options{FlushInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // after the server stops (cleanups run last first)
	f := fs.New(s, fs.Options{})
	return f, listenServe(t, f, Options{Key: make([]byte, 32)})
}

func mount(t *testing.T, addr, path string) *nfsc.Target {
	t.Helper()
	c := dialRPC(t, addr)
	m := &nfsc.Mount{Client: c}
	tgt, err := m.Mount(path, rpc.NewAuthUnix("test", 0, 0).Auth())
	if err != nil {
		t.Fatal(err)
	}
	return tgt
}

// A listing of 100,000 entries, paged a few entries at a time while the
// directory changes, lists every entry that was there throughout exactly
// once, and ends.
func TestReaddirPagesThroughManyEntriesDuringChanges(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 10000
	}
	f, addr := serve(t)
	root := fs.Cred{}
	dir, err := f.Mkdir(root, f.Root(), "big", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, _, err := f.Create(root, dir, fmt.Sprintf("f%06d", i), 0o644, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	tgt := mount(t, addr, "/")

	// Meanwhile: names added before, among and after the listed ones (a
	// thousand rounds, so that the listing has an end to reach).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, name := range []string{fmt.Sprintf("a%06d", i), fmt.Sprintf("f%06d.new", i*7%n), fmt.Sprintf("z%06d", i)} {
				f.Create(root, dir, name, 0o644, true)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	entries, err := tgt.ReadDirPlus("/big")
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range entries {
		seen[e.FileName]++
		if seen[e.FileName] > 1 {
			t.Fatalf("%s listed twice", e.FileName)
		}
	}
	for i := 0; i < n; i++ {
		if seen[fmt.Sprintf("f%06d", i)] != 1 {
			t.Fatalf("f%06d, there all along, was not listed", i)
		}
	}
	t.Logf("%d entries listed (%d there all along)", len(entries), n)
}

// Cookies survive the loss of the server's memory of them: a listing goes
// on after its cookie cache was emptied (as by a restart).
func TestReaddirCookieOutlivesTheCache(t *testing.T) {
	f, addr := serve(t)
	root := fs.Cred{}
	dir, _ := f.Mkdir(root, f.Root(), "d", 0o755)
	for i := 0; i < 300; i++ {
		f.Create(root, dir, fmt.Sprintf("e%03d", i), 0o644, true)
	}
	h := &handler{f: f}
	name, ok, err := h.resumeAfter(root, dir, nameCookie("e150"))
	if err != nil || !ok || name != "e150" {
		t.Fatalf("resume after a forgotten cookie: %q %v %v", name, ok, err)
	}
	if _, ok, _ := h.resumeAfter(root, dir, nameCookie("gone")); ok {
		t.Fatal("a cookie for a name that is not there resumed")
	}
	// Through the protocol too: a second listing after the first.
	tgt := mount(t, addr, "/")
	for round := 0; round < 2; round++ {
		ents, err := tgt.ReadDirPlus("/d")
		if err != nil || len(ents) != 300 {
			t.Fatalf("round %d: %d entries, %v", round, len(ents), err)
		}
	}
}
