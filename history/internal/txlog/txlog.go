// Package txlog is the transaction log: segment files of frames, one frame
// per committed transaction, appended and fsynced at commit. It is the
// store's truth; everything else is derived from it or points into it.
// Scan reads the frames in order from any place, which is what a change
// stream or a mirror reads.
package txlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/asof/asof/history/internal/fileio"
	"github.com/asof/asof/history/internal/record"
)

// The transaction log: segment files of frames, one frame per transaction.
//
//	frame  = magic "ATX1" | body length u32 | crc32c(body) u32 | crc32c(previous 12 bytes) u32 | body
//	body   = tid u64 | intent seq u64 | object high-water u64 | nops u32 | op* | nnotes u32 | note*
//	op     = kind u8 | obj u64 | key length u16 | key | create tid u64
//	         | [create, version, collapse: payload length u32 | payload] | crc32c(op bytes) u32
//	note   = obj u64 | change u8 | size u64
//
// An end op ends the record (obj, key, create tid) at the frame's tid. The
// prune ops (drop, version, collapse) are written by the cleaner: see the
// store's prune.go.
const (
	txMagic      = "ATX1"
	txHdrLen     = 16
	maxFrameBody = 1 << 31
)

// SegmentSize is where a log segment ends (tests make it small).
var SegmentSize int64 = 64 << 20

// OpKind says what an op does; on disk it is stored plus one.
type OpKind uint8

const (
	// OpCreate creates the record (Obj, Key, frame tid) with Payload.
	OpCreate OpKind = iota
	// OpEnd ends the record (Obj, Key, Create) at the frame's tid.
	OpEnd
	// OpDrop removes the record (Obj, Key, Create): no kept moment sees it.
	OpDrop
	// OpVersion rewrites the version entry (Obj, Create) to Payload
	// (change u8 | size u64), or removes it when Payload is empty.
	OpVersion
	// OpCollapse says the moments from Create up to (not including) the
	// tid in Payload (u64) read as the state at that tid.
	OpCollapse
	// OpNop does nothing: it stands in a cleaner frame whose ops a log
	// rewrite removed but which must stay (a segment's last frame), so the
	// frame is still known as the cleaner's.
	OpNop
	opKinds
)

func (k OpKind) hasPayload() bool { return k == OpCreate || k == OpVersion || k == OpCollapse }

// Op is one record change of a transaction, as the change stream carries it.
type Op struct {
	Kind    OpKind
	Obj     record.ObjID
	Key     string
	Create  record.TID
	Payload []byte
}

// Note is what a transaction did to one object, for version listings.
type Note struct {
	Obj    record.ObjID
	Change record.Change
	Size   uint64
}

// Txn is one committed transaction.
type Txn struct {
	TID       record.TID
	IntentSeq uint64       // intent logs up to this one are folded into the log
	ObjHigh   record.ObjID // every object id below this may have been handed out
	Ops       []Op
	Notes     []Note
}

// Loc is where a frame starts.
type Loc struct {
	Seg uint32
	Off int64
}

func (t *Txn) Encode() []byte {
	b := make([]byte, txHdrLen, 4096)
	b = binary.BigEndian.AppendUint64(b, uint64(t.TID))
	b = binary.BigEndian.AppendUint64(b, t.IntentSeq)
	b = binary.BigEndian.AppendUint64(b, uint64(t.ObjHigh))
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Ops)))
	for _, op := range t.Ops {
		start := len(b)
		b = append(b, byte(op.Kind)+1)
		b = binary.BigEndian.AppendUint64(b, uint64(op.Obj))
		b = binary.BigEndian.AppendUint16(b, uint16(len(op.Key)))
		b = append(b, op.Key...)
		b = binary.BigEndian.AppendUint64(b, uint64(op.Create))
		if op.Kind.hasPayload() {
			b = binary.BigEndian.AppendUint32(b, uint32(len(op.Payload)))
			b = append(b, op.Payload...)
		}
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], record.Castagnoli))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Notes)))
	for _, n := range t.Notes {
		b = binary.BigEndian.AppendUint64(b, uint64(n.Obj))
		b = append(b, byte(n.Change))
		b = binary.BigEndian.AppendUint64(b, n.Size)
	}
	copy(b, txMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(len(b)-txHdrLen))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[txHdrLen:], record.Castagnoli))
	binary.BigEndian.PutUint32(b[12:], crc32.Checksum(b[:12], record.Castagnoli))
	return b
}

