package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
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
// prune ops (drop, version, collapse) are written by the cleaner: see
// prune.go.
const (
	txMagic      = "ATX1"
	txHdrLen     = 16
	maxFrameBody = 1 << 31
)

// segMaxSize is where a log segment ends (tests make it small).
var segMaxSize int64 = 64 << 20

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
	Obj     ObjID
	Key     string
	Create  TID
	Payload []byte
}

// Note is what a transaction did to one object, for version listings.
type Note struct {
	Obj    ObjID
	Change Change
	Size   uint64
}

// Txn is one committed transaction.
type Txn struct {
	TID       TID
	IntentSeq uint64 // intent logs up to this one are folded into the log
	ObjHigh   ObjID  // every object id below this may have been handed out
	Ops       []Op
	Notes     []Note
}

// logLoc is where a frame starts.
type logLoc struct {
	Seg uint32
	Off int64
}

func (t *Txn) encode() []byte {
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
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Notes)))
	for _, n := range t.Notes {
		b = binary.BigEndian.AppendUint64(b, uint64(n.Obj))
		b = append(b, byte(n.Change))
		b = binary.BigEndian.AppendUint64(b, n.Size)
	}
	copy(b, txMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(len(b)-txHdrLen))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[txHdrLen:], castagnoli))
	binary.BigEndian.PutUint32(b[12:], crc32.Checksum(b[:12], castagnoli))
	return b
}

var errShort = errors.New("short")

func decodeTxn(body []byte) (*Txn, error) {
	r := reader{b: body}
	t := &Txn{TID: TID(r.u64()), IntentSeq: r.u64(), ObjHigh: ObjID(r.u64())}
	n := r.u32()
	if r.err == nil && int(n) > len(body)/20 {
		return nil, fmt.Errorf("%w: %d ops in a frame of %d bytes", ErrCorrupt, n, len(body))
	}
	t.Ops = make([]Op, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		start := r.off
		kind := OpKind(r.u8() - 1)
		if kind >= opKinds && r.err == nil {
			return nil, fmt.Errorf("%w: op kind %d", ErrCorrupt, kind+1)
		}
		op := Op{Kind: kind, Obj: ObjID(r.u64())}
		op.Key = string(r.bytes(int(r.u16())))
		op.Create = TID(r.u64())
		if kind.hasPayload() {
			op.Payload = r.bytes(int(r.u32()))
		}
		end := r.off
		if c := r.u32(); r.err == nil && c != crc32.Checksum(body[start:end], castagnoli) {
			return nil, fmt.Errorf("%w: op %d of transaction %s", ErrCorrupt, i, t.TID)
		}
		t.Ops = append(t.Ops, op)
	}
	nn := r.u32()
	for i := uint32(0); i < nn && r.err == nil; i++ {
		t.Notes = append(t.Notes, Note{Obj: ObjID(r.u64()), Change: Change(r.u8()), Size: r.u64()})
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: transaction frame truncated", ErrCorrupt)
	}
	return t, nil
}

// reader decodes big-endian fields, remembering the first overrun.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || r.off+n > len(r.b) {
		r.err = errShort
		return make([]byte, max(n, 0))
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}
func (r *reader) u8() byte    { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }
func (r *reader) bytes(n int) []byte {
	p := r.take(n)
	return append([]byte(nil), p...)
}

// txLog appends frames to the newest segment.
type txLog struct {
	dir    string
	seg    uint32
	f      *os.File
	off    int64
	newSeg bool
}

func segName(dir string, seq uint32) string {
	return filepath.Join(dir, fmt.Sprintf("%08x.seg", seq))
}

func listSegments(dir string) ([]uint32, error) { return listSeq32(dir, ".seg", "log") }

// readFrame reads the frame at off. io.EOF means a clean end; a frame that
// is incomplete or fails its checksum is reported as errTorn so the caller
// can tell a torn tail (the last frame) from damage in the middle.
var errTorn = errors.New("history: torn or damaged log frame")

