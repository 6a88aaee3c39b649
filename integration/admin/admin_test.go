// Package admin_test runs the asof binary as a user would: serve, the admin
// commands over the control socket, signals, the data-directory lock and
// configuration errors.
package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asof/asof/integration/clients"
	"github.com/asof/asof/integration/serverproc"
)

func TestMain(m *testing.M) { os.Exit(serverproc.Main(m)) }

func start(t *testing.T, env map[string]string) (*serverproc.Server, clients.NFS) {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["ASOF_HISTORY_FLUSH_INTERVAL"]; !ok {
		env["ASOF_HISTORY_FLUSH_INTERVAL"] = "100ms"
	}
	s := serverproc.Start(t, serverproc.Options{NoNineP: !servesNineP(), Env: env})
	return s, clients.NFS{Addr: s.NFSAddr, Timeout: time.Minute}
}

// servesNineP: whether this build serves 9P (the server wiring imports it).
func servesNineP() bool {
	root, err := serverproc.ModuleRoot()
	if err != nil {
		return false
	}
	b, _ := os.ReadFile(filepath.Join(root, "server", "server.go"))
	return bytes.Contains(b, []byte("asof/ninep"))
}

type version struct {
	TID    string    `json:"tid"`
	Time   time.Time `json:"time"`
	Size   uint64    `json:"size"`
	Change string    `json:"change"`
}

func history(t *testing.T, s *serverproc.Server, path string) []version {
	t.Helper()
	out, _, err := s.Admin(context.Background(), "history", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []version
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		t.Fatalf("history --json: %v: %s", err, out)
	}
	return vs
}

