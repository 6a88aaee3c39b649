package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
)

// The intent log is a redo log of the changes that are not yet part of a
// committed transaction: every Update appends its operations as one entry,
// and Durable fsyncs the file, so a synchronous write survives a crash while
// history keeps the flush interval as its grain. Entries that arrive while an
// fsync is running share the next one (group commit).
//
// Each freeze of the pending changes starts a new file; a committed
// transaction names the last file it covers, and recovery replays the files
// after that one.
//
//	entry = magic "AIN1" | body length u32 | crc32c(body) u32 | crc32c(previous 12 bytes) u32 | body
//	body  = iop*
const (
	intentMagic  = "AIN1"
	intentHdrLen = 16
)

type intentFile struct {
	f       *os.File
	seq     uint64
	written int64    // bytes appended, in the file or still in buf
	flushed int64    // bytes written to the file
	synced  int64    // bytes known durable
	buf     [][]byte // appended entries not yet written: headers and bodies
	bufLen  int64
	syncing bool
	dirDone bool // the directory entry of the file is durable
	retired bool // its changes are in the transaction log
}

type intentLog struct {
	dir   string
	mu    sync.Mutex
	cond  *sync.Cond
	cur   *intentFile
	files []*intentFile // not yet retired, oldest first
}

// intentPos is the end of an appended entry: Durable waits for it.
type intentPos struct {
	file *intentFile
	end  int64
}

func intentName(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.log", seq))
}

func listIntent(dir string) ([]uint64, error) { return listSeq(dir, ".log", 64, "intent log") }

// readIntent returns the entries of one file up to its first torn or
// damaged entry: a torn tail was never acknowledged as durable. Damage with
// intact entries after it is not a torn tail but lost acknowledged changes,
// and is reported as ErrCorrupt rather than silently skipped.
func readIntent(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("history: read intent log: %w", err)
	}
	var out [][]byte
	off := 0
	for off < len(b) {
		body, ok := intentEntryAt(b, off)
		if !ok {
			for o := off + 1; o+intentHdrLen <= len(b); o++ {
				if _, ok := intentEntryAt(b, o); ok {
					return nil, fmt.Errorf("%w: intent log %s is damaged at offset %d with intact entries after it; "+
						"move it aside to start without the changes it holds", ErrCorrupt, path, off)
				}
			}
			break
		}
		out = append(out, body)
		off += intentHdrLen + len(body)
	}
	return out, nil
}

func intentEntryAt(b []byte, off int) ([]byte, bool) {
	if off+intentHdrLen > len(b) {
		return nil, false
	}
	h := b[off : off+intentHdrLen]
	if string(h[:4]) != intentMagic || crc32.Checksum(h[:12], castagnoli) != binary.BigEndian.Uint32(h[12:]) {
		return nil, false
	}
	n := int(binary.BigEndian.Uint32(h[4:]))
	if off+intentHdrLen+n > len(b) {
		return nil, false
	}
	body := b[off+intentHdrLen : off+intentHdrLen+n]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(h[8:]) {
		return nil, false
	}
	return body, true
}

func newIntentLog(dir string, seq uint64) (*intentLog, error) {
	l := &intentLog{dir: dir}
	l.cond = sync.NewCond(&l.mu)
	f, err := l.create(seq)
	if err != nil {
		return nil, err
	}
	l.cur = f
	l.files = []*intentFile{f}
	return l, nil
}

func (l *intentLog) create(seq uint64) (*intentFile, error) {
	f, err := os.OpenFile(intentName(l.dir, seq), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("history: create intent log: %w", err)
	}
	return &intentFile{f: f, seq: seq}, nil
}

// intentBufMax bounds the entries held in memory before they are written
// out (without fsync). Writers also count the buffer against MaxPending.
const intentBufMax = 1 << 30

// append adds one entry. It is written to the file lazily: changes that
// are committed before anyone asks for them to be durable never touch the
// intent log's disk at all, so a buffered write is written once, not twice.
func (l *intentLog) append(body []byte) (intentPos, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.cur
	var h [intentHdrLen]byte
	copy(h[:], intentMagic)
	binary.BigEndian.PutUint32(h[4:], uint32(len(body)))
	binary.BigEndian.PutUint32(h[8:], crc32.Checksum(body, castagnoli))
	binary.BigEndian.PutUint32(h[12:], crc32.Checksum(h[:12], castagnoli))
	// The body is the Tx's own encoding, handed over, not copied.
	cur.buf = append(cur.buf, h[:], body)
	cur.bufLen += int64(intentHdrLen + len(body))
	cur.written += int64(intentHdrLen + len(body))
	if cur.bufLen > intentBufMax {
		if err := cur.writeOut(); err != nil {
			return intentPos{}, err
		}
	}
	return intentPos{file: cur, end: cur.written}, nil
}

// buffered is how many bytes wait in memory.
func (l *intentLog) buffered() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.bufLen
}

// writeOut writes the buffered entries to the file; the caller holds l.mu.
func (f *intentFile) writeOut() error {
	if err := writeBufs(f.f, f.buf, f.flushed); err != nil {
		return err
	}
	f.flushed += f.bufLen
	f.buf, f.bufLen = nil, 0
	return nil
}

