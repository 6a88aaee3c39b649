// Package pack stores blocks: append-only pack files of content-addressed
// blocks, each behind a header that makes a pack self-describing, read
// through shared read-only mappings of the packs (packmap.go), with a
// cache of checked copies for the reads that need one (cache.go). A block's
// place is a Loc, which names the volume that holds the pack.
package pack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/asof/asof/history/internal/fileio"
	"github.com/asof/asof/history/internal/record"
)

// ErrWouldBlock: a read asked not to wait for the disk would have to.
var ErrWouldBlock = errors.New("history: data not in memory")

// Loc says where a block lives: volume, pack file, offset of its data.
type Loc struct {
	Vol    uint16
	Pack   uint32
	Off    uint64
	Length uint32
}

// Pack files hold blocks back to back, each behind a header that makes a
// pack self-describing, so the block index can be rebuilt from the packs:
//
//	magic "ABK2" | length u32 | sha256 [32] | crc32c(data) u32 | crc32c of the previous 44 bytes | data
//
// Reads check the data's CRC-32C (hardware-assisted, many GB/s), so damage
// is never served; verify and rebuild check the SHA-256 as well.
const (
	packMagic = "ABK2"
	HdrLen    = 4 + 4 + record.HashLen + 4 + 4
)

// MaxSize is where a pack ends (tests make it small).
var MaxSize int64 = 256 << 20

// Store writes packs in one directory, volume vol (the data directory's
// volumes/0), and reads packs from there and from the other volumes it is
// told of (SetVolume): directories, mapped as this one is, and remote
// volumes (an S3 bucket), read by byte range into memory. A pack keeps its
// sequence number wherever it is moved, and numbers are never reused, so
// any copy of pack seq holds the same bytes: open files and mappings are
// kept by number alone.
type Store struct {
	dir string
	vol uint16

	vmu  sync.RWMutex      // guards srcs
	srcs map[uint16]source // the other volumes

	mu      sync.Mutex
	cur     *os.File
	curSeq  uint32
	curOff  int64
	synced  int64               // how much of cur a sync made durable: what a commit may refer to
	dirty   map[uint32]*os.File // written since the last sync
	newFile bool                // a pack was created since the last sync
	// failures counts the writes that failed: blocks put before one, by
	// any caller, may be lost, and their caller's sync must say so
	// (lostSince), not only the sync of the caller whose write it was.
	failures uint64
	lastErr  error

	// Blocks put but not yet written to cur: header and data slices,
	// written with one pwritev from bufOff. The data slices are the
	// caller's, which must not change them (a commit's frozen chunks, a
	// rewrite's read buffer); the headers share one slab.
	iov    [][]byte
	bufOff int64
	bufLen int
	hdrs   []byte

	rmu     sync.RWMutex
	files   map[uint32]*os.File // open for reading
	maps    map[uint32]*Map     // their mappings, for reads (packmap.go)
	mapTick atomic.Uint64
}

func Open(dir string, vol uint16) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("history: volume %s: %w", dir, err)
	}
	p := &Store{dir: dir, vol: vol, dirty: map[uint32]*os.File{}, files: map[uint32]*os.File{}, maps: map[uint32]*Map{},
		srcs: map[uint16]source{}}
	seqs, err := p.List()
	if err != nil {
		return nil, err
	}
	if len(seqs) > 0 {
		p.curSeq = seqs[len(seqs)-1]
	}
	return p, nil
}

func (p *Store) Name(seq uint32) string {
	return filepath.Join(p.dir, fmt.Sprintf("%08x.pack", seq))
}

// Remote reads packs of a volume that is not a local directory.
type Remote interface {
	ReadAt(ctx context.Context, seq uint32, p []byte, off int64) (int, error)
}

// source is where a volume other than the store's own is read from: a
// directory (mapped, as the store's own) or a remote.
type source struct {
	dir    string
	remote Remote
}

