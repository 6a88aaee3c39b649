package nfs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// TestServerChild is the server of TestUnstableWriteCommitSurvivesKill9:
// this test binary, re-executed, serving the store in $ASOF_NFS_CHILD_DIR
// until it is killed. Nothing commits by the clock: only COMMIT and
// FILE_SYNC make writes durable.
func TestServerChild(t *testing.T) {
	dir := os.Getenv("ASOF_NFS_CHILD_DIR")
	if dir == "" {
		t.Skip("runs only as the child of TestUnstableWriteCommitSurvivesKill9")
	}
	s, err := history.Open(dir, history.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("LISTEN", l.Addr())
	srv := New(fs.New(s, fs.Options{Squash: fs.SquashNone}), Options{Key: key})
	for {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		go srv.ServeConn(context.Background(), c)
	}
}

// childServer is a TestServerChild process.
type childServer struct {
	cmd  *exec.Cmd
	addr string
}

func startChild(t *testing.T, dir string) *childServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ASOF_NFS_CHILD_DIR="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &childServer{cmd: cmd}
	t.Cleanup(func() { ch.kill9() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTEN ")
	if err != nil || !ok {
		t.Fatalf("the server child said %q (%v)", line, err)
	}
	ch.addr = addr
	return ch
}

func (ch *childServer) kill9() {
	ch.cmd.Process.Kill() // SIGKILL
	ch.cmd.Wait()
}

// mountRaw mounts "/" on c (MOUNT shares the NFS port) and returns the root
// handle.
func mountRaw(t *testing.T, c *rawConn) []byte {
	t.Helper()
	w := &xdrWriter{}
	w.opaque([]byte("/"))
	x := c.callProg(progMount, 1, w.b)
	if st := x.u32(); st != 0 {
		t.Fatalf("MOUNT /: status %d", st)
	}
	fh := bytes.Clone(x.handle())
	if x.err != nil {
		t.Fatalf("MOUNT reply: %v", x.err)
	}
	return fh
}

// createRaw makes a file (UNCHECKED, mode 0644) and returns its handle.
func createRaw(t *testing.T, c *rawConn, dir []byte, name string) []byte {
	t.Helper()
	w := &xdrWriter{}
	w.opaque(dir)
	w.opaque([]byte(name))
	w.u32(0) // UNCHECKED
	w.bool(true)
	w.u32(0o644)
	for i := 0; i < 5; i++ { // uid, gid, size, atime, mtime: unset
		w.u32(0)
	}
	x := c.call(procCreate, w.b)
	if st := x.u32(); st != nfsOK {
		t.Fatalf("CREATE %s: status %d", name, st)
	}
	if !x.bool() {
		t.Fatalf("CREATE %s: no handle", name)
	}
	return bytes.Clone(x.handle())
}

// A server process: data written UNSTABLE and then COMMITted is
// intact after kill -9 and a restart, and the write verifier differs after
// the restart (so a client resends what it had not committed); a FILE_SYNC
// write survives too.
func TestUnstableWriteCommitSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	s := startChild(t, dir)
	c := dialRaw(t, s.addr)
	rootFH := mountRaw(t, c)
	fh := createRaw(t, c, rootFH, "unstable.dat")
	syncFH := createRaw(t, c, rootFH, "sync.dat")

	// first a FILE_SYNC write: durable on its own
	syncData := []byte("written FILE_SYNC\n")
	sw := c.write(syncFH, 0, stableFileSync, syncData)
	if sw.status != nfsOK || sw.committed != stableFileSync {
		t.Fatalf("WRITE FILE_SYNC: %+v", sw)
	}
	verf := sw.verf

	// then UNSTABLE writes, made durable by COMMIT alone
	data := randBytes(3*maxIO + 1234)
	// pipelined, as a kernel client sends them
	var xids []uint32
	for off := 0; off < len(data); off += maxIO {
		xids = append(xids, c.send(progNFS, procWrite, writeArgs(fh, uint64(off), stableUnstable, data[off:min(off+maxIO, len(data))])))
	}
	for range xids {
		_, st, body := c.recv()
		w := parseWrite(t, &xdrReader{b: body})
		if st != 0 || w.status != nfsOK || w.committed != stableUnstable || w.verf != verf {
			t.Fatalf("WRITE UNSTABLE: accept %d, %+v; want the verifier %x", st, w, verf)
		}
	}
	st, cverf := c.commit(fh)
	if st != nfsOK || cverf != verf {
		t.Fatalf("COMMIT: status %d verifier %x, want OK and the writes' %x", st, cverf, verf)
	}

	s.kill9()
	s = startChild(t, dir)
	c = dialRaw(t, s.addr) // the handles outlive the server
	var got []byte
	for {
		r := c.read(fh, uint64(len(got)), maxIO)
		if r.status != nfsOK {
			t.Fatalf("READ after the crash: status %d", r.status)
		}
		got = append(got, r.data...)
		if r.eof {
			break
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("after kill -9: %d bytes read back, want the %d committed (equal: %v)", len(got), len(data), bytes.Equal(got[:min(len(got), len(data))], data[:min(len(got), len(data))]))
	}
	if r := c.read(syncFH, 0, 100); !bytes.Equal(r.data, syncData) {
		t.Fatalf("the FILE_SYNC write after kill -9: %q", r.data)
	}
	w := c.write(fh, 0, stableUnstable, []byte("x"))
	if w.status != nfsOK || w.verf == verf {
		t.Fatalf("WRITE after the restart: %+v; want a verifier other than %x", w, verf)
	}
	if st, v := c.commit(fh); st != nfsOK || v != w.verf {
		t.Fatalf("COMMIT after the restart: %d %x, want %x", st, v, w.verf)
	}
}
