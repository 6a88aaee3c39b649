package nfs_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/integration/clients"
)

// libnfs MOUNTs the part of a URL's path before its last slash. When that is not a
// directory of the export, libnfs shows the MOUNT status, and asof logs one line that names
// the path, the status and why, with a hint at double-slash file URLs. A one-slash file URL
// at the root, whose directory part is empty, works with auto-traverse-mounts=0 (which these
// URLs carry; with libnfs's default, libnfs itself refuses an empty export after the MOUNT).
func TestLibNFSMountRefusals(t *testing.T) {
	needLibNFS(t)
	s := start(t)
	ctx := context.Background()
	nfs := clients.NFS{Addr: s.NFSAddr}
	if err := nfs.Write(ctx, "/h.txt", []byte("h\n")); err != nil {
		t.Fatal(err)
	}
	// serverLog waits for the server's log to hold every string of want (each case's line
	// is logged before the reply that makes the client exit, but read it patiently).
	serverLog := func(t *testing.T, want ...string) {
		t.Helper()
		var log string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			b, _ := os.ReadFile(s.LogPath)
			log = string(b)
			for _, line := range strings.Split(log, "\n") {
				if containsAll(line, want) {
					return
				}
			}
		}
		t.Errorf("no server log line with %q:\n%s", want, log)
	}
	hint := "nfs://host//path/to/file"

	t.Run("nfs-ls of a file", func(t *testing.T) {
		_, err := nfs.Ls(ctx, "/h.txt") // MOUNT /h.txt
		expectFail(t, "nfs-ls nfs://.../h.txt", err, "MNT3ERR_NOTDIR")
		serverLog(t, "nfs: mount refused", "path=/h.txt", "status=MNT3ERR_NOTDIR", "names a file", hint)
	})
	t.Run("nfs-cat below a missing directory", func(t *testing.T) {
		_, err := nfs.Cat(ctx, "/missing/x.txt") // MOUNT /missing
		expectFail(t, "nfs-cat nfs://.../missing/x.txt", err, "MNT3ERR_NOENT")
		serverLog(t, "nfs: mount refused", "path=/missing", "status=MNT3ERR_NOENT", hint)
	})
	t.Run("nfs-cp to a one-slash file URL", func(t *testing.T) {
		local := t.TempDir() + "/new.txt"
		if err := os.WriteFile(local, []byte("new\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// nfs://host/new.txt: libnfs MOUNTs "" (the part before the last slash): the root
		if _, _, err := clients.Run(ctx, 0, "nfs-cp", local, nfs.URL("/new.txt")); err != nil {
			t.Fatalf("nfs-cp to %s: %v", nfs.URL("/new.txt"), err)
		}
		if got, err := nfs.Cat(ctx, "/new.txt"); err != nil || string(got) != "new\n" {
			t.Errorf("nfs-cat %s: %q, %v", nfs.FileURL("/new.txt"), got, err)
		}
	})
	// and what the hint says works
	if got, err := nfs.Cat(ctx, "/h.txt"); err != nil || string(got) != "h\n" {
		t.Errorf("nfs-cat %s: %q, %v", nfs.FileURL("/h.txt"), got, err)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