// Decode checks and decodes one whole frame, as Encode made it: a copy
// sent over a network is checked as the log's own frames are.
func Decode(b []byte) (*Txn, error) {
	if len(b) < txHdrLen || string(b[:4]) != txMagic ||
		crc32.Checksum(b[:12], record.Castagnoli) != binary.BigEndian.Uint32(b[12:]) {
		return nil, fmt.Errorf("%w: bad frame header", record.ErrCorrupt)
	}
	body := b[txHdrLen:]
	if n := binary.BigEndian.Uint32(b[4:]); int64(n) != int64(len(body)) {
		return nil, fmt.Errorf("%w: frame of %d bytes says %d", record.ErrCorrupt, len(body), n)
	}
	if crc32.Checksum(body, record.Castagnoli) != binary.BigEndian.Uint32(b[8:]) {
		return nil, fmt.Errorf("%w: frame body", record.ErrCorrupt)
	}
	return decodeTxn(body)
}

func decodeTxn(body []byte) (*Txn, error) {
	r := record.Reader{B: body}
	t := &Txn{TID: record.TID(r.U64()), IntentSeq: r.U64(), ObjHigh: record.ObjID(r.U64())}
	n := r.U32()
	if r.Err == nil && int(n) > len(body)/20 {
		return nil, fmt.Errorf("%w: %d ops in a frame of %d bytes", record.ErrCorrupt, n, len(body))
	}
	t.Ops = make([]Op, 0, n)
	for i := uint32(0); i < n && r.Err == nil; i++ {
		start := r.Off
		kind := OpKind(r.U8() - 1)
		if kind >= opKinds && r.Err == nil {
			return nil, fmt.Errorf("%w: op kind %d", record.ErrCorrupt, kind+1)
		}
		op := Op{Kind: kind, Obj: record.ObjID(r.U64())}
		op.Key = string(r.Bytes(int(r.U16())))
		op.Create = record.TID(r.U64())
		if kind.hasPayload() {
			op.Payload = r.Bytes(int(r.U32()))
		}
		end := r.Off
		if c := r.U32(); r.Err == nil && c != crc32.Checksum(body[start:end], record.Castagnoli) {
			return nil, fmt.Errorf("%w: op %d of transaction %s", record.ErrCorrupt, i, t.TID)
		}
		t.Ops = append(t.Ops, op)
	}
	nn := r.U32()
	for i := uint32(0); i < nn && r.Err == nil; i++ {
		t.Notes = append(t.Notes, Note{Obj: record.ObjID(r.U64()), Change: record.Change(r.U8()), Size: r.U64()})
	}
	if r.Err != nil {
		return nil, fmt.Errorf("%w: transaction frame truncated", record.ErrCorrupt)
	}
	return t, nil
}

// Log appends frames to the newest segment.
type Log struct {
	dir    string
	seg    uint32
	f      *os.File
	off    int64 // where the next frame goes
	synced int64 // how much of f is durable
	newSeg bool  // f's directory entry is not yet durable
}

func SegName(dir string, seq uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%08x.seg", seq))
}

func ListSegments(dir string) ([]uint32, error) { return fileio.ListSeq32(dir, ".seg", "log") }

// readFrame reads the frame at off. io.EOF means a clean end; a frame that
// is incomplete or fails its checksum is reported as errTorn so the caller
// can tell a torn tail (the last frame) from damage in the middle.
var errTorn = errors.New("history: torn or damaged log frame")

func ReadFrame(f *os.File, off int64) (*Txn, int64, error) {
	hdr := make([]byte, txHdrLen)
	n, err := f.ReadAt(hdr, off)
	if n == 0 && errors.Is(err, io.EOF) {
		return nil, 0, io.EOF
	}
	if n < txHdrLen {
		return nil, 0, errTorn
	}
	if string(hdr[:4]) != txMagic || crc32.Checksum(hdr[:12], record.Castagnoli) != binary.BigEndian.Uint32(hdr[12:]) {
		return nil, 0, errTorn
	}
	size := binary.BigEndian.Uint32(hdr[4:])
	if size > maxFrameBody {
		return nil, 0, errTorn
	}
	body := make([]byte, size)
	if n, _ := f.ReadAt(body, off+txHdrLen); n < int(size) {
		return nil, 0, errTorn
	}
	if crc32.Checksum(body, record.Castagnoli) != binary.BigEndian.Uint32(hdr[8:]) {
		return nil, 0, errTorn
	}
	t, err := decodeTxn(body)
	if err != nil {
		return nil, 0, errTorn
	}
	return t, off + txHdrLen + int64(size), nil
}

