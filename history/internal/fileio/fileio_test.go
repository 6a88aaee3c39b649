package fileio

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Only names that are hexadecimal numbers with the suffix are listed, in
// numeric order.
func TestListSeq(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"0000000a.seg", "00000002.seg", "00000010.seg", "zz.seg", "00000003.pack", "00000004.seg.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ListSeq32(dir, ".seg", "segments")
	if err != nil || !slices.Equal(got, []uint32{2, 10, 16}) {
		t.Fatalf("listed %v, %v", got, err)
	}
}

// Pwritev writes every piece in order, at the offset asked for.
func TestPwritev(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	iov := [][]byte{[]byte("abc"), bytes.Repeat([]byte("d"), 70000), []byte("e")}
	if err := Pwritev(f, iov, 5); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	want := append(make([]byte, 5), bytes.Join(iov, nil)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("wrote %d bytes, not the pieces in order", len(got))
	}
}