func readFrame(f *os.File, off int64) (*Txn, int64, error) {
	hdr := make([]byte, txHdrLen)
	n, err := f.ReadAt(hdr, off)
	if n == 0 && errors.Is(err, io.EOF) {
		return nil, 0, io.EOF
	}
	if n < txHdrLen {
		return nil, 0, errTorn
	}
	if string(hdr[:4]) != txMagic || crc32.Checksum(hdr[:12], castagnoli) != binary.BigEndian.Uint32(hdr[12:]) {
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
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(hdr[8:]) {
		return nil, 0, errTorn
	}
	t, err := decodeTxn(body)
	if err != nil {
		return nil, 0, errTorn
	}
	return t, off + txHdrLen + int64(size), nil
}

// openTxLog opens the log for appending after the last good frame of the
// newest segment, cutting off a torn tail (a frame whose write or fsync
// never finished, so no caller was told it was durable). It returns the last
// transaction, or nil for an empty log.
func openTxLog(dir string, committed logLoc) (*txLog, *Txn, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	seqs, err := listSegments(dir)
	if err != nil {
		return nil, nil, err
	}
	l := &txLog{dir: dir}
	var last *Txn
	// The newest segment may be empty (created just before a crash): the
	// last transaction is then in the one before.
	for i := len(seqs) - 1; i >= 0 && last == nil; i-- {
		f, err := os.OpenFile(segName(dir, seqs[i]), os.O_RDWR, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("history: open log: %w", err)
		}
		var off int64
		for {
			t, next, err := readFrame(f, off)
			if err == io.EOF {
				break
			}
			if err != nil {
				st, _ := f.Stat()
				if seqs[i] < committed.Seg || (seqs[i] == committed.Seg && off < committed.Off) {
					f.Close()
					return nil, nil, fmt.Errorf("%w: log segment %s damaged at offset %d, in a transaction that was committed; "+
						"the store cannot open: restore the data directory, or this segment, from a backup", ErrCorrupt, f.Name(), off)
				}
				if _, _, err2 := readFrameAfter(f, off, st.Size()); err2 == nil {
					f.Close()
					return nil, nil, fmt.Errorf("%w: log segment %s damaged at offset %d with intact frames after it; "+
						"the store cannot open: restore the data directory, or this segment, from a backup", ErrCorrupt, f.Name(), off)
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
		if l.f == nil {
			l.f, l.seg, l.off = f, seqs[i], off
		} else {
			f.Close()
		}
	}
	if l.f == nil {
		if err := l.rotate(); err != nil {
			return nil, nil, err
		}
	}
	return l, last, nil
}

// readFrameAfter looks for any intact frame after a damaged one: if there is
// one, the damage is not a torn tail but corruption in the middle.
func readFrameAfter(f *os.File, off, size int64) (*Txn, int64, error) {
	buf := make([]byte, 4)
	for o := off + 1; o+txHdrLen <= size; o++ {
		if _, err := f.ReadAt(buf, o); err != nil {
			break
		}
		if string(buf) == txMagic {
			if t, n, err := readFrame(f, o); err == nil {
				return t, n, nil
			}
		}
	}
	return nil, 0, errTorn
}

func (l *txLog) rotate() error {
	next := l.seg + 1
	f, err := os.OpenFile(segName(l.dir, next), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("history: new log segment: %w", err)
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.seg, l.off, l.newSeg = f, next, 0, true
	return nil
}

// append writes a frame and makes it durable. It returns where the frame
// starts and where the next one will.
func (l *txLog) append(t *Txn) (logLoc, logLoc, error) {
	b := t.encode()
	if l.off > 0 && l.off+int64(len(b)) > segMaxSize {
		if err := l.rotate(); err != nil {
			return logLoc{}, logLoc{}, err
		}
	}
	loc := logLoc{Seg: l.seg, Off: l.off}
	if _, err := l.f.WriteAt(b, l.off); err != nil {
		return logLoc{}, logLoc{}, fmt.Errorf("history: write log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		// The frame may or may not be on disk; cut it so a later frame
		// never follows a half-written one.
		l.f.Truncate(l.off)
		return logLoc{}, logLoc{}, fmt.Errorf("history: sync log: %w", err)
	}
	if l.newSeg {
		if err := syncDir(l.dir); err != nil {
			return logLoc{}, logLoc{}, err
		}
		l.newSeg = false
	}
	l.off += int64(len(b))
	return loc, logLoc{Seg: l.seg, Off: l.off}, nil
}

func (l *txLog) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// scanLog calls fn for every frame from loc on, in order. A damaged frame
// stops the scan with ErrCorrupt.
func scanLog(dir string, from logLoc, fn func(t *Txn, loc, next logLoc) error) error {
	seqs, err := listSegments(dir)
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		if seq < from.Seg {
			continue
		}
		f, err := os.Open(segName(dir, seq))
		if err != nil {
			return fmt.Errorf("history: open log: %w", err)
		}
		off := int64(0)
		if seq == from.Seg {
			off = from.Off
		}
		for {
			t, next, err := readFrame(f, off)
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("%w: log segment %s at offset %d", ErrCorrupt, f.Name(), off)
			}
			if err := fn(t, logLoc{Seg: seq, Off: off}, logLoc{Seg: seq, Off: next}); err != nil {
				f.Close()
				return err
			}
			off = next
		}
		f.Close()
	}
	return nil
}
