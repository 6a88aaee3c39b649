// Package intent is the intent log: a redo log of the changes not yet in a
// committed transaction, one Entry per Update, made durable on demand
// with one fsync shared by every caller waiting (group commit).
package intent

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"

	"github.com/asof/asof/history/internal/fileio"
	"github.com/asof/asof/history/internal/record"
)

// The intent log is a redo log of the changes that are not yet part of a
// committed transaction: every Update appends its operations as one Entry,
// and Durable fsyncs the file, so a synchronous write survives a crash while
// history keeps the flush interval as its grain. Entries that arrive while an
// fsync is running share the next one (group commit).
//
// Each freeze of the pending changes starts a new file; a committed
// transaction names the last file it covers, and recovery replays the files
// after that one.
//
//	Entry = magic "AIN1" | body length u32 | crc32c(body) u32 | crc32c(previous 12 bytes) u32 | body
//	body  = iop*
//
// Making an Entry durable is the NFS metadata path's cost, so the file is
// laid out for fdatasync:
//
//   - Each file is preallocated (fallocate mode 0, Prealloc bytes: the
//     size is set, the space allocated as unwritten extents that read as
//     zeros). An append inside it changes neither the size nor the block
//     map, only the extents' written state. fdatasync(2) (POSIX: "all data
//     and the file attributes needed to retrieve it"; Linux: metadata
//     "needed in order to allow a subsequent data retrieval to be correctly
//     handled") covers exactly that: ext4 converts the extents the write
//     touched from unwritten to written when the write-back completes and
//     records the conversion against the inode's datasync transaction, so
//     fdatasync commits the journal when, and only when, a conversion or a
//     size change is pending; XFS does the same for its unwritten extents.
//     A crash before that commit leaves the extents unwritten: the new
//     bytes read as zeros, never as stale blocks (only the block the last
//     sync ended in is overwritten in place, as an append into it was).
//     What fdatasync skips is the mtime, which nothing here reads. An Entry that runs past the
//     preallocated end grows the file, and fdatasync then also writes the
//     size: correct, only as slow as before.
//   - The file is a new one for every freeze, not a recycled one. A
//     recycled file would skip even the extent conversion (measured 188 µs
//     against 200 µs per sync here), but its stale entries would have to be
//     told apart (the file's seq in every entry: a format change), and,
//     more importantly, overwriting written blocks in place has no journal
//     commit to order it: a power cut during one fsync could keep a later
//     block of the batch and lose an earlier one, which reads as damage
//     followed by intact entries, and Open would refuse to start. With
//     unwritten extents a batch either converts in the journal commit or
//     reads back as zeros, as an append that never reached the journal
//     did. The preallocation costs a fallocate per flush interval, off the
//     hot path (below), and the retired file is removed as before.
//   - The next file is prepared ahead of time, after a commit retires the
//     old one (off the Update and Durable paths): created, preallocated,
//     fsynced, and its directory fsynced. The rotation at the next commit
//     takes it as it is, so the first Durable after a commit pays one
//     fdatasync, not an fsync and a directory fsync. A file made without
//     that (no spare, or no preallocation on this system) gets a full fsync
//     and the directory fsync on its first sync, as before.
//   - Recovery reads a file up to its first Entry that does not check; a
//     zero tail (never written, or a torn Entry whose bytes never reached
//     the disk) ends the log like any torn tail. The search for intact
//     entries after a bad one (which would mean lost acknowledged changes)
//     only looks where the magic occurs (bytes.Index), so megabytes of zero
//     tail cost a memchr-speed pass, not a check per byte.
//
// Disk use stays bounded: the current file, the one a commit in flight
// covers, files a failed commit keeps, and one spare, each Prealloc
// bytes unless a burst grew it; Close removes the spare and an unused
// current file, and Open removes files that hold no entries and retires
// the replayed ones with the first commit that covers them.
const (
	intentMagic  = "AIN1"
	intentHdrLen = 16
	// Prealloc is the size an intent file is preallocated to: a
	// flush interval of metadata changes (a few hundred bytes each) fits
	// many times over; bulk data through the intent log grows the file.
	Prealloc = 16 << 20
)