// SetVolume tells the store where volume vol's packs are read from: a
// local directory, or remote.
func (p *Store) SetVolume(vol uint16, dir string, remote Remote) {
	p.vmu.Lock()
	defer p.vmu.Unlock()
	p.srcs[vol] = source{dir: dir, remote: remote}
}

// DropVolume forgets volume vol (removed, or no longer reachable).
func (p *Store) DropVolume(vol uint16) {
	p.vmu.Lock()
	defer p.vmu.Unlock()
	delete(p.srcs, vol)
}

// errNoVolume: a location names a volume the store was not told of.
var errNoVolume = errors.New("history: pack on a volume that is not open")

// where is the path of pack seq on volume vol, or its remote.
func (p *Store) where(vol uint16, seq uint32) (string, Remote, error) {
	if vol == p.vol {
		return p.Name(seq), nil, nil
	}
	p.vmu.RLock()
	src, ok := p.srcs[vol]
	p.vmu.RUnlock()
	if !ok {
		return "", nil, fmt.Errorf("%w (volume %d, pack %d): %w", errNoVolume, vol, seq, syscall.EIO)
	}
	if src.remote != nil {
		return "", src.remote, nil
	}
	return filepath.Join(src.dir, fmt.Sprintf("%08x.pack", seq)), nil, nil
}

// Floor makes every pack started from now on numbered above seq: packs
// moved to other volumes keep their numbers, which must not be used again.
func (p *Store) Floor(seq uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil && seq > p.curSeq {
		p.curSeq = seq
	}
}

// Forget closes and unmaps pack seq, whose copy here is about to be
// deleted (it moved to another volume); readers holding its mapping keep
// it until they let go.
func (p *Store) Forget(seq uint32) {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	if f := p.files[seq]; f != nil {
		f.Close()
		delete(p.files, seq)
	}
	p.unmapLocked(seq)
}

func (p *Store) List() ([]uint32, error) { return fileio.ListSeq32(p.dir, ".pack", "packs") }

// sealedBelow is the first pack that may still be appended to: every pack
// before it is complete. After Open nothing is appended to the newest pack
// (its tail may be torn): a new one starts at the first put.
func (p *Store) SealedBelow() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return p.curSeq + 1
	}
	return p.curSeq
}

// seal makes the next put start a new pack if seq is still the one being
// appended to, so that seq can be rewritten.
func (p *Store) Seal(seq uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && p.curSeq == seq {
		err := p.flush()
		p.cur = nil
		return err
	}
	return nil
}

// remove deletes a complete pack the index no longer points into. A reader
// that found a block there just before gets an error and looks again
// (Store.chunkData).
func (p *Store) Remove(seq uint32) error {
	p.rmu.Lock()
	if f := p.files[seq]; f != nil {
		f.Close()
		delete(p.files, seq)
	}
	p.unmapLocked(seq)
	p.rmu.Unlock()
	if err := os.Remove(p.Name(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("history: remove pack: %w", err)
	}
	return fileio.SyncDir(p.dir)
}

// Blocks are gathered and written with one system call per this many
// bytes (or iovecs: Linux takes at most 1024 per call): a 16 KiB block
// written alone costs a call and a copy into a fresh buffer.
const (
	packWriteBytes = 4 << 20
	packWriteIovs  = 1024
)

// put appends a block whose hash and CRC are known; data must not change
// afterwards. It is not readable until flush, nor durable until sync.
func (p *Store) Put(h record.Hash, crc uint32, data []byte) (Loc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || p.curOff+int64(HdrLen+len(data)) > MaxSize {
		if err := p.rotate(); err != nil {
			return Loc{}, err
		}
	}
	if len(p.iov)+2 > packWriteIovs || p.bufLen+HdrLen+len(data) > packWriteBytes {
		if err := p.flush(); err != nil {
			return Loc{}, err
		}
	}
	if len(p.hdrs)+HdrLen > cap(p.hdrs) {
		p.hdrs = make([]byte, 0, HdrLen*packWriteIovs/2)
	}
	hdr := p.hdrs[len(p.hdrs) : len(p.hdrs)+HdrLen]
	p.hdrs = p.hdrs[:len(p.hdrs)+HdrLen]
	copy(hdr, packMagic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(data)))
	copy(hdr[8:], h[:])
	binary.BigEndian.PutUint32(hdr[40:], crc)
	binary.BigEndian.PutUint32(hdr[44:], crc32.Checksum(hdr[:44], record.Castagnoli))
	if len(p.iov) == 0 {
		p.bufOff = p.curOff
	}
	p.iov = append(p.iov, hdr, data)
	p.bufLen += HdrLen + len(data)
	loc := Loc{Vol: p.vol, Pack: p.curSeq, Off: uint64(p.curOff) + HdrLen, Length: uint32(len(data))}
	p.curOff += int64(HdrLen + len(data))
	p.dirty[p.curSeq] = p.cur
	return loc, nil
}

