package txlog

import (
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/asof/asof/history/internal/record"
)

func frame(tid record.TID) *Txn {
	return &Txn{TID: tid, IntentSeq: uint64(tid), ObjHigh: 100,
		Ops: []Op{
			{Kind: OpCreate, Obj: 7, Key: "i", Payload: []byte("inode")},
			{Kind: OpEnd, Obj: 7, Key: "dname", Create: tid - 1},
			{Kind: OpCollapse, Obj: 1, Create: 3, Payload: []byte{0, 0, 0, 0, 0, 0, 0, 9}},
		},
		Notes: []Note{{Obj: 7, Change: record.ChangeWritten, Size: 42}},
	}
}

// Frames appended across segments read back in order from any frame on,
// and a reopened log appends after the last one.
func TestAppendScanAcrossSegments(t *testing.T) {
	defer func(old int64) { SegmentSize = old }(SegmentSize)
	SegmentSize = 300
	dir := t.TempDir()
	l, last, err := Open(dir, Loc{}, Torn)
	if err != nil || last != nil {
		t.Fatalf("open an empty log: %v, last %v", err, last)
	}
	var locs []Loc
	for tid := record.TID(10); tid < 30; tid++ {
		loc, next, err := l.Append(frame(tid))
		if err != nil {
			t.Fatal(err)
		}
		if next != l.End() {
			t.Fatalf("Append says the next frame goes at %v, End says %v", next, l.End())
		}
		locs = append(locs, loc)
	}
	if locs[len(locs)-1].Seg == locs[0].Seg {
		t.Fatal("no segment rotation")
	}
	l.Close()
	var got []record.TID
	err = Scan(dir, locs[5], func(tx *Txn, loc, next Loc) error {
		if want := frame(tx.TID); !reflect.DeepEqual(tx, want) {
			t.Fatalf("frame %s read back as %+v, want %+v", tx.TID, tx, want)
		}
		got = append(got, tx.TID)
		return nil
	})
	if err != nil || len(got) != 15 || got[0] != 15 || got[14] != 29 {
		t.Fatalf("scan from the sixth frame: %v, %v", got, err)
	}
	l, last, err = Open(dir, Loc{}, Torn)
	if err != nil || last == nil || last.TID != 29 {
		t.Fatalf("reopen: %v, last %v", err, last)
	}
	defer l.Close()
	prev := locs[len(locs)-1]
	if loc, _, err := l.Append(frame(30)); err != nil || loc.Seg < prev.Seg || loc.Seg == prev.Seg && loc.Off <= prev.Off {
		t.Fatalf("append after reopen: at %v, %v", loc, err)
	}
}

// A torn last frame (its write never finished) is cut at open. Frames
// before committed are not read: damage in one leaves the open alone
// (Scan, and so verify, finds it), and a log that ends before committed
// lost frames the index applied, so it refuses to open.
func TestTornTailCutCommittedFramesNotRead(t *testing.T) {
	dir := t.TempDir()
	l, _, err := Open(dir, Loc{}, Torn)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := l.Append(frame(10))
	second, end, err := l.Append(frame(11))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	path := SegName(dir, second.Seg)
	if err := os.Truncate(path, end.Off-3); err != nil {
		t.Fatal(err)
	}
	l, last, err := Open(dir, second, Torn)
	if err != nil || last != nil || l.End() != second {
		t.Fatalf("open with a torn tail: %v, last %v, end %v", err, last, l.End())
	}
	l.Close()
	if st, _ := os.Stat(path); st.Size() != second.Off {
		t.Fatalf("the torn frame was not cut: the segment is %d bytes, want %d", st.Size(), second.Off)
	}
	l, last, err = Open(dir, first, Torn)
	if err != nil || last == nil || last.TID != 10 || l.End() != second {
		t.Fatalf("open with one frame after committed: %v, last %v, end %v", err, last, l.End())
	}
	l.Close()
	b, _ := os.ReadFile(path)
	b[first.Off+20] ^= 1
	os.WriteFile(path, b, 0o644)
	l, last, err = Open(dir, second, Torn)
	if err != nil || last != nil || l.End() != second {
		t.Fatalf("open with a damaged committed frame: %v, last %v, end %v", err, last, l.End())
	}
	l.Close()
	if err := Scan(dir, Loc{}, func(*Txn, Loc, Loc) error { return nil }); !errors.Is(err, record.ErrCorrupt) {
		t.Fatalf("scan over a damaged committed frame: %v, want ErrCorrupt", err)
	}
	if _, _, err := Open(dir, Loc{Seg: second.Seg, Off: second.Off + 1}, Torn); !errors.Is(err, record.ErrCorrupt) {
		t.Fatalf("open of a log that ends before committed: %v, want ErrCorrupt", err)
	}
	if _, _, err := Open(dir, Loc{Seg: second.Seg + 1}, Torn); !errors.Is(err, record.ErrCorrupt) {
		t.Fatalf("open of a log whose segments end before committed: %v, want ErrCorrupt", err)
	}
}

