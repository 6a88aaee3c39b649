package mirror

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
)

// BenchmarkFirstPull pulls a new target from a source holding one large
// file and a tree of small ones, over loopback.
func BenchmarkFirstPull(b *testing.B) {
	src := startSource(b, b.TempDir())
	f := src.fs
	big, _, err := f.Create(root, f.Root(), "big", 0o644, false)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	const size = 256 << 20
	for off := 0; off < size; off += len(chunk) {
		rand.Read(chunk)
		if _, err := f.Write(root, big, chunk, int64(off), false); err != nil {
			b.Fatal(err)
		}
	}
	for d := 0; d < 20; d++ {
		dir, _ := f.Mkdir(root, f.Root(), fmt.Sprint("d", d), 0o755)
		for i := 0; i < 500; i++ {
			n, _, _ := f.Create(root, dir, fmt.Sprint("f", i), 0o644, false)
			rand.Read(chunk[:1024])
			f.Write(root, n, chunk[:1024], 0, false)
		}
	}
	if _, err := f.Commit(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size + 10000*1024)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := openTarget(b, b.TempDir())
		if err := NewTarget(dst, src.addr, TargetOptions{Token: src.token}).Pull(context.Background(), nil); err != nil {
			b.Fatal(err)
		}
		dst.Close()
	}
}