// Tail says what damage after the committed frames can be.
type Tail int

const (
	// Torn: frames are appended one sync at a time (Append), so only the
	// last can be damaged by a crash; damage with intact frames after it
	// is corruption, and Open refuses.
	Torn Tail = iota
	// Refetchable: frames were written many to a sync (Write, then Sync),
	// so a crash can leave any of them damaged, and ones after intact.
	// Every frame from the first damaged one on is cut: a mirror's frames,
	// which its source sends again.
	Refetchable
)

// Open opens the log for appending after the last good frame of the
// newest segment, cutting off a torn tail (a frame whose write or fsync
// never finished, so no caller was told it was durable). committed is
// where the frames the index has not applied begin (its state's Next):
// the frames before it were durable when the index took them, so Open
// neither reads nor cuts them, and its cost is that of the frames after
// committed, not of the segment. Damage in them is Verify's to find, as
// is damage in every older segment, which Open never read either. It
// returns the last frame at or after committed, or nil when there is none
// (the index's state then describes the newest transaction).
func Open(dir string, committed Loc, tail Tail) (*Log, *Txn, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	seqs, err := ListSegments(dir)
	if err != nil {
		return nil, nil, err
	}
	l := &Log{dir: dir}
	if len(seqs) == 0 {
		if committed != (Loc{}) {
			return nil, nil, fmt.Errorf("%w: the log in %s has no segments, and the index has applied frames up to segment %d offset %d; "+
				"restore the data directory from a backup", record.ErrCorrupt, dir, committed.Seg, committed.Off)
		}
		if err := l.rotate(); err != nil {
			return nil, nil, err
		}
		return l, nil, nil
	}
	// Only the newest segment can hold frames not yet durable: Write
	// syncs a segment before it rotates. An older one may hold frames the
	// index lacks (a crash just after a rotation), which the store's
	// catch-up reads; they end where they end.
	seg := seqs[len(seqs)-1]
	f, err := os.OpenFile(SegName(dir, seg), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("history: open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("history: open log: %w", err)
	}
	var off int64
	switch {
	case seg < committed.Seg, seg == committed.Seg && st.Size() < committed.Off:
		f.Close()
		return nil, nil, fmt.Errorf("%w: the log ends in segment %s at offset %d, before the frames the index has applied (segment %d, offset %d); "+
			"the store cannot open: restore the data directory from a backup", record.ErrCorrupt, f.Name(), st.Size(), committed.Seg, committed.Off)
	case seg == committed.Seg:
		off = committed.Off
	}
	var last *Txn
	for {
		t, next, err := ReadFrame(f, off)
		if err == io.EOF {
			break
		}
		if err != nil {
			if _, _, err2 := ReadFrameAfter(f, off, st.Size()); err2 == nil && tail == Torn {
				f.Close()
				return nil, nil, fmt.Errorf("%w: log segment %s damaged at offset %d with intact frames after it; "+
					"the store cannot open: restore the data directory, or this segment, from a backup", record.ErrCorrupt, f.Name(), off)
			}
			if err := f.Truncate(off); err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("history: cut torn log tail: %w", err)
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return nil, nil, err
			}
			break
		}
		last, off = t, next
	}
	l.f, l.seg, l.off, l.synced = f, seg, off, off
	return l, last, nil
}

// ReadFrameAfter looks for any intact frame after a damaged one: if there is
// one, the damage is not a torn tail but corruption in the middle.
func ReadFrameAfter(f *os.File, off, size int64) (*Txn, int64, error) {
	buf := make([]byte, 4)
	for o := off + 1; o+txHdrLen <= size; o++ {
		if _, err := f.ReadAt(buf, o); err != nil {
			break
		}
		if string(buf) == txMagic {
			if t, n, err := ReadFrame(f, o); err == nil {
				return t, n, nil
			}
		}
	}
	return nil, 0, errTorn
}