func TestAdminCommandsAgainstARunningServer(t *testing.T) {
	clients.Need(t)
	s, c := start(t, nil)
	ctx := context.Background()
	if err := c.Write(ctx, "/notes.txt", []byte("first\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the flush interval: a version of its own
	if err := c.Write(ctx, "/other.txt", []byte("other\n")); err != nil {
		t.Fatal(err)
	}

	vs := history(t, s, "/notes.txt")
	if len(vs) != 1 || vs[0].Size != 6 || !strings.Contains(vs[0].Change, "created") ||
		len(vs[0].TID) != 18 || !strings.HasPrefix(vs[0].TID, "0x") || vs[0].Time.IsZero() {
		t.Fatalf("history --json: %+v", vs)
	}
	// The table form, and a path without its leading slash.
	out, _, err := s.Admin(ctx, "history", "notes.txt")
	if err != nil || !strings.Contains(out, vs[0].TID) || !strings.Contains(out, "TID") {
		t.Fatalf("history table: %v\n%s", err, out)
	}

	// clone, then read the copy through NFS.
	if out, _, err := s.Admin(ctx, "clone", "/notes.txt", "/copy.txt"); err != nil || !strings.Contains(out, "cloned") {
		t.Fatalf("clone: %v %s", err, out)
	}
	if got, err := c.Cat(ctx, "/copy.txt"); err != nil || string(got) != "first\n" {
		t.Fatalf("clone read back: %q %v", got, err)
	}

	// restore: change the file, then bring the first version back.
	time.Sleep(300 * time.Millisecond)
	if err := c.Write(ctx, "/third.txt", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Admin(ctx, "restore", "/notes.txt@@"+vs[0].TID); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got, err := c.Cat(ctx, "/notes.txt"); err != nil || string(got) != "first\n" {
		t.Fatalf("after restore: %q %v", got, err)
	}

	// stats --json has the fields SPEC section 4 names.
	out, _, err = s.Admin(ctx, "stats", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats --json: %v: %s", err, out)
	}
	for _, k := range []string{"logical_bytes", "stored_bytes", "dedup_ratio", "objects", "versions", "oldest"} {
		if _, ok := st[k]; !ok {
			t.Errorf("stats --json lacks %q: %s", k, out)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(st["oldest"])); err != nil {
		t.Errorf("stats oldest is not RFC 3339: %v", st["oldest"])
	}

	// verify: a sound store.
	out, _, err = s.Admin(ctx, "verify")
	if err != nil || !strings.Contains(out, "no damage") {
		t.Fatalf("verify: %v\n%s", err, out)
	}

	// Errors: a path that does not exist, a malformed @@, a refused clone.
	for _, args := range [][]string{
		{"history", "/no/such/file"},
		{"restore", "/notes.txt@@2007-13-01"},
		{"clone", "/notes.txt", "/copy.txt"},
		{"restore", "/notes.txt"},
	} {
		_, stderr, err := s.Admin(ctx, args...)
		if err == nil {
			t.Errorf("asof %v succeeded, want a failure", args)
		} else if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "asof:") {
			t.Errorf("asof %v: want one clear line, got %q", args, stderr)
		}
	}
}

func TestAdminWithoutAServer(t *testing.T) {
	bin := serverproc.Binary(t)
	cmd := exec.Command(bin, "stats")
	cmd.Env = append(os.Environ(), "ASOF_CONTROL_SOCKET="+filepath.Join(t.TempDir(), "none.sock"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not running") {
		t.Fatalf("asof stats with no server: %v: %s", err, out)
	}
}

func TestControlSocketIsPrivate(t *testing.T) {
	s, _ := start(t, nil)
	fi, err := os.Stat(s.ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, want a socket with 0600", fi.Mode())
	}
	if !strings.Contains(s.Log(), "mount -t nfs -o vers=3,tcp,port=") {
		t.Errorf("start-up log does not say how to mount:\n%s", s.Log())
	}
}

func TestSecondServerOnTheSameDataRefuses(t *testing.T) {
	clients.Need(t)
	s, c := start(t, nil)
	cmd := exec.Command(s.Bin, "serve")
	cmd.Env = append(os.Environ(), "ASOF_DATA="+s.DataDir, "ASOF_NFS_LISTEN=127.0.0.1:0", "ASOF_NINEP_LISTEN=",
		"ASOF_CONTROL_SOCKET="+filepath.Join(t.TempDir(), "c.sock"))
	done := make(chan error, 1)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "in use") {
			t.Fatalf("second server: %v: %s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("a second server on the same data directory kept running")
	}
	if _, err := c.Ls(context.Background(), "/"); err != nil {
		t.Fatalf("the first server stopped serving: %v", err)
	}
}

func TestBadConfigStopsStartUp(t *testing.T) {
	bin := serverproc.Binary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "asof.yaml")
	os.WriteFile(cfg, []byte("data: "+dir+"/d\nnfs:\n  lisen: 127.0.0.1:0\n"), 0o644)
	out, err := exec.Command(bin, "serve", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "nfs.lisen") {
		t.Fatalf("unknown key: %v: %s", err, out)
	}
	os.WriteFile(cfg, []byte("data: "+dir+"/d\nhistory:\n  flush_interval: soon\n"), 0o644)
	out, err = exec.Command(bin, "serve", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "history.flush_interval") || !strings.Contains(string(out), "soon") {
		t.Fatalf("bad value: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
		t.Errorf("a refused configuration still created the data directory")
	}
	// The example file is accepted as it is.
	root, _ := serverproc.ModuleRoot()
	cmd := exec.Command(bin, "serve", "--config", filepath.Join(root, "asof.example.yaml"),
		"--data", filepath.Join(dir, "ex"), "--nfs-listen", "127.0.0.1:0", "--ninep-listen", "127.0.0.1:0",
		"--control-socket", filepath.Join(dir, "ex.sock"))
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("asof serve --config asof.example.yaml: %v\n%s", err, buf.String())
	}
}

// SIGTERM while clients write: the server exits 0, and after a restart
// every write a client saw succeed is there.
func TestSigtermWithWritesInFlight(t *testing.T) {
	clients.Need(t)
	s, c := start(t, map[string]string{"ASOF_HISTORY_FLUSH_INTERVAL": "10s"})
	ctx := context.Background()
	var mu sync.Mutex
	acked := map[string][]byte{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("/w%d-%d", w, i)
				data := bytes.Repeat([]byte(name), 1000+i*37)
				if c.Write(ctx, name, data) == nil {
					mu.Lock()
					acked[name] = data
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	code, err := s.Term()
	close(stop)
	wg.Wait()
	if err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit %d, %v\n%s", code, err, s.Log())
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before SIGTERM")
	}
	for name, want := range acked {
		got, err := c.Cat(ctx, name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s acknowledged before SIGTERM: after restart %d bytes, %v (want %d)", name, len(got), err, len(want))
		}
	}
	t.Logf("%d acknowledged writes intact after SIGTERM and restart", len(acked))
}

// Prometheus metrics on metrics.listen: requests by protocol and
// operation, latency, bytes, transactions, stored and logical bytes.
func TestMetrics(t *testing.T) {
	clients.Need(t)
	port := serverproc.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	_, c := start(t, map[string]string{"ASOF_METRICS_LISTEN": addr})
	ctx := context.Background()
	if err := c.Write(ctx, "/m.txt", bytes.Repeat([]byte("metrics "), 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cat(ctx, "/m.txt"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a commit
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	for _, want := range []string{
		`asof_requests_total{op="create",protocol="nfs"}`,
		`asof_requests_total{op="write",protocol="nfs"}`,
		`asof_requests_total{op="read",protocol="nfs"}`,
		`asof_request_duration_seconds_bucket{op="lookup",protocol="nfs"`,
		`asof_data_bytes_total{direction="write",protocol="nfs"} 8000`,
		`asof_data_bytes_total{direction="read",protocol="nfs"} 8000`,
		"asof_transactions_committed_total",
		"asof_logical_bytes",
		"asof_stored_bytes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
}

// asof verify --offline checks the data directory with no server running,
// and refuses one a server holds.
func TestVerifyOffline(t *testing.T) {
	clients.Need(t)
	s, c := start(t, nil)
	ctx := context.Background()
	if err := c.Write(ctx, "/a.txt", bytes.Repeat([]byte("offline verify\n"), 4000)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Admin(ctx, "verify", "--offline"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("verify --offline beside the running server: %v", err)
	}
	if code, err := s.Term(); err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit %d, %v", code, err)
	}
	out, _, err := s.Admin(ctx, "verify", "--offline")
	if err != nil || !strings.Contains(out, "ok: no damage found") || strings.Contains(out, " 0 blocks") {
		t.Fatalf("verify --offline of the stopped server's data: %v\n%s", err, out)
	}
}