type File struct {
	f       *os.File
	seq     uint64
	written int64   // bytes appended, in the file or still in buf
	flushed int64   // bytes written to the file
	synced  int64   // bytes known durable
	buf     []Entry // the appended entries not yet written
	bufLen  int64
	syncing bool
	dirDone bool // the file and its directory Entry are durable: fdatasync suffices
	retired bool // its changes are in the transaction log
	// failed is set when a write or sync of the file failed (a full disk):
	// what that write held may be missing, or torn, in the file, so
	// nothing after it can be promised durable by this file. Later syncs
	// fail with it until a commit, which holds the changes from memory,
	// retires the file.
	failed error
}

type Log struct {
	dir    string
	mu     sync.Mutex
	cond   *sync.Cond
	cur    *File
	files  []*File // not yet retired, oldest first
	spare  *File   // the next file (seq cur.seq+1), prepared ahead of its rotation
	closed bool
}

// Pos is the end of an appended entry: Durable waits for it.
type Pos struct {
	file *File
	end  int64
}

func Name(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.log", seq))
}

func List(dir string) ([]uint64, error) { return fileio.ListSeq(dir, ".log", 64, "intent log") }

// Read returns the entries of one file up to its first torn or
// damaged entry: a torn tail was never acknowledged as durable, and a
// preallocated file's zero tail is the end of what was written. Damage with
// intact entries after it is not a torn tail but lost acknowledged changes,
// and is reported as record.ErrCorrupt rather than silently skipped.
func Read(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("history: read intent log: %w", err)
	}
	return Parse(b, path)
}

func Parse(b []byte, path string) ([][]byte, error) {
	var out [][]byte
	off := 0
	for off < len(b) {
		body, ok := intentEntryAt(b, off)
		if !ok {
			if o := nextIntactEntry(b, off); o >= 0 {
				return nil, fmt.Errorf("%w: intent log %s is damaged at offset %d with intact entries after it (at %d); "+
					"move it aside to start without the changes it holds", record.ErrCorrupt, path, off, o)
			}
			break
		}
		out = append(out, body)
		off += intentHdrLen + len(body)
	}
	return out, nil
}

// nextIntactEntry is the offset of the first intact Entry after the bad
// one at off, or -1. Only offsets where the magic occurs can hold one, so
// it looks there alone: a zero tail of megabytes is one bytes.Index pass.
// When the bad entry's header checks (its body is what is torn or
// damaged), its length is right and its body is skipped: bytes inside it
// (say, a file holding an intent log) are data, not entries.
func nextIntactEntry(b []byte, off int) int {
	from := off + 1
	if off+intentHdrLen <= len(b) {
		h := b[off : off+intentHdrLen]
		if string(h[:4]) == intentMagic && crc32.Checksum(h[:12], record.Castagnoli) == binary.BigEndian.Uint32(h[12:]) {
			from = max(from, off+intentHdrLen+int(binary.BigEndian.Uint32(h[4:])))
		}
	}
	for from+intentHdrLen <= len(b) {
		i := bytes.Index(b[from:], []byte(intentMagic))
		if i < 0 {
			return -1
		}
		o := from + i
		if _, ok := intentEntryAt(b, o); ok {
			return o
		}
		from = o + 1
	}
	return -1
}

func intentEntryAt(b []byte, off int) ([]byte, bool) {
	if off+intentHdrLen > len(b) {
		return nil, false
	}
	h := b[off : off+intentHdrLen]
	if string(h[:4]) != intentMagic || crc32.Checksum(h[:12], record.Castagnoli) != binary.BigEndian.Uint32(h[12:]) {
		return nil, false
	}
	n := int(binary.BigEndian.Uint32(h[4:]))
	if off+intentHdrLen+n > len(b) {
		return nil, false
	}
	body := b[off+intentHdrLen : off+intentHdrLen+n]
	if crc32.Checksum(body, record.Castagnoli) != binary.BigEndian.Uint32(h[8:]) {
		return nil, false
	}
	return body, true
}