// flush writes the gathered blocks to the current pack. If that fails the
// pack is sealed, so no later block lands behind a gap that would cut a
// scan of the pack short, and cut back to what a sync made durable: the
// blocks after that were in no frame yet, and the space they took (the
// write may have failed for the want of it) is given back. A pack left
// with nothing is removed, so that a commit retried on a full disk does
// not leave an empty pack behind at every attempt.
func (p *Store) flush() error {
	if len(p.iov) == 0 {
		return nil
	}
	iov, off := p.iov, p.bufOff
	p.iov, p.bufLen, p.hdrs = p.iov[:0], 0, nil
	err := fileio.Pwritev(p.cur, iov, off)
	clear(iov) // let go of the callers' data
	if err != nil {
		err = fmt.Errorf("history: write pack: %w", err)
		p.failures++
		p.lastErr = err
		p.cutBack()
		return err
	}
	startWriteback(p.cur, off, p.curOff-off)
	return nil
}

// cutBack seals the current pack after a failed write, keeping only what
// a sync made durable. Failing to cut it changes nothing for correctness:
// the tail is garbage that no frame points into, as after a crash.
func (p *Store) cutBack() {
	f, seq := p.cur, p.curSeq
	p.cur = nil
	if p.synced > 0 {
		os.Truncate(p.Name(seq), p.synced)
		return
	}
	delete(p.dirty, seq)
	p.rmu.Lock()
	if rf := p.files[seq]; rf != nil && rf != f {
		rf.Close()
	}
	delete(p.files, seq)
	p.unmapLocked(seq)
	p.rmu.Unlock()
	f.Close()
	if os.Remove(p.Name(seq)) == nil {
		fileio.SyncDir(p.dir)
	}
}

// mark is where a caller stands before it puts blocks: lostSince(mark)
// tells, after its sync, whether a write failed meanwhile.
func (p *Store) Mark() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failures
}

// lostSince reports a write that failed after mark: blocks put since may
// not be in their pack, whoever's write it was.
func (p *Store) LostSince(mark uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures != mark {
		return fmt.Errorf("history: blocks lost to a failed pack write: %w", p.lastErr)
	}
	return nil
}

// rotate starts a new pack after the newest one. A partly written pack left
// by a crash is never appended to: its tail may be torn.
func (p *Store) rotate() error {
	if p.cur != nil {
		if err := p.flush(); err != nil {
			return err
		}
	}
	seqs, err := p.List()
	if err != nil {
		return err
	}
	// Never a number used before, even of a pack removed since: a place
	// remembered in a pack that is gone must not find another block there.
	next := p.curSeq + 1
	if len(seqs) > 0 {
		next = max(next, seqs[len(seqs)-1]+1)
	}
	f, err := os.OpenFile(p.Name(next), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("history: new pack: %w", err)
	}
	p.cur, p.curSeq, p.curOff, p.synced, p.newFile = f, next, 0, 0, true
	p.rmu.Lock()
	p.files[next] = f
	p.rmu.Unlock()
	return nil
}