// Decode reads back what Encode made and refuses any frame with a byte
// changed, cut short or lengthened.
func TestDecodeChecksWholeFrame(t *testing.T) {
	want := frame(12)
	b := want.Encode()
	got, err := Decode(b)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if _, err := Decode(c); !errors.Is(err, record.ErrCorrupt) {
			t.Fatalf("byte %d changed: %v", i, err)
		}
	}
	for _, c := range [][]byte{nil, b[:txHdrLen-1], b[:len(b)-1], append(append([]byte(nil), b...), 0)} {
		if _, err := Decode(c); !errors.Is(err, record.ErrCorrupt) {
			t.Fatalf("a frame of %d bytes (of %d): %v", len(c), len(b), err)
		}
	}
}

// Frames written many to a sync can be damaged anywhere after the
// committed ones: a log of such frames (Refetchable) is cut at the first
// damage, where one appended a sync at a time (Torn) refuses to open.
func TestDamageBeforeIntactFramesRefusedOrCut(t *testing.T) {
	dir := t.TempDir()
	l, _, err := Open(dir, Loc{}, Refetchable)
	if err != nil {
		t.Fatal(err)
	}
	committed, _, _ := l.Append(frame(10))
	var locs []Loc
	for tid := record.TID(11); tid < 15; tid++ {
		loc, _, err := l.Write(frame(tid))
		if err != nil {
			t.Fatal(err)
		}
		locs = append(locs, loc)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	path := SegName(dir, committed.Seg)
	b, _ := os.ReadFile(path)
	b[locs[1].Off+20] ^= 1 // the frame of 12; 13 and 14 stay intact
	os.WriteFile(path, b, 0o644)
	if _, _, err := Open(dir, locs[0], Torn); !errors.Is(err, record.ErrCorrupt) {
		t.Fatalf("a Torn log with intact frames after damage: %v, want ErrCorrupt", err)
	}
	l, last, err := Open(dir, locs[0], Refetchable)
	if err != nil || last == nil || last.TID != 11 || l.End() != locs[1] {
		t.Fatalf("a Refetchable log: %v, last %v, end %v", err, last, l.End())
	}
	l.Close()
}

// CutTo takes back frames written after a place, those a rotation synced
// into an earlier segment included, and the log appends there next.
func TestCutToTakesBackFramesAcrossSegments(t *testing.T) {
	defer func(old int64) { SegmentSize = old }(SegmentSize)
	SegmentSize = 300
	dir := t.TempDir()
	l, _, err := Open(dir, Loc{}, Refetchable)
	if err != nil {
		t.Fatal(err)
	}
	l.Append(frame(10))
	start := l.End()
	for tid := record.TID(11); tid < 20; tid++ {
		if _, _, err := l.Write(frame(tid)); err != nil {
			t.Fatal(err)
		}
	}
	if l.End().Seg == start.Seg {
		t.Fatal("no segment rotation")
	}
	if err := l.CutTo(start); err != nil {
		t.Fatal(err)
	}
	if l.End() != start {
		t.Fatalf("after the cut the log ends at %v, want %v", l.End(), start)
	}
	if seqs, _ := ListSegments(dir); len(seqs) != 1 || seqs[0] != start.Seg {
		t.Fatalf("segments after the cut: %v", seqs)
	}
	if _, _, err := l.Append(frame(11)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var got []record.TID
	if err := Scan(dir, Loc{}, func(tx *Txn, _, _ Loc) error { got = append(got, tx.TID); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []record.TID{10, 11}) {
		t.Fatalf("frames after the cut and one append: %v", got)
	}
}
