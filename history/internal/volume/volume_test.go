package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestPlaceMostFreeUnboundedFirst(t *testing.T) {
	for _, c := range []struct {
		free []int64
		want int
	}{
		{nil, -1},
		{[]int64{5}, 0},
		{[]int64{5, 9, 7}, 1},
		{[]int64{9, 9}, 0},
		{[]int64{1 << 40, Unbounded, 5}, 1},
		{[]int64{Unbounded, Unbounded}, 0},
		{[]int64{0, 0}, 0},
	} {
		if got := Place(c.free); got != c.want {
			t.Errorf("Place(%v) = %d, want %d", c.free, got, c.want)
		}
	}
}

func TestPackNames(t *testing.T) {
	for _, seq := range []uint32{0, 1, 0xa, 0xdeadbeef, ^uint32(0)} {
		got, ok := parsePackName(PackName(seq))
		if !ok || got != seq {
			t.Errorf("parsePackName(PackName(%d)) = %d, %v", seq, got, ok)
		}
	}
	for _, bad := range []string{"LABEL", "1.pack", "0000000g.pack", "00000001.pack.tmp", "000000001.pack"} {
		if _, ok := parsePackName(bad); ok {
			t.Errorf("parsePackName(%q) took it for a pack", bad)
		}
	}
}

func TestLabelRoundTripAndDamage(t *testing.T) {
	l := Label{Store: "3f2a9c01-lineage", Volume: 7}
	got, err := decodeLabel(l.encode(), "x")
	if err != nil || got != l {
		t.Fatalf("decode(encode(%v)) = %v, %v", l, got, err)
	}
	for _, bad := range []string{"", "something else\nstore a\nvolume 1\n", labelMagic + "\nstore a\n", labelMagic + "\nvolume 1\n",
		labelMagic + "\nstore a\nvolume 70000\n", labelMagic + "\nstore \nvolume 1\n"} {
		if _, err := decodeLabel([]byte(bad), "x"); err == nil {
			t.Errorf("decodeLabel(%q) took it", bad)
		}
	}
	if err := (Label{Store: "has space"}).valid(); err == nil {
		t.Error("a store id with a space is valid")
	}
}

// writePack makes a local file of n random bytes, as a sealed pack.
func writePack(t *testing.T, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	name := filepath.Join(t.TempDir(), "src.pack")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return name, b
}

// exercise runs what every volume must do: put, read ranges, stream,
// list, delete.
func exercise(t *testing.T, v Volume) {
	ctx := context.Background()
	src, data := writePack(t, 3<<20+12345)
	if err := v.Put(ctx, 5, src); err != nil {
		t.Fatal(err)
	}
	src2, data2 := writePack(t, 1000)
	if err := v.Put(ctx, 0x1a, src2); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 1}, {0, 16 << 10}, {1<<20 - 100, 200}, {123, 2 << 20}, {len(data) - 10, 10}, {0, len(data)}} {
		p := make([]byte, r[1])
		n, err := v.ReadAt(ctx, 5, p, int64(r[0]))
		if err != nil || n != r[1] || !bytes.Equal(p, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; bytes equal %v", r[0], r[1], n, err, bytes.Equal(p[:n], data[r[0]:r[0]+n]))
		}
	}
	// Past the end: the bytes before it, then io.EOF.
	p := make([]byte, 100)
	n, err := v.ReadAt(ctx, 5, p, int64(len(data)-40))
	if n != 40 || err != io.EOF || !bytes.Equal(p[:40], data[len(data)-40:]) {
		t.Fatalf("ReadAt across the end = %d, %v", n, err)
	}
	if _, err := v.ReadAt(ctx, 99, p, 0); !errors.Is(err, ErrNoPack) || errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadAt of a missing pack = %v, want ErrNoPack and not os.ErrNotExist", err)
	}
	r, err := v.Stream(ctx, 0x1a)
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(all, data2) {
		t.Fatalf("Stream = %d bytes, %v", len(all), err)
	}
	packs, err := v.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Pack{{5, int64(len(data))}, {0x1a, int64(len(data2))}}
	if len(packs) != 2 || packs[0] != want[0] || packs[1] != want[1] {
		t.Fatalf("List = %v, want %v", packs, want)
	}
	// Put again replaces (an interrupted put run again).
	if err := v.Put(ctx, 0x1a, src2); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(ctx, 5); err != nil {
		t.Fatalf("a second Delete = %v, want nil", err)
	}
	if _, err := v.ReadAt(ctx, 5, p, 0); !errors.Is(err, ErrNoPack) {
		t.Fatalf("ReadAt of a deleted pack = %v", err)
	}
	if packs, err = v.List(ctx); err != nil || len(packs) != 1 || packs[0].Seq != 0x1a {
		t.Fatalf("List after delete = %v, %v", packs, err)
	}
	if _, err := v.Free(ctx); err != nil {
		t.Fatal(err)
	}
}

