package mirror

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/asof/asof/fs"
)

// A limited pull reads no faster than its limit and still brings
// everything across. Only the lower bound on the time is checked: a slow
// machine can make the pull slower, never faster.
func TestBandwidthLimitPacesThePull(t *testing.T) {
	src := startSource(t, t.TempDir())
	data := make([]byte, 3<<20)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	n, _, err := src.fs.Create(root, src.fs.Root(), "f", 0o644, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.fs.Write(root, n, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := src.fs.Commit(); err != nil {
		t.Fatal(err)
	}
	dst := openTarget(t, t.TempDir())
	defer dst.Close()
	const limit = 1 << 20
	start := time.Now()
	tg := NewTarget(dst, src.addr, TargetOptions{Token: src.token, BytesPerSec: limit})
	if err := tg.Pull(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	got := tg.Status().Bytes
	// The limiter's first burst (a tenth of a second's worth) is free.
	if least := time.Duration(float64(got-limit/10) / limit * float64(time.Second)); took < least {
		t.Fatalf("pulled %d bytes in %s at a limit of %d bytes a second: faster than %s", got, took, limit, least)
	}
	if got < int64(len(data)) {
		t.Fatalf("pulled %d bytes, fewer than the file's %d", got, len(data))
	}
	dfs := fs.New(dst, fs.Options{})
	dn, err := dfs.Resolve(root, "/f")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(data)+1)
	k, err := dfs.Read(root, dn, buf, 0)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:k], data) {
		t.Fatalf("the mirror's file differs from the source's (%d bytes read)", k)
	}
}
