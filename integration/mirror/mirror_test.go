// Package mirror_test runs a source and a target as real asof processes,
// writes through libnfs, and kills either side, or cuts the link between
// them, at random points (docs/SPEC.md section 6).
package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asof/asof/integration/clients"
	"github.com/asof/asof/integration/serverproc"
)

func TestMain(m *testing.M) { os.Exit(serverproc.Main(m)) }

// link is a TCP proxy between a target and its source that the test can
// cut.
type link struct {
	l     net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
}

func newLink(t *testing.T, to string) *link {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &link{l: l, to: to}
	t.Cleanup(func() { l.Close(); k.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			k.mu.Lock()
			k.conns = append(k.conns, c, up)
			k.mu.Unlock()
			go func() { io.Copy(up, c); up.Close(); c.Close() }()
			go func() { io.Copy(c, up); up.Close(); c.Close() }()
		}
	}()
	return k
}

func (k *link) addr() string { return k.l.Addr().String() }

func (k *link) cut() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
}

type status struct {
	Last   string `json:"last"`
	Mirror bool   `json:"mirror"`
	Target *struct {
		State    string `json:"state"`
		Position uint64 `json:"position"`
	} `json:"target"`
	Source *struct {
		Targets []struct {
			Name     string `json:"name"`
			Position uint64 `json:"position"`
		} `json:"targets"`
	} `json:"source"`
}

func mirrorStatus(t *testing.T, s *serverproc.Server) status {
	t.Helper()
	out, _, err := s.Admin(context.Background(), "mirror", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status %q: %v", out, err)
	}
	return st
}