// claims checks label handling on a fresh volume, and refusal of a volume
// labelled for another store (a second volume made by mk on the same
// place).
func claims(t *testing.T, v Volume, reopen func() Volume) {
	ctx := context.Background()
	mine := Label{Store: "store-a", Volume: 3}
	if err := Check(ctx, v, mine); !errors.Is(err, ErrForeign) {
		t.Fatalf("Check of an unlabelled volume = %v", err)
	}
	if err := Claim(ctx, v, mine); err != nil {
		t.Fatal(err)
	}
	if err := Claim(ctx, v, mine); err != nil {
		t.Fatalf("Claim again with the same label = %v", err)
	}
	w := reopen()
	if err := Check(ctx, w, mine); err != nil {
		t.Fatal(err)
	}
	err := Check(ctx, w, Label{Store: "store-b", Volume: 3})
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "another store (store-a)") {
		t.Fatalf("Check by another store = %v", err)
	}
	if err := Claim(ctx, w, Label{Store: "store-b", Volume: 1}); !errors.Is(err, ErrForeign) {
		t.Fatalf("Claim by another store = %v", err)
	}
	if err := Check(ctx, w, Label{Store: "store-a", Volume: 4}); !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "volume 3, not volume 4") {
		t.Fatalf("Check as another volume = %v", err)
	}
	if got, err := w.ReadLabel(ctx); err != nil || got != mine {
		t.Fatalf("the label after refusals = %v, %v", got, err)
	}
}

func TestDirVolume(t *testing.T) {
	v, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, v)
}

func TestDirLabels(t *testing.T) {
	dir := t.TempDir()
	v, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	claims(t, v, func() Volume {
		w, err := OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		return w
	})
}

func TestDirClaimRefusesPacksWithoutLabel(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, PackName(1)), []byte("x"), 0o644)
	v, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := Claim(context.Background(), v, Label{Store: "s", Volume: 1}); !errors.Is(err, ErrForeign) {
		t.Fatalf("Claim of a directory of packs = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, LabelName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused Claim wrote a label")
	}
}

func TestOpenDirRefusesMissingAndRemovesInterruptedCopies(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenDir(filepath.Join(dir, "not-mounted")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenDir of a missing directory = %v", err)
	}
	tmp := filepath.Join(dir, PackName(4)+tmpSuffix)
	other := filepath.Join(dir, "notes.tmp")
	os.WriteFile(tmp, []byte("half a pack"), 0o644)
	os.WriteFile(other, []byte("not ours"), 0o644)
	v, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Error("an interrupted copy survived OpenDir")
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("OpenDir removed a file that is not its own")
	}
	if packs, _ := v.List(context.Background()); len(packs) != 0 {
		t.Errorf("List = %v", packs)
	}
}

func TestUnavailableIsEIOAndNotItsCause(t *testing.T) {
	err := error(&unavailable{where: "s3://b/", cause: "connection refused"})
	var errno syscall.Errno
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &errno) || errno != syscall.EIO {
		t.Fatalf("unavailable: Is ErrUnavailable %v, errno %v", errors.Is(err, ErrUnavailable), errno)
	}
}