// sync makes every block put so far readable and durable. A caller that
// must know its own blocks are among them asks lostSince too.
func (p *Store) Sync() error {
	p.mu.Lock()
	if err := p.flush(); err != nil {
		p.mu.Unlock()
		return err
	}
	dirty, newFile := p.dirty, p.newFile
	p.dirty, p.newFile = map[uint32]*os.File{}, false
	cur, seq, off := p.cur, p.curSeq, p.curOff
	p.mu.Unlock()
	for _, f := range dirty {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("history: sync pack %s: %w", f.Name(), err)
		}
	}
	if newFile {
		if err := fileio.SyncDir(p.dir); err != nil {
			return err
		}
	}
	p.mu.Lock()
	if cur != nil && p.cur == cur && p.curSeq == seq {
		p.synced = max(p.synced, off)
	}
	p.mu.Unlock()
	return nil
}

func (p *Store) file(vol uint16, seq uint32) (*os.File, error) {
	p.rmu.RLock()
	f := p.files[seq]
	p.rmu.RUnlock()
	if f != nil {
		return f, nil
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	if f = p.files[seq]; f != nil {
		return f, nil
	}
	path, _, err := p.where(vol, seq)
	if err != nil {
		return nil, err
	}
	if f, err = os.Open(path); err != nil {
		return nil, fmt.Errorf("history: open pack: %w", err)
	}
	p.files[seq] = f
	return f, nil
}

// get reads a block and checks it (viewRun), into memory of its own.
// With nowait, a block not in the page cache is ErrWouldBlock.
func (p *Store) Get(loc Loc, h record.Hash, nowait bool) ([]byte, error) {
	views, m, err := p.ViewRun([]Loc{loc}, []record.Hash{h}, nowait, nil)
	if err != nil {
		return nil, err
	}
	defer m.Release()
	data := make([]byte, loc.Length)
	if err := Fault(func() { copy(data, views[0]) }); err != nil {
		return nil, err
	}
	return data, nil
}

// blockIntact checks a block as read from a pack: hdr is a block header
// (magic, its own CRC) that names block h with data's length, and data
// matches the CRC it gives.
func blockIntact(hdr, data []byte, h record.Hash) bool {
	hh, n, ok := parseHeader(hdr)
	return ok && n == uint32(len(data)) && hh == h && crc32.Checksum(data, record.Castagnoli) == binary.BigEndian.Uint32(hdr[40:])
}

// viewRun checks blocks that lie back to back in one pack, starting at
// locs[0], where they lie in the pack's mapping, and appends their data
// there to views: no copy. The caller holds the returned mapping until it
// is done with the views, and then releases it. Each block's header must
// name it and its data match the header's CRC. With nowait, blocks not
// all in the page cache are ErrWouldBlock, and nothing is touched.
func (p *Store) ViewRun(locs []Loc, hashes []record.Hash, nowait bool, views [][]byte) ([][]byte, *Map, error) {
	m, err := p.mapped(locs[0].Vol, locs[0].Pack)
	if errors.Is(err, errRemote) {
		if nowait {
			return nil, nil, ErrWouldBlock
		}
		m, err = p.readRemote(locs)
	}
	if err != nil {
		return nil, nil, err
	}
	last := locs[len(locs)-1]
	run, ok := m.span(Loc{Off: locs[0].Off, Length: uint32(last.Off + uint64(last.Length) - locs[0].Off)})
	if !ok {
		m.Release()
		return nil, nil, fmt.Errorf("%w: block %s at %d is past the end of pack %d", record.ErrCorrupt, hashes[0], locs[0].Off, locs[0].Pack)
	}
	if nowait {
		in, err := resident(run)
		if err == nil && !in {
			err = ErrWouldBlock
		}
		if err != nil {
			m.Release()
			return nil, nil, err
		}
	}
	n := len(views)
	var damaged error
	err = Fault(func() {
		for i, loc := range locs {
			b, _ := m.span(loc)
			hdr, data := b[:HdrLen], b[HdrLen:]
			if !blockIntact(hdr, data, hashes[i]) {
				damaged = fmt.Errorf("%w: block %s in pack %d at %d", record.ErrCorrupt, hashes[i], loc.Pack, loc.Off)
				return
			}
			views = append(views, data)
		}
	})
	if err == nil {
		err = damaged
	}
	if err != nil {
		m.Release()
		return views[:n], nil, err
	}
	return views, m, nil
}

// scan walks every block of every pack in order. A damaged header or a
// block whose data does not match its hash is reported through fn with err
// set; a damaged header ends the scan of that pack, since what follows it
// cannot be framed.
// With full set the data is hashed with SHA-256 too (verify); otherwise
// its CRC is checked (rebuild).
func (p *Store) Scan(full bool, fn func(h record.Hash, loc Loc, err error) error) error {
	seqs, err := p.List()
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		if err := p.ScanPack(seq, math.MaxInt64, full, fn); err != nil {
			return err
		}
	}
	return nil
}