// New starts the log at file seq. A store that takes writes has that file
// made durable and its successor prepared now, off its writers' path
// (prepared). A mirror writes no entries, until a promote: it leaves both
// to the first sync and the first rotation, which do that work themselves
// for a file not prepared, and opens four fsyncs sooner.
func New(dir string, seq uint64, prepared bool) (*Log, error) {
	l := &Log{dir: dir}
	l.cond = sync.NewCond(&l.mu)
	var f *File
	var err error
	if prepared {
		f, err = l.prepare(seq)
	} else {
		f, err = l.create(seq)
	}
	if err != nil {
		return nil, err
	}
	l.cur = f
	l.files = []*File{f}
	if prepared {
		l.prepareSpare()
	}
	return l, nil
}

// create makes the file of seq, preallocated where the system can.
func (l *Log) create(seq uint64) (*File, error) {
	f, err := os.OpenFile(Name(l.dir, seq), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("history: create intent log: %w", err)
	}
	if err := fileio.Preallocate(f, Prealloc); err != nil {
		// No preallocation (unsupported, or the disk is nearly full):
		// the file grows as it is written, correct as before, only
		// slower to sync. Give back whatever part was allocated.
		if err := f.Truncate(0); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("history: create intent log: %w", err)
		}
	}
	return &File{f: f, seq: seq}, nil
}

// prepare creates the file of seq and makes it and its directory Entry
// durable, so that its syncs need only fdatasync.
func (l *Log) prepare(seq uint64) (*File, error) {
	f, err := l.create(seq)
	if err != nil {
		return nil, err
	}
	err = f.f.Sync()
	if err == nil {
		err = fileio.SyncDir(l.dir)
	}
	if err != nil {
		f.discard()
		return nil, fmt.Errorf("history: create intent log: %w", err)
	}
	f.dirDone = true
	return f, nil
}

// prepareSpare makes the file the next rotation takes, unless there is
// one. It runs off the hot paths: at open and after a commit. A failure
// leaves no spare; the rotation then creates the file itself and reports
// the error if it fails again.
func (l *Log) prepareSpare() {
	l.mu.Lock()
	if l.spare != nil || l.closed {
		l.mu.Unlock()
		return
	}
	seq := l.cur.seq + 1
	l.mu.Unlock()
	f, err := l.prepare(seq)
	if err != nil {
		return
	}
	l.mu.Lock()
	ok := l.spare == nil && !l.closed && l.cur.seq+1 == seq
	if ok {
		l.spare = f
	}
	l.mu.Unlock()
	if !ok {
		f.discard()
	}
}

// adopt takes over an intent file recovery replayed, so that the commit
// that holds its changes retires it.
func (l *Log) Adopt(seq uint64) (*File, error) {
	f, err := os.Open(Name(l.dir, seq))
	if err != nil {
		return nil, fmt.Errorf("history: open intent log: %w", err)
	}
	return &File{f: f, seq: seq, dirDone: true}, nil
}

// intentBufMax bounds the entries held in memory before they are written
// out (without fsync). Writers also count the buffer against MaxPending.
const intentBufMax = 1 << 30

// append adds one entry. It is written to the file lazily: changes that
// are committed before anyone asks for them to be durable never touch the
// intent log's disk at all, so a buffered write is written once, not twice.
func (l *Log) Append(e Entry) (Pos, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.cur
	// The Entry is the Tx's own, handed over, not copied. Its header (a
	// CRC of all of it) is made when it is written: most bulk data never
	// is, because a commit makes it durable in the packs first and the
	// file is dropped.
	e.seal()
	cur.buf = append(cur.buf, e)
	cur.bufLen += int64(intentHdrLen + e.n)
	cur.written += int64(intentHdrLen + e.n)
	if cur.bufLen > intentBufMax {
		if err := cur.writeOut(); err != nil {
			// The caller's change fails and is not made: nor may its
			// Entry stay, for a later write to make it durable.
			cur.buf = cur.buf[:len(cur.buf)-1]
			cur.bufLen -= int64(intentHdrLen + e.n)
			cur.written -= int64(intentHdrLen + e.n)
			return Pos{}, err
		}
	}
	return Pos{file: cur, end: cur.written}, nil
}

