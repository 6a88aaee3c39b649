// Package nfs_test tests asof's NFSv3 server end to end with clients nobody on the project
// wrote: libnfs's nfs-ls, nfs-cat and nfs-cp (Debian libnfs-utils), and the NFSv3 client
// of github.com/willscott/go-nfs-client for what libnfs's tools cannot do (rename, remove,
// mkdir, and keeping raw file handles across server restarts). The Linux kernel client's
// scenarios are in integration/vm.
//
// libnfs-utils has no rename, remove or mkdir tool: those go through go-nfs-client here
// and through the kernel client in integration/vm/nfs_scenarios_test.go.
package nfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/integration/clients"
	"github.com/asof/asof/integration/serverproc"
)

func TestMain(m *testing.M) { os.Exit(serverproc.Main(m)) }

// flush is the history grain the tests run with: states meant as distinct versions are
// written more than settle apart.
const (
	flush  = 100 * time.Millisecond
	settle = 4 * flush
)

// needLibNFS skips when libnfs-utils is missing (scripts/test-deps.sh installs it).
func needLibNFS(t *testing.T) {
	t.Helper()
	for _, p := range []string{"nfs-ls", "nfs-cat", "nfs-cp"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not found (run scripts/test-deps.sh)", p)
		}
	}
}

// start runs asof serving NFS only (these tests do not need 9P) with a fast history grain.
func start(t *testing.T) *serverproc.Server {
	t.Helper()
	return serverproc.Start(t, serverproc.Options{
		NoNineP: true,
		Env:     map[string]string{"ASOF_HISTORY_FLUSH_INTERVAL": flush.String()},
	})
}

// version is one entry of `asof history --json`.
type version struct {
	TID    string `json:"tid"`
	Time   string `json:"time"`
	Size   int64  `json:"size"`
	Change string `json:"change"`
}

func history(t *testing.T, s *serverproc.Server, path string) []version {
	t.Helper()
	out, _, err := s.Admin(context.Background(), "history", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []version
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		t.Fatalf("asof history --json %s: %v\n%s", path, err, out)
	}
	if len(vs) == 0 {
		t.Fatalf("asof history --json %s: no versions", path)
	}
	return vs
}