func newest(t *testing.T, s *serverproc.Server) uint64 {
	t.Helper()
	var st struct {
		Last uint64 `json:"last"`
	}
	out, _, err := s.Admin(context.Background(), "mirror", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	return st.Last
}

type version struct {
	TID  string `json:"tid"`
	Size uint64 `json:"size"`
}

func history(t *testing.T, s *serverproc.Server, path string) []version {
	t.Helper()
	out, _, err := s.Admin(context.Background(), "history", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []version
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// startPair starts a source and a target that follows it through a link
// the test can cut. Both serve with exports.squash=none: the tests write
// and read through libnfs as root, and mean root as root.
func startPair(t *testing.T) (src, dst *serverproc.Server, k *link) {
	port := serverproc.FreePort(t)
	src = serverproc.Start(t, serverproc.Options{NoNineP: true, Env: map[string]string{
		"ASOF_MIRROR_LISTEN": "127.0.0.1:" + strconv.Itoa(port), "ASOF_HISTORY_FLUSH_INTERVAL": "100ms", "ASOF_EXPORTS_SQUASH": "none"}})
	k = newLink(t, "127.0.0.1:"+strconv.Itoa(port))
	dst = serverproc.Start(t, serverproc.Options{NoNineP: true, Env: map[string]string{
		"ASOF_MIRROR_SOURCE": k.addr(), "ASOF_MIRROR_TOKEN_FILE": filepath.Join(src.DataDir, "mirror.token"),
		"ASOF_HISTORY_FLUSH_INTERVAL": "100ms", "ASOF_EXPORTS_SQUASH": "none"}})
	return src, dst, k
}

func waitCaughtUp(t *testing.T, src, dst *serverproc.Server) {
	t.Helper()
	want := newest(t, src)
	deadline := time.Now().Add(90 * time.Second)
	for newest(t, dst) != want {
		if time.Now().After(deadline) {
			t.Fatalf("the target is at %x, the source at %x", newest(t, dst), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Rounds of writes through libnfs, each with a kill -9 of the source, of
// the target, or a cut of the link at a random point among them. At the
// end the target holds every version of every file the source holds,
// with the same transaction ids, and reads each the same.
func TestMirrorThroughKillsAndCuts(t *testing.T) {
	clients.Need(t)
	src, dst, k := startPair(t)
	snfs := clients.NFS{Addr: src.NFSAddr, Timeout: time.Minute}
	dnfs := clients.NFS{Addr: dst.NFSAddr, Timeout: time.Minute}
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var files []string
	for round := 0; round < 12; round++ {
		fault := rnd.IntN(3)
		at := rnd.IntN(8)
		for i := 0; i < 8; i++ {
			if i == at {
				switch fault {
				case 0:
					t.Logf("round %d: kill -9 of the source", round)
					if err := src.Kill9(); err != nil {
						t.Fatal(err)
					}
					if err := src.Restart(); err != nil {
						t.Fatal(err)
					}
				case 1:
					t.Logf("round %d: kill -9 of the target", round)
					if err := dst.Kill9(); err != nil {
						t.Fatal(err)
					}
					if err := dst.Restart(); err != nil {
						t.Fatal(err)
					}
				case 2:
					t.Logf("round %d: the link is cut", round)
					k.cut()
				}
			}
			data := make([]byte, rnd.IntN(200000))
			for j := range data {
				data[j] = byte(rnd.Uint32())
			}
			if rnd.IntN(3) == 0 {
				time.Sleep(time.Duration(rnd.IntN(300)) * time.Millisecond) // a transaction of its own
			}
			name := fmt.Sprintf("/r%d-%d", round, i)
			if err := snfs.Write(ctx, name, data); err != nil {
				t.Fatal(err)
			}
			files = append(files, name)
		}
	}
	// Once the source has committed everything, the target catches up.
	time.Sleep(300 * time.Millisecond)
	waitCaughtUp(t, src, dst)
	moments := 0
	if sv, dv := history(t, src, "/"), history(t, dst, "/"); fmt.Sprint(sv) != fmt.Sprint(dv) || len(sv) < 8 {
		t.Fatalf("the root's versions: %d on the source, %d on the target\n%v\n%v", len(sv), len(dv), sv, dv)
	}
	for _, f := range files {
		sv, dv := history(t, src, f), history(t, dst, f)
		if fmt.Sprint(sv) != fmt.Sprint(dv) {
			t.Fatalf("%s: versions on the source %v, on the target %v", f, sv, dv)
		}
		for _, v := range sv {
			a, err := snfs.Cat(ctx, f+"@@"+v.TID)
			if err != nil {
				t.Fatal(err)
			}
			b, err := dnfs.Cat(ctx, f+"@@"+v.TID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) || uint64(len(a)) != v.Size {
				t.Fatalf("%s@@%s: %d bytes on the source, %d on the target", f, v.TID, len(a), len(b))
			}
			moments++
		}
	}
	out, _, err := dst.Admin(ctx, "mirror", "verify")
	if err != nil || !strings.Contains(out, "ok: the mirror reads as its source") {
		t.Fatalf("mirror verify: %v\n%s", err, out)
	}
	// The target refuses writes; promoted, it takes them.
	if err := dnfs.Write(ctx, "/new", []byte("x")); err == nil {
		t.Fatal("a write on the target succeeded")
	}
	if _, _, err := dst.Admin(ctx, "mirror", "promote"); err != nil {
		t.Fatal(err)
	}
	if err := dnfs.Write(ctx, "/new", []byte("x")); err != nil {
		t.Fatalf("a write after promote: %v", err)
	}
	t.Logf("%d versions compared", moments)
}

// asof mirror pull keeps a backup directory up to date with no server,
// refuses a wrong token, and verify compares it with its source.
func TestMirrorPullToABackupDirectory(t *testing.T) {
	clients.Need(t)
	port := serverproc.FreePort(t)
	src := serverproc.Start(t, serverproc.Options{NoNineP: true, Env: map[string]string{
		"ASOF_MIRROR_LISTEN": "127.0.0.1:" + strconv.Itoa(port), "ASOF_HISTORY_FLUSH_INTERVAL": "100ms", "ASOF_EXPORTS_SQUASH": "none"}})
	snfs := clients.NFS{Addr: src.NFSAddr, Timeout: time.Minute}
	ctx := context.Background()
	backup := filepath.Join(t.TempDir(), "backup")
	token := filepath.Join(src.DataDir, "mirror.token")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	pull := func(args ...string) (string, error) {
		out, errOut, err := src.Admin(ctx, append([]string{"mirror", "pull", addr, "--data", backup}, args...)...)
		return out + errOut, err
	}
	bad := filepath.Join(t.TempDir(), "bad.token")
	os.WriteFile(bad, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	if out, err := pull("--token-file", bad); err == nil || !strings.Contains(out+err.Error(), "refused") {
		t.Fatalf("pull with a wrong token: %v %s", err, out)
	}
	if n := strings.Count(src.Log(), "mirror: refused a target"); n != 1 {
		t.Fatalf("%d refusal lines in the source's log, want 1", n)
	}
	for i := 0; i < 20; i++ {
		if err := snfs.Write(ctx, fmt.Sprintf("/f%02d", i), bytes.Repeat([]byte{byte(i)}, 50000)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if out, err := pull("--token-file", token); err != nil || !strings.Contains(out, "pulled") {
		t.Fatalf("first pull: %v %s", err, out)
	}
	if err := snfs.Write(ctx, "/g", []byte("small")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	out, err := pull("--token-file", token)
	if err != nil || !strings.Contains(out, "and 0 blocks") {
		t.Fatalf("incremental pull: %v %s", err, out)
	}
	t.Logf("incremental: %s", strings.TrimSpace(out))
	out, _, err = src.Admin(ctx, "mirror", "verify", "--data", backup, "--source", addr, "--token-file", token)
	if err != nil || !strings.Contains(out, "compared 22 paths") {
		t.Fatalf("verify the backup: %v %s", err, out)
	}
}