func (l *Log) rotate() error {
	next := l.seg + 1
	f, err := os.OpenFile(SegName(l.dir, next), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("history: new log segment: %w", err)
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.seg, l.off, l.synced, l.newSeg = f, next, 0, 0, true
	return nil
}

// Append writes a frame and makes it durable. It returns where the frame
// starts and where the next one will.
func (l *Log) Append(t *Txn) (Loc, Loc, error) {
	loc, next, err := l.Write(t)
	if err == nil {
		err = l.Sync()
	}
	if err != nil {
		return Loc{}, Loc{}, err
	}
	return loc, next, nil
}

// Write writes a frame without making it durable: Sync does, for every
// frame written since the last one. A caller appending many frames at once
// (a mirror's batch) syncs once at the end, and opens the log with
// Refetchable: a crash before that sync may damage any of them. Only the
// newest segment holds unsynced frames: Write syncs before it rotates.
func (l *Log) Write(t *Txn) (Loc, Loc, error) {
	b := t.Encode()
	if l.off > 0 && l.off+int64(len(b)) > SegmentSize {
		if err := l.Sync(); err != nil {
			return Loc{}, Loc{}, err
		}
		if err := l.rotate(); err != nil {
			return Loc{}, Loc{}, err
		}
	}
	loc := Loc{Seg: l.seg, Off: l.off}
	if _, err := l.f.WriteAt(b, l.off); err != nil {
		return Loc{}, Loc{}, fmt.Errorf("history: write log: %w", err)
	}
	l.off += int64(len(b))
	return loc, Loc{Seg: l.seg, Off: l.off}, nil
}

// Sync makes the frames written since the last sync durable. If it fails
// they are forgotten: the next frame is written where they began.
func (l *Log) Sync() error {
	if err := l.f.Sync(); err != nil {
		// The frames may or may not be on disk; cut them so a later
		// frame never follows a half-written one.
		l.f.Truncate(l.synced)
		l.off = l.synced
		return fmt.Errorf("history: sync log: %w", err)
	}
	if l.newSeg {
		if err := fileio.SyncDir(l.dir); err != nil {
			l.off = l.synced
			return err
		}
		l.newSeg = false
	}
	l.synced = l.off
	return nil
}

// CutTo removes every frame from loc on, durably, and appends there
// next: a caller that wrote frames it could not finish (a mirror's batch
// whose write or sync failed) takes them back, those a rotation synced
// included. No frame from loc on may be committed.
func (l *Log) CutTo(loc Loc) error {
	seqs, err := ListSegments(l.dir)
	if err != nil {
		return err
	}
	if loc.Seg != l.seg {
		f, err := os.OpenFile(SegName(l.dir, loc.Seg), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("history: cut the log: %w", err)
		}
		l.f.Close()
		l.f, l.seg = f, loc.Seg
	}
	for _, seq := range seqs {
		if seq > loc.Seg {
			if err := os.Remove(SegName(l.dir, seq)); err != nil {
				return fmt.Errorf("history: cut the log: %w", err)
			}
		}
	}
	if err := l.f.Truncate(loc.Off); err != nil {
		return fmt.Errorf("history: cut the log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("history: cut the log: %w", err)
	}
	l.off, l.synced = loc.Off, loc.Off
	if err := fileio.SyncDir(l.dir); err != nil {
		return err
	}
	l.newSeg = false
	return nil
}

// End is where the next frame will start.
func (l *Log) End() Loc { return Loc{Seg: l.seg, Off: l.off} }

func (l *Log) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Scan calls fn for every frame from loc on, in order. A damaged frame
// stops the scan with ErrCorrupt.
func Scan(dir string, from Loc, fn func(t *Txn, loc, next Loc) error) error {
	seqs, err := ListSegments(dir)
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		if seq < from.Seg {
			continue
		}
		f, err := os.Open(SegName(dir, seq))
		if err != nil {
			return fmt.Errorf("history: open log: %w", err)
		}
		off := int64(0)
		if seq == from.Seg {
			off = from.Off
		}
		for {
			t, next, err := ReadFrame(f, off)
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("%w: log segment %s at offset %d", record.ErrCorrupt, f.Name(), off)
			}
			if err := fn(t, Loc{Seg: seq, Off: off}, Loc{Seg: seq, Off: next}); err != nil {
				f.Close()
				return err
			}
			off = next
		}
		f.Close()
	}
	return nil
}

// PruneOnly reports whether a frame is the cleaner's: it has cleaner ops
// and no record changes or notes of its own, so it is no moment. Every
// other frame is one, an empty one included: a kept moment whose end ops
// all went stays a moment (its state differs from the one before it).
func (t *Txn) PruneOnly() bool {
	if len(t.Notes) > 0 {
		return false
	}
	cleaner := false
	for _, op := range t.Ops {
		switch op.Kind {
		case OpCreate, OpEnd:
			return false
		default:
			cleaner = true
		}
	}
	return cleaner
}