// An Entry is the body of one intent log Entry (one Update's operations,
// encoded) in pieces: the data of a large write is not copied into the
// encoding but left in the chunks the write made, which are never
// modified. Most entries are never written out (see append), and the copy
// was a tenth of a 1 MiB write's CPU, made under the store's lock.
type Entry struct {
	segs [][]byte // the body, in order
	own  []byte   // encoding appended since the last data piece: the body's end
	n    int      // the body's length
}

// Add appends to the body what enc appends to the buffer it is given (an
// operation's encoding, or its head when the caller holds its data).
func (e *Entry) Add(enc func(b []byte) []byte) {
	k := len(e.own)
	e.own = enc(e.own)
	e.n += len(e.own) - k
}

// Hold appends p as it is: the caller never modifies it.
func (e *Entry) Hold(p []byte) {
	if len(e.own) > 0 {
		e.segs = append(e.segs, e.own)
		e.own = nil // a new buffer: appending must not move what segs holds
	}
	e.segs = append(e.segs, p)
	e.n += len(p)
}

// seal ends the entry: its body is segs.
func (e *Entry) seal() {
	if len(e.own) > 0 {
		e.segs = append(e.segs, e.own)
		e.own = nil
	}
}

func intentHeader(body ...[]byte) [intentHdrLen]byte {
	var h [intentHdrLen]byte
	var crc uint32
	n := 0
	for _, p := range body {
		crc = crc32.Update(crc, record.Castagnoli, p)
		n += len(p)
	}
	copy(h[:], intentMagic)
	binary.BigEndian.PutUint32(h[4:], uint32(n))
	binary.BigEndian.PutUint32(h[8:], crc)
	binary.BigEndian.PutUint32(h[12:], crc32.Checksum(h[:12], record.Castagnoli))
	return h
}

// buffered is how many bytes wait in memory.
func (l *Log) Buffered() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.bufLen
}

// writeOut writes the buffered entries to the file; the caller holds l.mu.
func (f *File) writeOut() error {
	if f.failed != nil {
		return f.failed
	}
	if err := writeEntries(f.f, f.buf, f.flushed); err != nil {
		f.failed = fmt.Errorf("history: write intent log: %w", err)
		return f.failed
	}
	f.flushed += f.bufLen
	f.buf, f.bufLen = nil, 0
	return nil
}

