package pack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/asof/asof/history/internal/record"
)

// Reads see packs through read-only shared mappings, not pread: a reader
// checks a block where it lies in the page cache and hands the slice on,
// so a server can send file data to the socket straight from there. With
// pread every byte read was copied once more, into a buffer, before the
// socket's own copy (a quarter of the server's time on 1 MiB NFS reads).
//
// A pack is mapped once, whole, up to MaxSize (past its end while it
// is still being appended to: the file grows into the mapping, and the
// shared mapping sees every write at once). Nothing is read past the
// written end: a block is read only once a commit has flushed it.
//
// A mapping is counted: the pack store holds one reference while the pack
// exists, each reader one until it is done with the slices. A removed
// pack (the cleaner's) is unmapped when its last reader lets go, so no
// slice ever points into memory that has gone.
//
// Touching a mapping can fault where pread would return an error: the
// disk fails to page a block in, or the file is shorter than a bad
// location says. Such faults are turned into errors (fault), never a
// crash. One risk remains that pread did not have: between a block's
// check and the socket's copy of it, the kernel could drop the page and
// read it again from the disk; that copy goes out unchecked. The window
// is microseconds long and the page has just been read, so it is the last
// the kernel would drop.
type Map struct {
	heap bool   // data is a buffer read from a remote volume, not a mapping
	base uint64 // the pack offset data starts at (0 for a mapping)
	data []byte
	refs atomic.Int64
	used atomic.Uint64 // when it was last asked for (Store.mapTick)
}

// MaxMaps bounds the packs mapped at once (256 GiB of packs by default):
// the kernel allows a process about 65,000 mappings (vm.max_map_count),
// and a 32-bit process has 2-3 GiB of address space for everything.
// Past it the mapping asked for least recently goes (its readers keep it
// until they are done).
var MaxMaps = 1024

func init() {
	if math.MaxInt == math.MaxInt32 {
		MaxMaps = 4
	}
}

func (m *Map) Release() {
	if m.refs.Add(-1) == 0 && !m.heap {
		unix.Munmap(m.data)
	}
}

// mapFile maps f whole, read-only, to at least size bytes.
func mapFile(f *os.File, size int64) (*Map, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := max(st.Size(), size)
	page := int64(os.Getpagesize())
	n = (n + page - 1) &^ (page - 1)
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var data []byte
	var merr error
	if err := rc.Control(func(fd uintptr) {
		data, merr = unix.Mmap(int(fd), 0, int(n), unix.PROT_READ, unix.MAP_SHARED)
	}); err != nil {
		return nil, err
	}
	if merr != nil {
		return nil, merr
	}
	m := &Map{data: data}
	m.refs.Store(1)
	return m, nil
}

// errRemote: the pack is on a remote volume, which is not mapped.
var errRemote = errors.New("pack on a remote volume")

// readRemote reads the run of blocks locs (back to back in one pack of a
// remote volume) into memory, as a Map of its own that viewRun checks as
// it checks a mapping. It holds the run only: offsets in it are the
// pack's, less where the run starts, so the Map's data starts at the
// run's first header; span is relative to base.
func (p *Store) readRemote(locs []Loc) (*Map, error) {
	first, last := locs[0], locs[len(locs)-1]
	_, remote, err := p.where(first.Vol, first.Pack)
	if err != nil {
		return nil, err
	}
	if first.Off < HdrLen {
		return nil, fmt.Errorf("%w: block at %d in pack %d", record.ErrCorrupt, first.Off, first.Pack)
	}
	start := first.Off - HdrLen
	buf := make([]byte, last.Off+uint64(last.Length)-start)
	n, err := remote.ReadAt(context.Background(), first.Pack, buf, int64(start))
	if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		return nil, fmt.Errorf("history: read pack %d: %w", first.Pack, err)
	}
	m := &Map{heap: true, data: buf, base: start}
	m.refs.Store(1)
	return m, nil
}

// mapped returns the mapping of pack seq with a reference for the caller.
func (p *Store) mapped(vol uint16, seq uint32) (*Map, error) {
	p.rmu.RLock()
	m := p.maps[seq]
	if m != nil {
		m.refs.Add(1) // under rmu: remove cannot drop the store's reference meanwhile
		m.used.Store(p.mapTick.Add(1))
	}
	p.rmu.RUnlock()
	if m != nil {
		return m, nil
	}
	_, remote, err := p.where(vol, seq)
	if err != nil {
		return nil, err
	}
	if remote != nil {
		return nil, errRemote
	}
	f, err := p.file(vol, seq)
	if err != nil {
		return nil, err
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	if m = p.maps[seq]; m == nil {
		if p.files[seq] != f {
			return nil, fmt.Errorf("history: pack %s went while it was opened", f.Name())
		}
		if len(p.maps) >= MaxMaps {
			p.unmapLocked(p.leastUsedLocked())
		}
		if m, err = mapFile(f, MaxSize); err != nil {
			return nil, fmt.Errorf("history: map pack %s: %w", f.Name(), err)
		}
		p.maps[seq] = m
	}
	m.refs.Add(1)
	m.used.Store(p.mapTick.Add(1))
	return m, nil
}

// leastUsedLocked is the mapped pack asked for least recently; p.rmu is
// held. A scan: it runs only when a pack is mapped past MaxMaps.
func (p *Store) leastUsedLocked() uint32 {
	var seq uint32
	oldest := uint64(math.MaxUint64)
	for s, m := range p.maps {
		if u := m.used.Load(); u < oldest {
			seq, oldest = s, u
		}
	}
	return seq
}

// unmapLocked drops the store's reference to pack seq's mapping; p.rmu is
// held.
func (p *Store) unmapLocked(seq uint32) {
	if m := p.maps[seq]; m != nil {
		delete(p.maps, seq)
		m.Release()
	}
}

// span is the part of m that a block's header and data take.
func (m *Map) span(loc Loc) ([]byte, bool) {
	if loc.Off < HdrLen+m.base || loc.Off+uint64(loc.Length) > m.base+uint64(len(m.data)) {
		return nil, false
	}
	return m.data[loc.Off-HdrLen-m.base : loc.Off+uint64(loc.Length)-m.base], true
}

// fault runs fn, which reads mapped pack memory, and turns a fault there
// (SIGBUS: an I/O error paging it in, or a read past the file's end) into
// an error, as pread would have returned one.
func Fault(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			e, ok := r.(interface{ Addr() uintptr })
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("history: fault reading a pack at %#x: %w", e.Addr(), syscall.EIO)
		}
	}()
	fn()
	return nil
}

// Mapped is how many packs are mapped now (at most MaxMaps).
func (p *Store) Mapped() int {
	p.rmu.RLock()
	defer p.rmu.RUnlock()
	return len(p.maps)
}
