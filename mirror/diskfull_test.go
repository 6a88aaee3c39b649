package mirror

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/fs"
)

// A target whose disk fills pauses, says so, and goes on by itself once
// there is room, with nothing lost or applied in part.
func TestFullDiskPausesThePull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=6m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)

	src := startSource(t, t.TempDir())
	data := make([]byte, 12<<20)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	n, _, err := src.fs.Create(root, src.fs.Root(), "big", 0o644, false)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := src.fs.Write(root, n, data[off:off+1<<20], int64(off), false); err != nil {
			t.Fatal(err)
		}
		if off%(4<<20) == 0 {
			src.fs.Commit()
		}
	}
	last, err := src.fs.Commit()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "mirror")
	dst := openTarget(t, dir)
	defer dst.Close()
	tg := NewTarget(dst, src.addr, TargetOptions{Token: src.token, BatchFrames: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := tg.Status()
		if strings.Contains(st.State, "disk is full") {
			t.Logf("paused: %s (%s), at %s", st.State, st.Error, st.Position)
			break
		}
		if time.Now().After(deadline) || st.Position == last {
			t.Fatalf("the pull did not pause on a full disk: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, "size=200m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	for dst.LastTID() != last {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("the pull did not go on once there was room: %+v", tg.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	dfs := fs.New(dst, fs.Options{})
	sameTrees(t, src.fs, dfs, last)
	rep, err := dst.Verify(nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}