// writeEntries writes entries at off, each behind its header, gathered
// into large writes: headers and small pieces copied together, large
// pieces (a write's chunks) written from where they are.
func writeEntries(f *os.File, entries []Entry, off int64) error {
	var iov [][]byte
	var small []byte // copied pieces since the last large one
	size := 0
	flush := func() error {
		if len(small) > 0 {
			iov, small = append(iov, small), nil
		}
		if len(iov) == 0 {
			return nil
		}
		err := fileio.Pwritev(f, iov, off)
		off += int64(size)
		iov, size = iov[:0], 0
		if err != nil {
			return fmt.Errorf("history: write intent log: %w", err)
		}
		return nil
	}
	for _, e := range entries {
		h := intentHeader(e.segs...)
		small = append(small, h[:]...)
		size += len(h)
		for _, p := range e.segs {
			if len(p) >= 8<<10 {
				if len(small) > 0 {
					iov, small = append(iov, small), nil
				}
				iov = append(iov, p)
			} else {
				small = append(small, p...)
			}
			size += len(p)
		}
		// Below the system's limit of 1024 pieces per call.
		if len(iov) >= 512 || size >= 4<<20 {
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
func (l *Log) Positions() []Pos {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ps []Pos
	for _, f := range l.files {
		if !f.retired && f.synced < f.written {
			ps = append(ps, Pos{file: f, end: f.written})
		}
	}
	return ps
}

// syncAll makes every position durable, oldest file first.
func (l *Log) SyncAll(ps []Pos) error {
	for _, p := range ps {
		if err := l.Sync(p); err != nil {
			return err
		}
	}
	return nil
}

// sync returns once everything up to pos is durable. One caller writes and
// fsyncs while the others wait for it; a caller whose Entry came after that
// fsync began takes the next one.
func (l *Log) Sync(pos Pos) error {
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
		if f.failed != nil {
			return f.failed
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
		err = writeEntries(f.f, data, off)
	}
	if err == nil && needDir {
		// A file not prepared ahead: make the file itself and its
		// directory Entry durable, once.
		err = f.f.Sync()
		if err == nil {
			err = fileio.SyncDir(l.dir)
		}
	} else if err == nil {
		err = fileio.Datasync(f.f)
	}
	l.mu.Lock()
	f.syncing = false
	if err == nil {
		f.synced = max(f.synced, target)
		f.dirDone = f.dirDone || needDir
	} else if f.failed == nil {
		// The entries taken out of the buffer are gone from memory and
		// perhaps torn in the file: a later sync must not write the
		// next ones behind them and call those durable.
		f.failed = fmt.Errorf("history: sync intent log: %w", err)
	}
	l.cond.Broadcast()
	if err != nil {
		return fmt.Errorf("history: sync intent log: %w", err)
	}
	return nil
}

// rotate starts the next file and returns the previous one, whose entries
// now belong to the transaction being committed.
func (l *Log) Rotate() (*File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The spare, prepared after the last commit, is the next file. Without
	// one (the last commit failed, or preparing it did), create it here.
	nf := l.spare
	l.spare = nil
	if nf == nil || nf.seq != l.cur.seq+1 {
		if nf != nil {
			nf.discard()
		}
		var err error
		if nf, err = l.create(l.cur.seq + 1); err != nil {
			return nil, err
		}
	}
	old := l.cur
	l.cur = nf
	l.files = append(l.files, nf)
	return old, nil
}

// retire drops files whose changes a durable transaction now holds, then
// prepares the file the next commit rotates to.
func (l *Log) Retire(files ...*File) {
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
		f.discard()
	}
	l.prepareSpare()
}

// discard closes the file and removes it: its changes are committed, or
// it holds none.
func (f *File) discard() {
	f.f.Close()
	os.Remove(f.f.Name())
}

// close closes the current file and removes the files that hold nothing:
// the spare, and the current file if nothing was appended to it.
// Seq is the file's sequence number: transactions name the last one they
// cover.
func (f *File) Seq() uint64 { return f.seq }

func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.spare != nil {
		l.spare.discard()
		l.spare = nil
	}
	err := l.cur.f.Close()
	if l.cur.written == 0 {
		os.Remove(l.cur.f.Name())
	}
	return err
}

// Name is the file's path.
func (f *File) Name() string { return f.f.Name() }

// Current is the file entries are appended to now.
func (l *Log) Current() *File {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// Spare is the file prepared for the next rotation, or nil.
func (l *Log) Spare() *File {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.spare
}

// FileState is what the log knows of one of its files.
type FileState struct {
	Synced   int64 // bytes known durable
	Written  int64 // bytes appended
	Retired  bool  // a committed transaction holds its changes
	Prepared bool  // the file and its directory entry are durable: fdatasync suffices
}

// State is f's state now.
func (l *Log) State(f *File) FileState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return FileState{Synced: f.synced, Written: f.written, Retired: f.retired, Prepared: f.dirDone}
}

// Abandon closes every file and removes none, as a crash leaves them; the
// log takes no more entries.
func (l *Log) Abandon() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, f := range append(append([]*File(nil), l.files...), l.spare) {
		if f != nil {
			f.f.Close()
		}
	}
}
