package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/config"
	"github.com/asof/asof/fs"
)

var rootCred = fs.Cred{}

func mirrorConfig(t *testing.T, data string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Data = data
	cfg.NFS.Listen, cfg.NineP.Listen = "127.0.0.1:0", ""
	sock, err := os.MkdirTemp("", "asof-srv-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	cfg.Control.Socket = filepath.Join(sock, "c.sock")
	cfg.Mirror.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Mirror.TokenFile = filepath.Join(data, "mirror.token")
	return cfg
}

// A source makes its token (0600) and serves; a server with mirror.source
// and an empty data directory becomes a read-only mirror that follows it;
// a mirror may not serve targets of its own; promote makes it writable.
func TestServerAsSourceAndTarget(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srcCfg := mirrorConfig(t, filepath.Join(t.TempDir(), "src"))
	srcCfg.Mirror.Listen = "127.0.0.1:0"
	src, err := Start(srcCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Shutdown(t.Context())
	st, err := os.Stat(srcCfg.Mirror.TokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	if _, err := src.FS().Mkdir(rootCred, src.FS().Root(), "a", 0o755); err != nil {
		t.Fatal(err)
	}
	last, err := src.FS().Commit()
	if err != nil {
		t.Fatal(err)
	}

	dstCfg := mirrorConfig(t, filepath.Join(t.TempDir(), "dst"))
	dstCfg.Mirror.Source = src.Addrs["mirror"]
	dstCfg.Mirror.TokenFile = srcCfg.Mirror.TokenFile
	dst, err := Start(dstCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Shutdown(t.Context())
	deadline := time.Now().Add(10 * time.Second)
	for dst.store.LastTID() != last {
		if time.Now().After(deadline) {
			t.Fatalf("the target is at %s, the source at %s: %+v", dst.store.LastTID(), last, dst.mirrorStatus())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := dst.FS().Resolve(rootCred, "/a"); err != nil {
		t.Fatal(err)
	}
	if !dst.FS().ReadOnly() {
		t.Fatal("the mirror is served writable")
	}
	ms := src.mirrorStatus()
	if ms.Source == nil || len(ms.Source.Targets) != 1 {
		t.Fatalf("source status %+v", ms)
	}

	// A mirror cannot serve targets of its own.
	dst.Shutdown(t.Context())
	again := mirrorConfig(t, dstCfg.Data)
	again.Mirror.Listen = "127.0.0.1:0"
	if _, err := Start(again, log); err == nil || !strings.Contains(err.Error(), "cannot serve targets") {
		t.Fatalf("a mirror with mirror.listen: %v", err)
	}
	// Served without mirror.source it stays read-only, until promoted.
	plain := mirrorConfig(t, dstCfg.Data)
	s, err := Start(plain, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())
	if !s.FS().ReadOnly() || !s.store.Mirror() {
		t.Fatal("a mirror served without mirror.source is writable")
	}
	if err := s.store.Promote(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FS().Mkdir(rootCred, s.FS().Root(), "b", 0o755); err != nil {
		t.Fatalf("mkdir after promote: %v", err)
	}
}

// The mirror listener is the connection lifecycle's: a target outside
// mirror.allow is refused though exports.allow lets it in, and a shutdown
// ends a connected target's connection and returns.
func TestServerMirrorAllowAndShutdown(t *testing.T) {
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, nil))
	cfg := mirrorConfig(t, filepath.Join(t.TempDir(), "src"))
	cfg.Mirror.Listen = "127.0.0.1:0"
	cfg.Mirror.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	src, err := Start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", src.Addrs["mirror"])
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("a target outside mirror.allow read %d bytes, %v", n, err)
	}
	c.Close()
	if !strings.Contains(lb.String(), "refused a client outside mirror.allow") {
		t.Fatalf("no log line for the refusal:\n%s", lb.String())
	}
	src.Shutdown(t.Context())

	cfg = mirrorConfig(t, cfg.Data)
	cfg.Mirror.Listen = "127.0.0.1:0"
	src, err = Start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	dstCfg := mirrorConfig(t, filepath.Join(t.TempDir(), "dst"))
	dstCfg.Mirror.Source = src.Addrs["mirror"]
	dstCfg.Mirror.TokenFile = cfg.Mirror.TokenFile
	dst, err := Start(dstCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Shutdown(t.Context())
	deadline := time.Now().Add(10 * time.Second)
	for len(src.mirrorStatus().Source.Targets) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the target never connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The target waits in a pull for the next commit: shutdown answers it
	// and ends the connection well before its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := src.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown with a target connected took %s", d)
	}
	if strings.Contains(lb.String(), "shutdown deadline passed") {
		t.Fatalf("the target's connection was closed, not drained:\n%s", lb.String())
	}
}
