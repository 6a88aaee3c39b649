package nfs

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// logBuf is a log sink the server's goroutines may write to while a test reads it.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// take returns what was logged since the last take.
func (l *logBuf) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	l.b.Reset()
	return s
}

// mountFixture is a store with a directory /docs and a file /h.txt, and a logger into logs.
func mountFixture(t *testing.T) (*fs.FS, *slog.Logger, *logBuf) {
	t.Helper()
	s, err := history.Open(t.TempDir(), history.Options{FlushInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := fs.New(s, fs.Options{})
	root := fs.Cred{}
	if _, err := f.Mkdir(root, f.Root(), "docs", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Create(root, f.Root(), "h.txt", 0o644, true); err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	return f, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})), logs
}

// mountCall sends MOUNTPROC3_MNT for path on a connection of its own; nil when mounted.
func mountCall(t *testing.T, addr, path string) error {
	t.Helper()
	c := dialRPC(t, addr)
	defer c.Close()
	m := &nfsc.Mount{Client: c}
	_, err := m.Mount(path, rpc.NewAuthUnix("test", 0, 0).Auth())
	return err
}

// dialRPC connects go-nfs-client's RPC client, which binds a random local port of its own
// choosing and fails when that port is taken (say, by an earlier connection of the test in
// TIME_WAIT): it tries again.
func dialRPC(t testing.TB, addr string) *rpc.Client {
	t.Helper()
	for try := 0; ; try++ {
		c, err := rpc.DialTCP("tcp", addr, false)
		if err == nil {
			return c
		}
		if try == 20 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
}

// A refused MOUNT answers the status that says why (a file: MNT3ERR_NOTDIR, a missing path:
// MNT3ERR_NOENT, a bad @@WHEN: MNT3ERR_INVAL) and logs one Info line naming the client, the
// path, the status and why, with a hint at libnfs's file URLs where a client may have meant a
// file. A mount that works logs nothing at Info.
func TestMountRefusalSaysWhy(t *testing.T) {
	f, logger, logs := mountFixture(t)
	addr := listenServe(t, f, Options{Key: make([]byte, 32), Logger: logger})
	logs.take() // whatever Serve says when it starts

	tid, err := f.Commit()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/docs", "/docs/", "/@@" + tid.String(), "/docs@@" + tid.String()} {
		if err := mountCall(t, addr, p); err != nil {
			t.Errorf("MOUNT %q: %v, want it mounted", p, err)
		}
	}
	if got := logs.take(); strings.Contains(got, "level=INFO") || strings.Contains(got, "level=WARN") {
		t.Errorf("mounts that worked logged:\n%s", got)
	}

	hint := "nfs://host//path/to/file"
	for _, c := range []struct {
		path, status, why string
		client            string // how go-nfs-client words the status
		noHint            bool   // a moment that is wrong, not a file named
	}{
		{"/h.txt", "MNT3ERR_NOTDIR", "names a file, not a directory", "MNT3ERR_NOTDIR", false},
		{"/h.txt/sub", "MNT3ERR_NOTDIR", "", "MNT3ERR_NOTDIR", false},
		{"/h.txt@@" + tid.String(), "MNT3ERR_NOTDIR", "names a file, not a directory", "MNT3ERR_NOTDIR", false},
		{"/missing", "MNT3ERR_NOENT", "", "MNT3ERR_NOENT", false},
		{"/missing/deeper", "MNT3ERR_NOENT", "", "MNT3ERR_NOENT", false},
		{"/@@1971-01-01", "MNT3ERR_NOENT", "", "MNT3ERR_NOENT", true},
		{"/docs@@not-a-time", "MNT3ERR_INVAL", "not-a-time", "mount stat: 22", true},
	} {
		err := mountCall(t, addr, c.path)
		if err == nil || !strings.Contains(err.Error(), c.client) {
			t.Errorf("MOUNT %q: %v, want %s", c.path, err, c.status)
		}
		got := logs.take()
		lines := strings.Split(strings.TrimSpace(got), "\n")
		if len(lines) != 1 {
			t.Errorf("MOUNT %q logged %d lines, want one:\n%s", c.path, len(lines), got)
			continue
		}
		line := lines[0]
		for _, want := range []string{"level=INFO", `msg="nfs: mount refused"`, "client=127.0.0.1:", "path=" + c.path, "status=" + c.status, c.why} {
			if !strings.Contains(line, want) {
				t.Errorf("MOUNT %q: log line lacks %q:\n%s", c.path, want, line)
			}
		}
		if strings.Contains(line, hint) == c.noHint {
			t.Errorf("MOUNT %q: hint about file URLs %v, want %v:\n%s", c.path, !c.noHint, c.noHint, line)
		}
	}
}