// stderrOf is the stderr of a failed client command.
func stderrOf(err error) string {
	var ce *clients.Error
	if errors.As(err, &ce) {
		return string(ce.Stderr) + string(ce.Stdout)
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

func names(ents []clients.Entry) []string {
	var n []string
	for _, e := range ents {
		n = append(n, e.Name)
	}
	sort.Strings(n)
	return n
}

func entry(ents []clients.Entry, name string) (clients.Entry, bool) {
	for _, e := range ents {
		if e.Name == name {
			return e, true
		}
	}
	return clients.Entry{}, false
}

// expectFail runs a client command that must fail with want (an NFS status name such as
// NFS3ERR_ROFS) in its message.
func expectFail(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want a failure with %s", what, want)
		return
	}
	if msg := stderrOf(err); !strings.Contains(msg, want) {
		t.Errorf("%s: failed without %s:\n%s", what, want, msg)
	}
}

// Create, write, read, list, rename and remove with libnfs (and go-nfs-client for the
// rename, remove and mkdir that libnfs's tools do not offer).
func TestLibNFSBasics(t *testing.T) {
	needLibNFS(t)
	s := start(t)
	ctx := context.Background()
	nfs := clients.NFS{Addr: s.NFSAddr}
	p := dialProto(t, s.NFSAddr, "/")

	hello := []byte("hello asof\n")
	odd := make([]byte, 3<<20+12345) // several WRITEs and READs, not block aligned
	rand.NewChaCha8([32]byte{1}).Read(odd)

	// create + write
	if err := nfs.Write(ctx, "/hello.txt", hello); err != nil {
		t.Fatal(err)
	}
	if err := nfs.Write(ctx, "/empty", nil); err != nil {
		t.Fatal(err)
	}
	if err := nfs.Write(ctx, "/odd.bin", odd); err != nil {
		t.Fatal(err)
	}
	// read
	for name, want := range map[string][]byte{"/hello.txt": hello, "/empty": {}, "/odd.bin": odd} {
		got, err := nfs.Cat(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("nfs-cat %s: %d bytes (sha %x), want %d bytes (sha %x)", name, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
	}
	// nfs-cp out to a local file
	local := filepath.Join(t.TempDir(), "odd.bin")
	if err := nfs.Get(ctx, "/odd.bin", local); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(local); !bytes.Equal(b, odd) {
		t.Errorf("nfs-cp out of /odd.bin: %d bytes differ from what was written", len(b))
	}
	// list
	ents, err := nfs.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(ents), []string{"empty", "hello.txt", "odd.bin"}; !slices.Equal(got, want) {
		t.Errorf("nfs-ls /: %v, want %v", got, want)
	}
	for name, size := range map[string]int64{"hello.txt": int64(len(hello)), "empty": 0, "odd.bin": int64(len(odd))} {
		if e, ok := entry(ents, name); !ok || e.Size != size || !strings.HasPrefix(e.Mode, "-") {
			t.Errorf("nfs-ls /: %s is %+v, want a regular file of %d bytes", name, e, size)
		}
	}
	// libnfs's nfs-cp creates GUARDED: onto an existing file that is NFS3ERR_EXIST
	expectFail(t, "nfs-cp onto an existing file (GUARDED CREATE)", nfs.Write(ctx, "/hello.txt", []byte("x")), "NFS3ERR_EXIST")

	// a subdirectory (mkdir by go-nfs-client); nfs-cp and nfs-cat mount export /sub
	if st, _ := p.mkdir(p.root, "sub"); st != nfsOK {
		t.Fatalf("MKDIR sub: %s", statusName(st))
	}
	if err := nfs.Write(ctx, "/sub/inner.txt", []byte("inner\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := nfs.Cat(ctx, "/sub/inner.txt"); err != nil || string(got) != "inner\n" {
		t.Errorf("nfs-cat /sub/inner.txt: %q, %v", got, err)
	}
	ents, err = nfs.List(ctx, "/", "-R")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(ents), []string{"empty", "hello.txt", "odd.bin", "sub", "sub/inner.txt"}; !slices.Equal(got, want) {
		t.Errorf("nfs-ls -R /: %v, want %v", got, want)
	}

	// rename (go-nfs-client: RENAME), seen by libnfs
	if err := p.tgt.Rename("/hello.txt", "/sub/renamed.txt"); err != nil {
		t.Fatalf("RENAME /hello.txt /sub/renamed.txt: %v", err)
	}
	if got, err := nfs.Cat(ctx, "/sub/renamed.txt"); err != nil || !bytes.Equal(got, hello) {
		t.Errorf("nfs-cat /sub/renamed.txt after the rename: %q, %v", got, err)
	}
	_, err = nfs.Cat(ctx, "/hello.txt")
	expectFail(t, "nfs-cat of the old name after a rename", err, "NFS3ERR_NOENT")
	if err := p.tgt.Rename("/odd.bin", "/odd2.bin"); err != nil {
		t.Fatalf("RENAME /odd.bin /odd2.bin: %v", err)
	}
	if got, err := nfs.Cat(ctx, "/odd2.bin"); err != nil || !bytes.Equal(got, odd) {
		t.Errorf("nfs-cat /odd2.bin after the rename: %d bytes, %v", len(got), err)
	}

	// remove (go-nfs-client: REMOVE, RMDIR)
	if st := p.remove(p.root, "sub", true); st != errNotEmpty {
		t.Errorf("RMDIR of a non-empty directory: %s, want NFS3ERR_NOTEMPTY(66)", statusName(st))
	}
	if st, _ := p.create(p.root, strings.Repeat("n", 300)); st != errNameTooLong {
		t.Errorf("CREATE of a 300-byte name: %s, want NFS3ERR_NAMETOOLONG(63)", statusName(st))
	}
	for _, f := range []string{"/sub/renamed.txt", "/sub/inner.txt", "/empty"} {
		if err := p.tgt.Remove(f); err != nil {
			t.Fatalf("REMOVE %s: %v", f, err)
		}
	}
	if err := p.tgt.RmDir("/sub"); err != nil {
		t.Fatalf("RMDIR /sub: %v", err)
	}
	ents, err = nfs.List(ctx, "/", "-R")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(ents), []string{"odd2.bin"}; !slices.Equal(got, want) {
		t.Errorf("nfs-ls -R / after the removals: %v, want %v", got, want)
	}
	_, err = nfs.Cat(ctx, "/empty")
	expectFail(t, "nfs-cat of a removed file", err, "NFS3ERR_NOENT")
	_, err = nfs.List(ctx, "/sub")
	if err == nil {
		t.Error("nfs-ls of a removed directory succeeded")
	}

	// names with @@ are reserved
	expectFail(t, "nfs-cp to a name containing @@", nfs.Write(ctx, "/x@@y", []byte("x")), "NFS3ERR_INVAL")
	if ents, _ := nfs.List(ctx, "/"); slices.Contains(names(ents), "x@@y") {
		t.Error("x@@y was created")
	}
}

// libnfs without auto-traverse-mounts=0: it asks MOUNTPROC3_EXPORT first, which asof answers.
func TestLibNFSTraverseMounts(t *testing.T) {
	needLibNFS(t)
	s := start(t)
	ctx := context.Background()
	nfs := clients.NFS{Addr: s.NFSAddr, Traverse: true}
	if !strings.Contains(nfs.DirURL("/"), "?version=3") || strings.Contains(nfs.DirURL("/"), "auto-traverse-mounts") {
		t.Fatalf("URL %s still disables auto-traverse-mounts", nfs.DirURL("/"))
	}
	p := dialProto(t, s.NFSAddr, "/")
	if st, _ := p.mkdir(p.root, "d"); st != nfsOK {
		t.Fatalf("MKDIR d: %s", statusName(st))
	}
	if err := nfs.Write(ctx, "/top.txt", []byte("top\n")); err != nil {
		t.Fatal(err)
	}
	if err := nfs.Write(ctx, "/d/in.txt", []byte("in\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := nfs.Cat(ctx, "/top.txt"); err != nil || string(got) != "top\n" {
		t.Errorf("nfs-cat /top.txt: %q, %v", got, err)
	}
	if got, err := nfs.Cat(ctx, "/d/in.txt"); err != nil || string(got) != "in\n" {
		t.Errorf("nfs-cat /d/in.txt: %q, %v", got, err)
	}
	ents, err := nfs.List(ctx, "/", "-R")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(ents), []string{"d", "d/in.txt", "top.txt"}; !slices.Equal(got, want) {
		t.Errorf("nfs-ls -R /: %v, want %v", got, want)
	}
	if ents, err := nfs.List(ctx, "/d"); err != nil || !slices.Equal(names(ents), []string{"in.txt"}) {
		t.Errorf("nfs-ls /d: %v, %v", names(ents), err)
	}
	time.Sleep(settle)
	vs := history(t, s, "/top.txt")
	if got, err := nfs.Cat(ctx, "/top.txt@@"+vs[len(vs)-1].TID); err != nil || string(got) != "top\n" {
		t.Errorf("nfs-cat /top.txt@@TID: %q, %v", got, err)
	}
	if ents, err := nfs.List(ctx, "/@@"+vs[len(vs)-1].TID); err != nil || !slices.Contains(names(ents), "top.txt") {
		t.Errorf("nfs-ls of export /@@TID: %v, %v", names(ents), err)
	}
}

// A 1 GiB file goes in with nfs-cp and comes back byte for byte with nfs-cat.
func TestLibNFSOneGiB(t *testing.T) {
	needLibNFS(t)
	if testing.Short() {
		t.Skip("moves 2 GiB; skipped with -short")
	}
	const size = 1 << 30
	s := start(t)
	ctx := context.Background()
	nfs := clients.NFS{Addr: s.NFSAddr, Timeout: 3 * time.Minute}

	// incompressible, deterministic data (a store that dedups must still move it all)
	local := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(local)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{'a', 's', 'o', 'f'}), size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))

	t0 := time.Now()
	if err := nfs.Put(ctx, local, "/big.bin"); err != nil {
		t.Fatal(err)
	}
	in := time.Since(t0)
	os.Remove(local)

	ents, err := nfs.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := entry(ents, "big.bin"); !ok || e.Size != size {
		t.Errorf("nfs-ls: big.bin is %+v, want %d bytes", e, size)
	}

	// nfs-cat streamed into sha256: nothing holds the GiB in memory
	t0 = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "nfs-cat", nfs.FileURL("/big.bin"))
	h.Reset()
	var n countWriter
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.MultiWriter(h, &n), &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nfs-cat /big.bin: %v: %s", err, stderr.String())
	}
	out := time.Since(t0)
	if got := hex.EncodeToString(h.Sum(nil)); got != want || n != size {
		t.Errorf("nfs-cat /big.bin: %d bytes sha256 %s, want %d bytes sha256 %s", n, got, size, want)
	}
	t.Logf("1 GiB: nfs-cp in %v (%.0f MiB/s), nfs-cat out %v (%.0f MiB/s)",
		in.Round(time.Millisecond), float64(size>>20)/in.Seconds(), out.Round(time.Millisecond), float64(size>>20)/out.Seconds())
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// A directory of 10,000 files, created over the protocol by go-nfs-client (four
// connections), then listed by nfs-ls: exactly the 10,000 names, once each.
func TestLibNFSTenThousandFiles(t *testing.T) {
	needLibNFS(t)
	const files, workers = 10000, 4
	s := start(t)
	ctx := context.Background()
	nfs := clients.NFS{Addr: s.NFSAddr, Timeout: 30 * time.Second} // it takes well under a second
	p := dialProto(t, s.NFSAddr, "/")
	st, dir := p.mkdir(p.root, "many")
	if st != nfsOK {
		t.Fatalf("MKDIR many: %s", statusName(st))
	}

	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan string, workers+1)
	// while the files are made (and the server commits them), another client lists the
	// directory again and again: every listing must end and repeat no name
	lister := dialProto(t, s.NFSAddr, "/")
	lister.soft = true
	creating := make(chan struct{})
	listerDone := make(chan int, 1)
	go func() {
		n := 0
		defer func() { listerDone <- n }()
		for ; ; n++ {
			select {
			case <-creating:
				return
			case <-time.After(20 * time.Millisecond):
			}
			st, ns := lister.readdir(dir)
			if st != nfsOK {
				errs <- fmt.Sprintf("READDIR during the creation: %s", statusName(st))
				return
			}
			seen := map[string]bool{}
			for _, name := range ns {
				if seen[name] {
					errs <- fmt.Sprintf("READDIR during the creation listed %q twice", name)
					return
				}
				seen[name] = true
			}
		}
	}()
	for w := 0; w < workers; w++ {
		c := dialProto(t, s.NFSAddr, "/")
		c.soft = true
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < files; i += workers {
				name := fmt.Sprintf("file-%05d", i)
				if st, _ := c.create(dir, name); st != nfsOK {
					errs <- fmt.Sprintf("CREATE %s: %s", name, statusName(st))
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(creating)
	var listings int
	select {
	case listings = <-listerDone:
	case <-time.After(40 * time.Second):
		errs <- "READDIR during the creation: no end"
	}
	close(errs)
	var failed bool
	for e := range errs {
		t.Error(e)
		failed = true
	}
	if failed {
		dumpIfHung(t, s)
		t.FailNow()
	}
	created := time.Since(t0)
	t.Logf("%d READDIR listings while the files were made", listings)

	t0 = time.Now()
	ents, err := nfs.List(ctx, "/many")
	if err != nil {
		dumpIfHung(t, s)
		t.Fatal(err)
	}
	listed := time.Since(t0)
	got := names(ents)
	want := make([]string, files)
	for i := range want {
		want[i] = fmt.Sprintf("file-%05d", i)
	}
	if !slices.Equal(got, want) {
		seen := map[string]int{}
		for _, n := range got {
			seen[n]++
		}
		var missing, dup []string
		for _, n := range want {
			if seen[n] == 0 {
				missing = append(missing, n)
			}
		}
		for n, c := range seen {
			if c > 1 {
				dup = append(dup, n)
			}
		}
		t.Errorf("nfs-ls /many: %d entries, want %d; %d missing (first %v), %d repeated (first %v)",
			len(got), files, len(missing), first(missing, 5), len(dup), first(dup, 5))
	}
	// the same through READDIR (small replies: many cookie round trips)
	p.onHang = func() { dumpIfHung(t, s) }
	t1 := time.Now()
	st, rd := p.readdir(dir)
	if st != nfsOK {
		t.Fatalf("READDIR many: %s", statusName(st))
	}
	sort.Strings(rd)
	if !slices.Equal(rd, want) {
		t.Errorf("READDIR /many: %d names, want %d", len(rd), files)
	}
	t.Logf("10,000 files: CREATE over %d connections %v, nfs-ls %v, READDIR (8 KiB replies) %v",
		workers, created.Round(time.Millisecond), listed.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))

	// Listings while another client keeps changing the directory (and so the server keeps
	// committing): every listing ends, holds each of the 10,000 names exactly once, and
	// repeats no name.
	churner := dialProto(t, s.NFSAddr, "/")
	stop := make(chan struct{})
	churned := make(chan int, 1)
	go func() {
		n := 0
		defer func() { churned <- n }()
		for ; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("churn-%d", n)
			if st, _ := churner.create(dir, name); st != nfsOK {
				return
			}
			if n >= 10 {
				if st := churner.remove(dir, fmt.Sprintf("churn-%d", n-10), false); st != nfsOK {
					return
				}
			}
		}
	}()
	t2 := time.Now()
	rounds := 0
	for rounds = 0; rounds < 4 || time.Since(t2) < 3*time.Second; rounds++ {
		var got []string
		var how string
		if rounds%2 == 0 {
			how = "nfs-ls"
			ents, err := nfs.List(ctx, "/many")
			if err != nil {
				close(stop)
				dumpIfHung(t, s)
				t.Fatalf("round %d: %v", rounds, err)
			}
			got = names(ents)
		} else {
			how = "READDIR"
			st, rd := p.readdir(dir)
			if st != nfsOK {
				close(stop)
				t.Fatalf("round %d: READDIR many: %s", rounds, statusName(st))
			}
			got = rd
		}
		seen := map[string]int{}
		for _, n := range got {
			seen[n]++
			if seen[n] == 2 {
				t.Errorf("round %d (%s, during changes): %q listed twice", rounds, how, n)
			}
			if !strings.HasPrefix(n, "file-") && !strings.HasPrefix(n, "churn-") {
				t.Errorf("round %d (%s, during changes): unexpected name %q", rounds, how, n)
			}
		}
		for _, n := range want {
			if seen[n] != 1 {
				t.Errorf("round %d (%s, during changes): %s listed %d times, want once", rounds, how, n, seen[n])
				break
			}
		}
	}
	close(stop)
	select {
	case n := <-churned:
		t.Logf("%d listings in %v while another client made %d files and removed as many",
			rounds, time.Since(t2).Round(time.Millisecond), n)
	case <-time.After(30 * time.Second):
		dumpIfHung(t, s)
		t.Fatal("the changing client got no answer for 30 s")
	}
}

// dumpIfHung checks whether the server still answers; if not, it asks it for a goroutine
// dump (SIGQUIT: the Go runtime prints every stack and exits), which lands in the server
// log that serverproc prints for a failed test.
func dumpIfHung(t *testing.T, s *serverproc.Server) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := tryDialProto(t, s.NFSAddr, "/")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			return
		}
		t.Logf("the server does not take a new MOUNT: %v", err)
	case <-time.After(5 * time.Second):
		t.Log("the server does not answer a new MOUNT in 5 s: hung; asking for a goroutine dump (SIGQUIT)")
	}
	if pid := s.Pid(); pid > 0 {
		syscall.Kill(pid, syscall.SIGQUIT)
		for i := 0; i < 50 && s.Running(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Earlier versions read back through file@@TID, file@@RFC3339, dir@@WHEN/file and
// file@@/VERSION; a MOUNT of /@@WHEN; writes into the past refused.
func TestLibNFSHistory(t *testing.T) {
	needLibNFS(t)
	s := start(t)
	ctx := context.Background()
	nfs := clients.NFS{Addr: s.NFSAddr}
	p := dialProto(t, s.NFSAddr, "/")
	if st, _ := p.mkdir(p.root, "docs"); st != nfsOK {
		t.Fatalf("MKDIR docs: %s", statusName(st))
	}
	contents := []string{"one\n", "one\ntwo\n", "one\ntwo\nthree\n"}
	// version 1 by nfs-cp; then (nfs-cp cannot overwrite: it creates GUARDED) WRITEs over it
	if err := nfs.Write(ctx, "/docs/f.txt", []byte(contents[0])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle)
	fh := p.lookup("docs/f.txt")
	for _, c := range contents[1:] {
		if st := p.write(fh, 0, []byte(c)); st != nfsOK {
			t.Fatalf("WRITE: %s", statusName(st))
		}
		time.Sleep(settle)
	}
	if err := nfs.Write(ctx, "/docs/later.txt", []byte("later\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle)

	hist := history(t, s, "/docs/f.txt")
	t.Logf("asof history /docs/f.txt: %+v", hist)
	bySize := map[int64]version{} // the last version of each size
	for _, v := range hist {
		bySize[v.Size] = v
	}
	var at []version // the version of each content
	for _, c := range contents {
		v, ok := bySize[int64(len(c))]
		if !ok {
			t.Fatalf("asof history has no version of %d bytes: %+v", len(c), hist)
		}
		at = append(at, v)
	}

	t.Run("file@@TID", func(t *testing.T) {
		for i, v := range at {
			if got, err := nfs.Cat(ctx, "/docs/f.txt@@"+v.TID); err != nil || string(got) != contents[i] {
				t.Errorf("nfs-cat /docs/f.txt@@%s: %q, %v; want %q", v.TID, got, err, contents[i])
			}
		}
	})
	t.Run("file@@RFC3339", func(t *testing.T) {
		plus2 := time.FixedZone("+02:00", 2*3600)
		for i, v := range at {
			tm, err := time.Parse(time.RFC3339Nano, v.Time)
			if err != nil {
				t.Fatalf("history time %q: %v", v.Time, err)
			}
			for _, when := range []string{
				v.Time, // as asof history prints it
				tm.In(plus2).Format("2006-01-02T15:04:05.000000000-07:00"), // another offset, 9 digits
			} {
				if got, err := nfs.Cat(ctx, "/docs/f.txt@@"+when); err != nil || string(got) != contents[i] {
					t.Errorf("nfs-cat /docs/f.txt@@%s: %q, %v; want %q", when, got, err, contents[i])
				}
			}
		}
		// one nanosecond before the first version the file did not exist
		tm, _ := time.Parse(time.RFC3339Nano, hist[0].Time)
		before := tm.Add(-time.Nanosecond).UTC().Format(time.RFC3339Nano)
		_, err := nfs.Cat(ctx, "/docs/f.txt@@"+before)
		expectFail(t, "nfs-cat of the file before it was created", err, "NFS3ERR_NOENT")
	})
	t.Run("dir@@WHEN/file", func(t *testing.T) {
		for i, v := range at {
			for _, p := range []string{"/docs@@" + v.TID + "/f.txt", "/docs/@@" + v.TID + "/f.txt", "/@@" + v.TID + "/docs/f.txt"} {
				if got, err := nfs.Cat(ctx, p); err != nil || string(got) != contents[i] {
					t.Errorf("nfs-cat %s: %q, %v; want %q", p, got, err, contents[i])
				}
			}
		}
	})
	t.Run("file@@/VERSION", func(t *testing.T) {
		ents, err := nfs.List(ctx, "/docs/f.txt@@")
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		sizeOf := map[string]int64{}
		for _, v := range hist {
			tm, err := time.Parse(time.RFC3339Nano, v.Time)
			if err != nil {
				t.Fatal(err)
			}
			n := tm.UTC().Format("2006-01-02T15:04:05.000000000Z")
			if v.Time != n {
				t.Errorf("asof history prints %s; the version is named %s", v.Time, n)
			}
			want = append(want, n)
			sizeOf[n] = v.Size
		}
		sort.Strings(want)
		if got := names(ents); !slices.Equal(got, want) {
			t.Fatalf("nfs-ls /docs/f.txt@@: %v, want one entry per version of asof history: %v", got, want)
		}
		for _, e := range ents {
			if e.Size != sizeOf[e.Name] {
				t.Errorf("nfs-ls /docs/f.txt@@: %s has %d bytes, asof history says %d", e.Name, e.Size, sizeOf[e.Name])
			}
			got, err := nfs.Cat(ctx, "/docs/f.txt@@/"+e.Name)
			if err != nil {
				t.Errorf("nfs-cat /docs/f.txt@@/%s: %v", e.Name, err)
				continue
			}
			if int64(len(got)) != e.Size || !strings.HasPrefix(contents[2], string(got)) {
				t.Errorf("nfs-cat /docs/f.txt@@/%s: %q, want a version of %d bytes", e.Name, got, e.Size)
			}
		}
	})
	t.Run("MOUNT /@@WHEN", func(t *testing.T) {
		for i, v := range at {
			for _, nc := range []clients.NFS{nfs, {Addr: s.NFSAddr, Traverse: true}} {
				ents, err := nc.List(ctx, "/@@"+v.TID, "-R")
				if err != nil {
					t.Errorf("nfs-ls -R %s: %v", nc.DirURL("/@@"+v.TID), err)
					continue
				}
				if got, want := names(ents), []string{"docs", "docs/f.txt"}; !slices.Equal(got, want) {
					t.Errorf("nfs-ls -R %s: %v, want %v (later.txt came later)", nc.DirURL("/@@"+v.TID), got, want)
				}
				if e, _ := entry(ents, "docs/f.txt"); e.Size != int64(len(contents[i])) {
					t.Errorf("nfs-ls -R %s: docs/f.txt has %d bytes, want %d", nc.DirURL("/@@"+v.TID), e.Size, len(contents[i]))
				}
			}
		}
		last := hist[len(hist)-1]
		for _, export := range []string{"/docs@@" + last.TID, "/docs/@@" + last.TID} {
			ents, err := nfs.List(ctx, export)
			if err != nil || !slices.Equal(names(ents), []string{"f.txt"}) {
				t.Errorf("nfs-ls %s: %v, %v; want [f.txt]", export, names(ents), err)
			}
		}
		// a relative WHEN: a week ago there was no docs
		_, err := nfs.List(ctx, "/docs@@-1w")
		expectFail(t, "nfs-ls of export /docs@@-1w", err, "NOENT")
	})
	t.Run("writes into the past refused", func(t *testing.T) {
		tid := at[1].TID
		expectFail(t, "nfs-cp into /docs@@TID", nfs.Write(ctx, "/docs@@"+tid+"/new.txt", []byte("x")), "NFS3ERR_ROFS")
		expectFail(t, "nfs-cp into /@@TID/docs", nfs.Write(ctx, "/@@"+tid+"/docs/new.txt", []byte("x")), "NFS3ERR_ROFS")
		expectFail(t, "nfs-cp into /@@TID", nfs.Write(ctx, "/@@"+tid+"/new.txt", []byte("x")), "NFS3ERR_ROFS")
		expectFail(t, "nfs-cp into the version listing /docs/f.txt@@", nfs.Write(ctx, "/docs/f.txt@@/new", []byte("x")), "NFS3ERR_ROFS")
		if err := nfs.Write(ctx, "/docs/f.txt@@"+tid, []byte("x")); err == nil {
			t.Error("nfs-cp onto /docs/f.txt@@TID succeeded")
		}
		// over the protocol: WRITE, SETATTR, CREATE, REMOVE, RENAME through historical handles
		old := p.lookup("docs/f.txt@@" + tid)
		olddir := p.lookup("docs@@" + tid)
		live := p.lookup("docs")
		if st := p.write(old, 0, []byte("X")); st != errROFS {
			t.Errorf("WRITE to a historical file: %s, want NFS3ERR_ROFS", statusName(st))
		}
		if st := p.setattrMode(old, 0o600); st != errROFS {
			t.Errorf("SETATTR of a historical file: %s, want NFS3ERR_ROFS", statusName(st))
		}
		if st, _ := p.create(olddir, "n"); st != errROFS {
			t.Errorf("CREATE in a historical directory: %s, want NFS3ERR_ROFS", statusName(st))
		}
		if st, _ := p.mkdir(olddir, "n"); st != errROFS {
			t.Errorf("MKDIR in a historical directory: %s, want NFS3ERR_ROFS", statusName(st))
		}
		if st := p.remove(olddir, "f.txt", false); st != errROFS {
			t.Errorf("REMOVE in a historical directory: %s, want NFS3ERR_ROFS", statusName(st))
		}
		if st := p.rename(olddir, "f.txt", live, "stolen.txt"); st != errROFS {
			t.Errorf("RENAME out of a historical directory: %s, want NFS3ERR_ROFS", statusName(st))
		}
		if st := p.rename(live, "later.txt", olddir, "later.txt"); st != errROFS {
			t.Errorf("RENAME into a historical directory: %s, want NFS3ERR_ROFS", statusName(st))
		}
		if st := p.link(p.lookup("docs/later.txt"), olddir, "l"); st != errROFS {
			t.Errorf("LINK into a historical directory: %s, want NFS3ERR_ROFS", statusName(st))
		}
		// and nothing changed
		ents, err := nfs.List(ctx, "/docs")
		if err != nil || !slices.Equal(names(ents), []string{"f.txt", "later.txt"}) {
			t.Errorf("nfs-ls /docs after the refused writes: %v, %v", names(ents), err)
		}
		if got, err := nfs.Cat(ctx, "/docs/f.txt@@"+tid); err != nil || string(got) != contents[1] {
			t.Errorf("the past changed: /docs/f.txt@@%s is %q, %v", tid, got, err)
		}
	})
	t.Run("bad WHEN is EINVAL", func(t *testing.T) {
		// SPEC 3: a WHEN that does not parse returns EINVAL (and the server logs why)
		_, err := nfs.Cat(ctx, "/docs/f.txt@@bogus")
		expectFail(t, "nfs-cat /docs/f.txt@@bogus (LOOKUP)", err, "NFS3ERR_INVAL")
		if st, _, _ := p.lookupFH(p.lookup("docs"), "f.txt@@2026-13-45"); st != errInval {
			t.Errorf("LOOKUP f.txt@@2026-13-45: %s, want NFS3ERR_INVAL", statusName(st))
		}
		_, err = nfs.List(ctx, "/docs@@bogus")
		if err == nil {
			t.Error("nfs-ls of export /docs@@bogus succeeded")
		} else if msg := stderrOf(err); !strings.Contains(msg, "MNT3ERR_INVAL") && !strings.Contains(msg, "(-22)") && !strings.Contains(msg, "Invalid argument") {
			t.Errorf("MOUNT /docs@@bogus: want MNT3ERR_INVAL, got:\n%s", msg)
		}
		if !strings.Contains(s.Log(), "bogus") {
			t.Error("the server did not log why @@bogus was refused")
		}
	})
	t.Run("no @@ names in listings", func(t *testing.T) {
		ents, err := nfs.List(ctx, "/", "-R")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.Contains(e.Name, "@@") {
				t.Errorf("nfs-ls -R / shows %q", e.Name)
			}
		}
	})
}