// sizes is the size of every pack file now.
func (p *Store) Sizes() (map[uint32]int64, error) {
	seqs, err := p.List()
	if err != nil {
		return nil, err
	}
	m := make(map[uint32]int64, len(seqs))
	for _, seq := range seqs {
		st, err := os.Stat(p.Name(seq))
		if err != nil {
			return nil, fmt.Errorf("history: pack: %w", err)
		}
		m[seq] = st.Size()
	}
	return m, nil
}

// ScanPack calls fn with each block of pack seq in its first limit bytes.
func (p *Store) ScanPack(seq uint32, limit int64, full bool, fn func(h record.Hash, loc Loc, err error) error) error {
	return ScanFile(p.Name(seq), p.vol, seq, limit, full, fn)
}

// ScanFile is ScanPack of a copy of pack seq at path, on volume vol.
func ScanFile(path string, vol uint16, seq uint32, limit int64, full bool, fn func(h record.Hash, loc Loc, err error) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("history: open pack: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := min(st.Size(), limit)
	var off int64
	hdr := make([]byte, HdrLen)
	for off < size {
		if _, err := f.ReadAt(hdr, off); err != nil {
			if errors.Is(err, io.EOF) {
				// A torn tail: a block whose write never finished, so
				// nothing durable can point at it.
				return nil
			}
			return err
		}
		h, n, ok := parseHeader(hdr)
		if !ok {
			return fn(record.Hash{}, Loc{Vol: vol, Pack: seq, Off: uint64(off)},
				fmt.Errorf("%w: pack %s: bad block header at %d", record.ErrCorrupt, f.Name(), off))
		}
		loc := Loc{Vol: vol, Pack: seq, Off: uint64(off) + HdrLen, Length: n}
		if off+HdrLen+int64(n) > size {
			return nil // torn tail
		}
		data := make([]byte, n)
		var cerr error
		if _, err := f.ReadAt(data, int64(loc.Off)); err != nil {
			cerr = err
		} else if crc32.Checksum(data, record.Castagnoli) != binary.BigEndian.Uint32(hdr[40:]) || (full && record.HashOf(data) != h) {
			cerr = fmt.Errorf("%w: block %s in %s at %d", record.ErrCorrupt, h, f.Name(), loc.Off)
		}
		if err := fn(h, loc, cerr); err != nil {
			return err
		}
		off += HdrLen + int64(n)
	}
	return nil
}

// parseHeader reads a block header (HdrLen bytes): the block's hash and
// length, and whether the header is intact (its magic and its own CRC).
func parseHeader(hdr []byte) (h record.Hash, n uint32, ok bool) {
	if string(hdr[:4]) != packMagic || crc32.Checksum(hdr[:44], record.Castagnoli) != binary.BigEndian.Uint32(hdr[44:]) {
		return h, 0, false
	}
	copy(h[:], hdr[8:40])
	return h, binary.BigEndian.Uint32(hdr[4:]), true
}

// ScanHeaders calls fn with each block of the pack file at path (pack seq
// on volume vol), from the block headers alone: each header's own CRC is
// checked, the data is not read. It is what a pack holds, cheaply, for a
// caller that already trusts the data (a local file whose blocks are
// checked on every read). A bad header is an error, where ScanFile would
// hand it to fn; a torn tail ends the scan, as it does there.
func ScanHeaders(path string, vol uint16, seq uint32, fn func(h record.Hash, loc Loc) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("history: open pack: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	hdr := make([]byte, HdrLen)
	for off := int64(0); off+HdrLen <= size; {
		if _, err := f.ReadAt(hdr, off); err != nil {
			return fmt.Errorf("history: pack %s: %w", f.Name(), err)
		}
		h, n, ok := parseHeader(hdr)
		if !ok {
			return fmt.Errorf("%w: pack %s: bad block header at %d", record.ErrCorrupt, f.Name(), off)
		}
		if off+HdrLen+int64(n) > size {
			return nil // torn tail
		}
		if err := fn(h, Loc{Vol: vol, Pack: seq, Off: uint64(off) + HdrLen, Length: n}); err != nil {
			return err
		}
		off += HdrLen + int64(n)
	}
	return nil
}

// locate maps every intact block to where it is, the first copy winning.
func (p *Store) Locate() (map[record.Hash]Loc, error) {
	m := map[record.Hash]Loc{}
	err := p.Scan(false, func(h record.Hash, loc Loc, err error) error {
		if _, seen := m[h]; err == nil && !seen {
			m[h] = loc
		}
		return nil
	})
	return m, err
}

func (p *Store) Close() error {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	var first error
	for _, f := range p.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.files = map[uint32]*os.File{}
	for seq := range p.maps {
		p.unmapLocked(seq)
	}
	p.cur = nil
	return first
}

// storedBytes is the size of every pack: the space blocks take on disk.
func (p *Store) StoredBytes() (int64, error) {
	seqs, err := p.List()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range seqs {
		st, err := os.Stat(p.Name(s))
		if err != nil {
			return 0, err
		}
		n += st.Size()
	}
	return n, nil
}

// dropCached asks the kernel to drop the page cache of blocks a commit
// superseded (Store.dropper). Only history reads them now, seldom,
// and the pages freed are the ones the next blocks are written into:
// without it every block stored lands in pages the system has not used
// yet, which cost far more to fill on a virtual machine whose memory the
// host backs lazily. A hint: pages a reader has mapped, and the pages at
// the ends of a run that neighbouring blocks share, stay.
func (p *Store) DropCached(locs []Loc) {
	if len(locs) == 0 {
		return
	}
	sort.Slice(locs, func(i, j int) bool {
		if locs[i].Pack != locs[j].Pack {
			return locs[i].Pack < locs[j].Pack
		}
		return locs[i].Off < locs[j].Off
	})
	drop := func(seq uint32, start, end int64) {
		p.rmu.RLock()
		f := p.files[seq]
		p.rmu.RUnlock()
		if f != nil {
			dropPages(f, start, end-start)
		}
	}
	// Neighbouring blocks (a file written in order) go in one call.
	seq, start, end := locs[0].Pack, int64(locs[0].Off)-HdrLen, int64(locs[0].Off)+int64(locs[0].Length)
	for _, l := range locs[1:] {
		s, e := int64(l.Off)-HdrLen, int64(l.Off)+int64(l.Length)
		if l.Pack == seq && s <= end {
			end = max(end, e)
			continue
		}
		drop(seq, start, end)
		seq, start, end = l.Pack, s, e
	}
	drop(seq, start, end)
}

// Vol is the volume this store holds.
func (p *Store) Vol() uint16 { return p.vol }

// Hold keeps every put and sync waiting until release: a test stops a
// commit that way between the freeze of its changes and its log frame.
func (p *Store) Hold() (release func()) {
	p.mu.Lock()
	return p.mu.Unlock
}