// writeBufs writes pieces at off, gathered into large writes.
func writeBufs(f *os.File, bufs [][]byte, off int64) error {
	var batch []byte
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := f.WriteAt(batch, off)
		off += int64(len(batch))
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("history: write intent log: %w", err)
		}
		return nil
	}
	for _, b := range bufs {
		if len(b) >= 256<<10 {
			// Large bodies go as they are, without another copy.
			if err := flush(); err != nil {
				return err
			}
			if _, err := f.WriteAt(b, off); err != nil {
				return fmt.Errorf("history: write intent log: %w", err)
			}
			off += int64(len(b))
			continue
		}
		batch = append(batch, b...)
		if len(batch) >= 1<<20 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// positions are the ends of everything appended so far, in every file not
// yet covered by a committed transaction (a commit in progress still needs
// its file).
func (l *intentLog) positions() []intentPos {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ps []intentPos
	for _, f := range l.files {
		if !f.retired && f.synced < f.written {
			ps = append(ps, intentPos{file: f, end: f.written})
		}
	}
	return ps
}

// syncAll makes every position durable, oldest file first.
func (l *intentLog) syncAll(ps []intentPos) error {
	for _, p := range ps {
		if err := l.sync(p); err != nil {
			return err
		}
	}
	return nil
}

// sync returns once everything up to pos is durable. One caller writes and
// fsyncs while the others wait for it; a caller whose entry came after that
// fsync began takes the next one.
func (l *intentLog) sync(pos intentPos) error {
	f := pos.file
	if f == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if f.retired || f.synced >= pos.end {
			return nil
		}
		if !f.syncing {
			break
		}
		l.cond.Wait()
	}
	f.syncing = true
	data, off := f.buf, f.flushed
	f.flushed += f.bufLen
	f.buf, f.bufLen = nil, 0
	target := f.flushed
	needDir := !f.dirDone
	l.mu.Unlock()
	var err error
	if len(data) > 0 {
		err = writeBufs(f.f, data, off)
	}
	if err == nil {
		err = f.f.Sync()
	}
	if err == nil && needDir {
		err = syncDir(l.dir)
	}
	l.mu.Lock()
	f.syncing = false
	if err == nil {
		f.synced = max(f.synced, target)
		f.dirDone = f.dirDone || needDir
	}
	l.cond.Broadcast()
	if err != nil {
		return fmt.Errorf("history: sync intent log: %w", err)
	}
	return nil
}

// rotate starts the next file and returns the previous one, whose entries
// now belong to the transaction being committed.
func (l *intentLog) rotate() (*intentFile, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	nf, err := l.create(l.cur.seq + 1)
	if err != nil {
		return nil, err
	}
	old := l.cur
	l.cur = nf
	l.files = append(l.files, nf)
	return old, nil
}

// retire drops files whose changes a durable transaction now holds.
func (l *intentLog) retire(files ...*intentFile) {
	l.mu.Lock()
	for _, f := range files {
		f.retired = true
		for f.syncing {
			l.cond.Wait()
		}
	}
	l.cond.Broadcast()
	kept := l.files[:0]
	for _, f := range l.files {
		if !f.retired {
			kept = append(kept, f)
		}
	}
	l.files = kept
	l.mu.Unlock()
	for _, f := range files {
		f.f.Close()
		os.Remove(f.f.Name())
	}
}

func (l *intentLog) seq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.seq
}

func (l *intentLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.f.Close()
}

// Intent operations: the primitive changes a Tx makes, replayable in order.
const (
	iopNewObj  = 1  // obj, inode
	iopInode   = 2  // obj, inode
	iopEndObj  = 3  // obj
	iopPut     = 4  // obj, key, payload
	iopDel     = 5  // obj, key
	iopWrite   = 6  // obj, off, data
	iopTrunc   = 7  // obj, size
	iopNote    = 8  // obj, change
	iopReserve = 9  // object high-water mark
	iopCopy    = 10 // obj (destination), n (moment), data (source object id)
	iopAtime   = 11 // obj, n (access time)
)

type iop struct {
	kind byte
	obj  ObjID
	key  string
	data []byte
	n    uint64 // offset, size, change or high-water mark
}

func appendIop(b []byte, op iop) []byte {
	b = append(b, op.kind)
	b = binary.BigEndian.AppendUint64(b, uint64(op.obj))
	b = binary.BigEndian.AppendUint64(b, op.n)
	b = binary.BigEndian.AppendUint16(b, uint16(len(op.key)))
	b = append(b, op.key...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(op.data)))
	return append(b, op.data...)
}

func decodeIops(body []byte) ([]iop, error) {
	r := reader{b: body}
	var ops []iop
	for r.off < len(body) && r.err == nil {
		op := iop{kind: r.u8(), obj: ObjID(r.u64()), n: r.u64()}
		op.key = string(r.bytes(int(r.u16())))
		op.data = r.bytes(int(r.u32()))
		ops = append(ops, op)
	}
	if r.err != nil {
		return nil, errors.New("history: intent entry truncated")
	}
	return ops, nil
}
