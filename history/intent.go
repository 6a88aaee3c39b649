package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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
	written int64
	synced  int64
	syncing bool
	dirDone bool // the directory entry of the file is durable
	retired bool // its changes are in the transaction log
}

type intentLog struct {
	dir  string
	mu   sync.Mutex
	cond *sync.Cond
	cur  *intentFile
}

// intentPos is the end of an appended entry: Durable waits for it.
type intentPos struct {
	file *intentFile
	end  int64
}

func intentName(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.log", seq))
}

func listIntent(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("history: list intent log: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(n, 16, 64); err == nil {
			seqs = append(seqs, v)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// readIntent returns the entries of one file up to its first torn or
// damaged entry: anything after that was never acknowledged as durable.
func readIntent(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("history: read intent log: %w", err)
	}
	var out [][]byte
	for off := 0; off+intentHdrLen <= len(b); {
		h := b[off : off+intentHdrLen]
		if string(h[:4]) != intentMagic || crc32.Checksum(h[:12], castagnoli) != binary.BigEndian.Uint32(h[12:]) {
			break
		}
		n := int(binary.BigEndian.Uint32(h[4:]))
		if off+intentHdrLen+n > len(b) {
			break
		}
		body := b[off+intentHdrLen : off+intentHdrLen+n]
		if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(h[8:]) {
			break
		}
		out = append(out, body)
		off += intentHdrLen + n
	}
	return out, nil
}

func newIntentLog(dir string, seq uint64) (*intentLog, error) {
	l := &intentLog{dir: dir}
	l.cond = sync.NewCond(&l.mu)
	f, err := l.create(seq)
	if err != nil {
		return nil, err
	}
	l.cur = f
	return l, nil
}

func (l *intentLog) create(seq uint64) (*intentFile, error) {
	f, err := os.OpenFile(intentName(l.dir, seq), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("history: create intent log: %w", err)
	}
	return &intentFile{f: f, seq: seq}, nil
}

// append writes one entry (not yet durable).
func (l *intentLog) append(body []byte) (intentPos, error) {
	buf := make([]byte, intentHdrLen, intentHdrLen+len(body))
	copy(buf, intentMagic)
	binary.BigEndian.PutUint32(buf[4:], uint32(len(body)))
	binary.BigEndian.PutUint32(buf[8:], crc32.Checksum(body, castagnoli))
	binary.BigEndian.PutUint32(buf[12:], crc32.Checksum(buf[:12], castagnoli))
	buf = append(buf, body...)
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.cur
	if _, err := cur.f.WriteAt(buf, cur.written); err != nil {
		return intentPos{}, fmt.Errorf("history: write intent log: %w", err)
	}
	cur.written += int64(len(buf))
	return intentPos{file: cur, end: cur.written}, nil
}

// position is the end of everything appended so far.
func (l *intentLog) position() intentPos {
	l.mu.Lock()
	defer l.mu.Unlock()
	return intentPos{file: l.cur, end: l.cur.written}
}

// sync returns once everything up to pos is durable. One caller fsyncs
// while the others wait for it; a caller whose entry was written after that
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
	target := f.written
	needDir := !f.dirDone
	l.mu.Unlock()
	err := f.f.Sync()
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
	iopNewObj  = 1 // obj, inode
	iopInode   = 2 // obj, inode
	iopEndObj  = 3 // obj
	iopPut     = 4 // obj, key, payload
	iopDel     = 5 // obj, key
	iopWrite   = 6 // obj, off, data
	iopTrunc   = 7 // obj, size
	iopNote    = 8 // obj, change
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
