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

	"github.com/hugelgupf/p9/p9"

	"github.com/asof/asof/config"
)

func startTest(t *testing.T, allow []netip.Prefix) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "data")
	cfg.NFS.Listen, cfg.NineP.Listen = "127.0.0.1:0", "127.0.0.1:0"
	sock, err := os.MkdirTemp("", "asof-srv-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	cfg.Control.Socket = filepath.Join(sock, "c.sock")
	cfg.Exports.Allow = allow
	s, err := Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	return s
}

// exports.allow is enforced for both protocols before the client sends
// anything: the connection is closed unanswered.
func TestAllowRefusesOutsiders(t *testing.T) {
	s := startTest(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	for _, proto := range []string{"nfs", "9p"} {
		c, err := net.Dial("tcp", s.Addrs[proto])
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err == nil || os.IsTimeout(err) {
			t.Errorf("%s: a client outside exports.allow was not refused: %d bytes, %v", proto, n, err)
		}
		c.Close()
	}
	// Inside it, a 9P client is served.
	s2 := startTest(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	c, err := net.Dial("tcp", s2.Addrs["9p"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := p9.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Attach(""); err != nil {
		t.Fatal(err)
	}
}

// The config's volumes are added at start; a listed volume that names
// another place than the store's volume of that name, or a directory of
// another store, is refused, naming it.
func TestStartAddsConfigVolumes(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := config.Default()
	cfg.Data = filepath.Join(t.TempDir(), "data")
	cfg.NFS.Listen, cfg.NineP.Listen = "", ""
	cfg.Control.Socket = filepath.Join(t.TempDir(), "c.sock")
	disk1 := t.TempDir()
	cfg.Volumes = []config.Volume{{Name: "disk1", Kind: "dir", Path: disk1}}
	s, err := Start(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.volumesReply(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Volumes) != 2 || out.Volumes[1].Name != "disk1" || out.Volumes[1].State != "active" || out.Placement == "" {
		t.Fatalf("volumes: %+v", out)
	}
	s.Shutdown(t.Context())
	// Started again with the same config: nothing to add.
	if s, err = Start(cfg, quiet); err != nil {
		t.Fatal(err)
	}
	s.Shutdown(t.Context())
	cfg.Volumes = []config.Volume{{Name: "disk1", Kind: "dir", Path: t.TempDir()}}
	if s, err = Start(cfg, quiet); err == nil {
		s.Shutdown(t.Context())
		t.Fatal("started with disk1 moved elsewhere")
	} else if !strings.Contains(err.Error(), "disk1") {
		t.Errorf("error %q does not name the volume", err)
	}
	// disk1 belongs to the first store: another store refuses it.
	other := *cfg
	other.Data = filepath.Join(t.TempDir(), "data")
	other.Volumes = []config.Volume{{Name: "d", Kind: "dir", Path: disk1}}
	if s, err = Start(&other, quiet); err == nil {
		s.Shutdown(t.Context())
		t.Fatal("started with another store's volume")
	} else if !strings.Contains(err.Error(), "another store") {
		t.Errorf("error %q does not say it is another store's", err)
	}
}

// Shutdown with clients connected to both protocols and idle returns at
// once: idle connections hold no call to wait for.
func TestShutdownWithIdleClients(t *testing.T) {
	s := startTest(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	c9, err := net.Dial("tcp", s.Addrs["9p"])
	if err != nil {
		t.Fatal(err)
	}
	defer c9.Close()
	cl, err := p9.NewClient(c9)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Attach(""); err != nil {
		t.Fatal(err)
	}
	cn, err := net.Dial("tcp", s.Addrs["nfs"])
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	time.Sleep(50 * time.Millisecond) // both accepted and handed to their servers

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("shutdown took %v with idle clients", d)
	}
	for name, c := range map[string]net.Conn{"9p": c9, "nfs": cn} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
			t.Errorf("%s connection still open after shutdown: %v", name, err)
		}
	}
}