// An empty export path, which libnfs sends for a file URL at the root (nfs://host/a.txt: the
// part before the last slash), is the root: such URLs work as they read.
func TestMountEmptyPath(t *testing.T) {
	f, logger, logs := mountFixture(t)
	c := dialRPC(t, listenServe(t, f, Options{Key: make([]byte, 32), Logger: logger}))
	defer c.Close()
	m := &nfsc.Mount{Client: c}
	target, err := m.Mount("", rpc.NewAuthUnix("test", 0, 0).Auth())
	if err != nil {
		t.Fatalf("MOUNT \"\": %v", err)
	}
	// The handle is the root's: h.txt is found in it.
	if _, _, err := target.Lookup("h.txt"); err != nil {
		t.Errorf("LOOKUP h.txt in what MOUNT \"\" gave: %v", err)
	}
	if got := logs.take(); strings.Contains(got, "level=INFO") {
		t.Errorf("MOUNT \"\" logged:\n%s", got)
	}
}

// NFS of another version than 3 gets PROG_MISMATCH (3 to 3), so that a client
// asking for NFSv4 first goes on with version 3; MOUNT v1's EXPORT (what
// showmount asks) is answered as v3's, its MNT with PROG_MISMATCH; other
// programs (NFS_ACL, which the Linux client probes at every mount; NLM) get
// PROG_UNAVAIL. None of it logs a warning, and the connection goes on.
func TestOtherVersionsAndPrograms(t *testing.T) {
	f, logger, logs := mountFixture(t)
	addr := listenServe(t, f, Options{Key: make([]byte, 32), Logger: logger})
	logs.take()
	c := dialRaw(t, addr)
	call := func(prog, vers, proc uint32, args []byte) (uint32, *xdrReader) {
		t.Helper()
		xid := c.xid.Add(1)
		if _, err := c.c.Write(encodeCallVers(xid, prog, vers, proc, args)); err != nil {
			t.Fatal(err)
		}
		got, st, body := c.recv()
		if got != xid {
			t.Fatalf("reply to xid %d, want %d", got, xid)
		}
		return st, &xdrReader{b: body}
	}
	path := func() []byte { w := &xdrWriter{}; w.opaque([]byte("/")); return w.b }()
	for _, m := range []struct {
		what             string
		prog, vers, proc uint32
		args             []byte
	}{
		{"NFSv4 NULL", progNFS, 4, 0, nil},
		{"NFSv4 COMPOUND", progNFS, 4, 1, make([]byte, 16)},
		{"NFSv2 GETATTR", progNFS, 2, 1, make([]byte, 32)},
		{"MOUNT v1 MNT", progMount, 1, mountProcMnt, path},
		{"MOUNT v4 NULL", progMount, 4, 0, nil},
	} {
		st, r := call(m.prog, m.vers, m.proc, m.args)
		if lo, hi := r.u32(), r.u32(); st != sunrpc.ProgMismatch || lo != 3 || hi != 3 || r.err != nil {
			t.Errorf("%s: accept_stat %d, versions %d to %d (%v); want PROG_MISMATCH, 3 to 3", m.what, st, lo, hi, r.err)
		}
	}
	for _, p := range []struct {
		what       string
		prog, vers uint32
	}{{"NFS_ACL", 100227, 3}, {"NLM", 100021, 4}} {
		if st, _ := call(p.prog, p.vers, 0, nil); st != sunrpc.ProgUnavail {
			t.Errorf("%s NULL: accept_stat %d, want PROG_UNAVAIL", p.what, st)
		}
	}
	st, r := call(progMount, 1, mountProcExport, nil)
	if more, dir := r.bool(), r.opaque(1024); st != 0 || !more || string(dir) != "/" || r.err != nil {
		t.Errorf("MOUNT v1 EXPORT: accept_stat %d, first entry %v %q (%v); want the export /", st, more, dir, r.err)
	}
	if st, _ := call(progMount, 1, 0, nil); st != 0 {
		t.Errorf("MOUNT v1 NULL: accept_stat %d", st)
	}
	// The connection goes on with version 3.
	fh := mountRaw(t, c)
	if x := c.call(procGetattr, func() []byte { w := &xdrWriter{}; w.opaque(fh); return w.b }()); x.u32() != nfsOK {
		t.Error("GETATTR of the root after them failed")
	}
	if got := logs.take(); strings.Contains(got, "level=WARN") || strings.Contains(got, "level=ERROR") {
		t.Errorf("calls of other versions and programs logged:\n%s", got)
	}
}
