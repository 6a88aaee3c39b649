package intent

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/asof/asof/history/internal/record"
)

// intentEntries encodes bodies as consecutive intent entries.
func intentEntries(bodies ...[]byte) []byte {
	var b []byte
	for _, body := range bodies {
		h := intentHeader(body)
		b = append(append(b, h[:]...), body...)
	}
	return b
}

func testBodies() [][]byte {
	return [][]byte{[]byte("first entry"), bytes.Repeat([]byte("second entry "), 40), []byte("third entry")}
}

func checkEntries(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("entry %d is %q, want %q", i, got[i], want[i])
		}
	}
}

// writeIntentFile writes b as intent file 1 in a new directory.
func writeIntentFile(t *testing.T, b []byte) string {
	t.Helper()
	p := Name(t.TempDir(), 1)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A preallocated file holds its entries and then zeros to its end: the
// zeros are the end of the log, not damage.
func TestReadIntentPreallocatedZeroTail(t *testing.T) {
	bodies := testBodies()
	b := intentEntries(bodies...)
	b = append(b, make([]byte, Prealloc-len(b))...)
	got, err := Read(writeIntentFile(t, b))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, got, bodies)

	// An untouched preallocated file: no entries, no error.
	got, err = Read(writeIntentFile(t, make([]byte, Prealloc)))
	if err != nil || len(got) != 0 {
		t.Fatalf("an all-zero file: %d entries, err %v", len(got), err)
	}
}

// A torn entry followed by the zero tail is cut, wherever the tear is: in
// the header, in the body, or a header whose body never reached the disk.
func TestReadIntentTornEntryThenZeros(t *testing.T) {
	bodies := testBodies()
	good := intentEntries(bodies...)
	next := intentEntries(bytes.Repeat([]byte("torn entry "), 100))
	for _, keep := range []int{1, 4, intentHdrLen - 1, intentHdrLen, intentHdrLen + 1, len(next) / 2, len(next) - 1} {
		b := append(append([]byte(nil), good...), next[:keep]...)
		b = append(b, make([]byte, 1<<20)...)
		got, err := Read(writeIntentFile(t, b))
		if err != nil {
			t.Fatalf("torn after %d bytes: %v", keep, err)
		}
		checkEntries(t, got, bodies)
	}
	// The header reached the disk, a middle sector of the body did not.
	b := append(append([]byte(nil), good...), next...)
	clear(b[len(good)+intentHdrLen+100 : len(good)+intentHdrLen+612])
	b = append(b, make([]byte, 1<<20)...)
	got, err := Read(writeIntentFile(t, b))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, got, bodies)
}

// Damage with intact entries after it is acknowledged changes lost: Open
// must refuse, however far the intact entry is, and zeros in between do not
// hide it.
func TestReadIntentDamageThenIntactRefuses(t *testing.T) {
	bodies := testBodies()
	good := intentEntries(bodies...)
	at := intentHdrLen + len(bodies[0]) // the second entry
	cases := map[string]func() []byte{
		"flipped body byte": func() []byte {
			b := append([]byte(nil), good...)
			b[at+intentHdrLen+7] ^= 0x40
			return append(b, make([]byte, 1<<20)...)
		},
		"flipped header byte": func() []byte {
			b := append([]byte(nil), good...)
			b[at+5] ^= 0x01
			return append(b, make([]byte, 1<<20)...)
		},
		"zeroed entry, intact one after": func() []byte {
			b := append([]byte(nil), good...)
			clear(b[at : at+intentHdrLen+len(bodies[1])])
			return append(b, make([]byte, 1<<20)...)
		},
		"intact entry deep in the zero tail": func() []byte {
			b := append([]byte(nil), good[:at]...)
			b = append(b, make([]byte, 8<<20)...)
			b = append(b, intentEntries([]byte("late"))...)
			return append(b, make([]byte, 1<<20)...)
		},
	}
	for name, mk := range cases {
		_, err := Read(writeIntentFile(t, mk()))
		if !errors.Is(err, record.ErrCorrupt) {
			t.Errorf("%s: err %v, want record.ErrCorrupt", name, err)
		}
	}
}

// An entry whose header checks but whose body is torn has a trustworthy
// length: bytes that look like entries inside that body (a file holding an
// intent log, say) are data, and do not make a torn tail look like damage.
func TestReadIntentTornBodyIsNotSearched(t *testing.T) {
	bodies := testBodies()
	good := intentEntries(bodies...)
	inner := intentEntries([]byte("an intent entry inside a file's data"))
	body := append(append(bytes.Repeat([]byte{'x'}, 100), inner...), bytes.Repeat([]byte{'y'}, 4000)...)
	last := intentEntries(body)
	clear(last[len(last)-1000:]) // the body's tail never reached the disk
	b := append(append(append([]byte(nil), good...), last...), make([]byte, 1<<20)...)
	got, err := Read(writeIntentFile(t, b))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, got, bodies)
}

// BenchmarkReadIntentZeroTail: a torn entry in a preallocated file, then
// the zero tail: one bytes.Index pass, not a check per byte.
func BenchmarkReadIntentZeroTail(b *testing.B) {
	bodies := testBodies()
	log := intentEntries(bodies...)
	log = append(log, intentEntries([]byte("torn"))[:10]...)
	log = append(log, make([]byte, Prealloc-len(log))...)
	b.SetBytes(int64(len(log)))
	for b.Loop() {
		got, err := Parse(log, "bench")
		if err != nil || len(got) != len(bodies) {
			b.Fatal(len(got), err)
		}
	}
}
