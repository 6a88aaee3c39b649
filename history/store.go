package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/intent"
	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	"github.com/asof/asof/history/internal/volume"
	bolt "go.etcd.io/bbolt"
)

// Options tunes a store. The zero value is usable.
type Options struct {
	// FlushInterval is how often pending changes commit as one
	// transaction: the finest grain of history. Default 1s.
	FlushInterval time.Duration
	// MaxPending is how many bytes of changes may wait for the next
	// transaction before a writer commits early. Default 128 MiB.
	MaxPending int64
	// Clock gives the wall-clock time transaction ids are made from.
	// Tests inject one to simulate hours and days.
	Clock func() time.Time
	// Logger receives recovery and commit problems. Default slog.Default().
	Logger *slog.Logger
	// ChunkSize is the file-offset grain of data records for a new store
	// (default ChunkSize); an existing store keeps the one it was made
	// with (see FORMAT).
	ChunkSize int
	// VolumeCacheBytes bounds the local cache of S3 volumes' packs,
	// <data>/cache (default VolumeCacheBytes).
	VolumeCacheBytes int64
}

// Store is an open history store in one data directory.
//
// Lock order: a goroutine that holds more than one takes them in this
// order, and never an earlier one while it holds a later one:
//
//	pruneMu -> moveMu -> copyMu -> commitMu -> logMu -> mu -> vmu
//
// pruneMu: one cleaner pass or verify at a time (and Close waits for it).
// copyMu: a cleaner batch excludes copies of the past until committed
// (HoldCleaner, taken shared by fs around Update and Commit).
// commitMu: one commit, or cleaner frame, at a time.
// moveMu: one pack move at a time (the mover, a drain, a volume's
// removal); the cleaner's pack rewrite and verify hold it too.
// vmu: the volume set (volumes.go); held briefly, never across I/O.
// logMu: readers of old log segments (Changes, Verify) against the
// cleaner's rewrite of them.
// mu: the pending overlay and the fields below it; held briefly, never
// across I/O. The mechanisms' own locks (the intent log's, the pack
// store's, the caches') are taken inside their packages, last of all.
type Store struct {
	dir   string
	opts  Options
	log   *slog.Logger
	index *bolt.DB
	tlog  *txlog.Log
	packs *pack.Store
	ilog  *intent.Log
	lock  *os.File
	cache *pack.BlockCache
	locs  *locCache
	stats statsCache
	chunk int // the store's chunk size, from FORMAT

	// The store's identity (lineage.go) and where a mirror's own frames
	// may go (apply.go): lineage is guarded by mu; storeID never changes.
	lineage    string
	storeID    string
	mirror     atomic.Bool
	mirrorBase atomic.Uint64 // the newest of the source's transactions it holds, or less
	applying   atomic.Bool   // an Applier is open
	// unappliable is why no batch may be applied until the store is
	// opened again (a failed batch its log could not take back); set once.
	unappliable atomic.Pointer[error]

	mu       sync.RWMutex // guards the fields below and the pending overlay
	pending  *overlay
	frozen   *overlay
	lastTID  TID   // newest committed transaction
	nextObj  ObjID // next object id to hand out
	objHigh  ObjID // ids below this are reserved in a durable record
	closed   bool
	broken   error          // set when a commit failed after its frame was durable
	retained []*intent.File // intent files whose changes are not yet committed
	// unindexed is what the commit that set broken had left to do once
	// the index has its frame (repairIndex): the intent files it covers,
	// and the last of them.
	unindexed       []*intent.File
	unindexedIntent uint64

	lastIntent uint64        // the intent file the newest transaction covers
	packFloor  atomic.Uint32 // the first pack the commit in flight may write to; MaxUint32 when none

	gone       atomic.Pointer[collapses] // moments the cleaner collapsed
	pruneMu    sync.Mutex                // one cleaner pass at a time
	copyMu     sync.RWMutex              // held by a cleaner batch; copies of the past hold it shared until committed
	prunedOnce bool                      // a pass has completed since Open (under pruneMu)
	logMu      sync.RWMutex              // held to read old log segments; the cleaner rewrites them under it

	commits  atomic.Uint64 // transactions committed since Open
	commitMu sync.Mutex    // one commit at a time
	// ended counts commit attempts that ended, endedErr is the last one's
	// error, and endedCond (on mu) wakes the writers waiting for one.
	ended     uint64
	endedErr  error
	endedCond *sync.Cond
	kick      chan struct{} // commit now, before the flush interval is up
	stop      chan struct{}
	done      chan struct{}

	drops        chan []Hash    // blocks commits ended, for the dropper
	dropsDone    chan struct{}  // the dropper has stopped
	dropsPending sync.WaitGroup // batches sent and not yet dropped (tests wait)

	vcache    *volume.Cache // S3 volumes' read cache
	moveMu    sync.Mutex
	vmu       sync.Mutex
	vols      map[uint16]*vol
	volNext   uint16
	moverKick chan struct{}
	moverDone chan struct{}
}

const objReserve = 1024

// Open opens or creates the store in dir. It recovers from a crash: a torn
// log tail is cut, committed transactions missing from the index are
// replayed into it, and the intent log is replayed into pending changes.
func Open(dir string, opts Options) (*Store, error) {
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 128 << 20
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = ChunkSize
	}
	for _, d := range []string{dir, filepath.Join(dir, "log"), filepath.Join(dir, "intent")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("history: create %s: %w", d, err)
		}
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	format, err := loadFormat(dir, opts.ChunkSize)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger, lock: lock, pending: newOverlay(), chunk: format.chunk,
		cache: pack.NewBlockCache(pack.BlockCacheBytes / format.chunk), locs: newLocCache(locCacheMax),
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1),
		drops: make(chan []Hash, 4), dropsDone: make(chan struct{}),
		moverKick: make(chan struct{}, 1), moverDone: make(chan struct{})}
	s.endedCond = sync.NewCond(&s.mu)
	s.packFloor.Store(math.MaxUint32)
	id, err := loadIdentity(dir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lineage, s.storeID = id.lineage, id.store
	s.mirror.Store(id.mirror)
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.openMirror(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.keepReserve()
	go s.dropper()
	go s.flusher()
	go s.mover()
	return s, nil
}

func (s *Store) recover() error {
	var err error
	// Scratch a verify left when the process stopped under it.
	for _, pattern := range []string{"asof-verify-*", "verify-*"} {
		old, _ := filepath.Glob(filepath.Join(s.dir, pattern))
		for _, d := range old {
			os.RemoveAll(d)
		}
	}
	if s.packs, err = pack.Open(filepath.Join(s.dir, "volumes", "0"), 0); err != nil {
		return err
	}
	if err := s.openVolumes(); err != nil {
		return err
	}
	if s.index, err = index.Open(filepath.Join(s.dir, "index.db"), false); err != nil {
		return err
	}
	// A pack move a crash interrupted, and the numbers moved packs took.
	if err := s.finishMove(context.Background()); err != nil {
		s.log.Error("history: a pack move waits for its volume", "err", err)
	}
	if err := s.floorPacks(); err != nil {
		return err
	}
	st, err := s.indexState()
	if err != nil {
		return err
	}
	// A log segment the cleaner was swapping when the process stopped.
	if err := s.finishCompaction(); err != nil {
		return err
	}
	// Frames the index has applied were durable: the log is opened after
	// them, and damage in them is Verify's to find (txlog.Open). A mirror
	// writes a batch of frames to one sync (apply.go): damage anywhere
	// after them is cut, and pulled again.
	tail := txlog.Torn
	if s.mirror.Load() {
		tail = txlog.Refetchable
	}
	if s.tlog, _, err = txlog.Open(filepath.Join(s.dir, "log"), st.Next, tail); err != nil {
		return err
	}
	if err := s.catchUpIndexOrReserve(); err != nil {
		return err
	}
	// The index has applied every frame now: its state is the newest
	// transaction's.
	if st, err = s.indexState(); err != nil {
		return err
	}
	var intentSeq uint64
	s.nextObj, s.objHigh = RootID+1, RootID+1
	if st.Applied != 0 {
		s.lastTID, intentSeq = st.Applied, st.IntentSeq
		s.lastIntent = intentSeq
		s.nextObj, s.objHigh = st.ObjHigh, st.ObjHigh
	}
	// Replay the intent log: changes acknowledged as durable but not yet
	// in a transaction.
	idir := filepath.Join(s.dir, "intent")
	seqs, err := intent.List(idir)
	if err != nil {
		return err
	}
	next := intentSeq + 1
	var replay []uint64
	for _, seq := range seqs {
		if seq <= intentSeq {
			os.Remove(intent.Name(idir, seq))
			continue
		}
		replay = append(replay, seq)
		next = max(next, seq+1)
	}
	if s.ilog, err = intent.New(idir, next, !s.mirror.Load()); err != nil {
		return err
	}
	replayed, replayedFiles := 0, 0
	for _, seq := range replay {
		entries, err := intent.Read(intent.Name(idir, seq))
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			// Nothing acknowledged in it (a preallocated file never
			// written, or a torn first entry): it can go now, so that
			// opens that never commit do not pile files up.
			os.Remove(intent.Name(idir, seq))
			continue
		}
		for _, body := range entries {
			ops, err := decodeIops(body)
			if err != nil {
				return err
			}
			tx := s.newTx()
			for _, op := range ops {
				if err := tx.apply(op); err != nil {
					return fmt.Errorf("history: replay intent log %d: %w", seq, err)
				}
			}
			tx.ov.mergeInto(s.pending)
			replayed++
		}
		replayedFiles++
		// The commit that holds its changes retires it.
		f, err := s.ilog.Adopt(seq)
		if err != nil {
			return err
		}
		s.retained = append(s.retained, f)
	}
	if s.pending.empty() && s.lastTID == 0 && !s.mirror.Load() {
		// A new store (a mirror gets its root from its source): its first transaction creates the root directory,
		// sticky and writable by all like /tmp, so that every user of a
		// shared server can start a tree of their own at the top.
		now := s.opts.Clock().UnixNano()
		err := s.Update(func(tx *Tx) error {
			return tx.record(iop{kind: iopNewObj, obj: RootID, data: (&Inode{Kind: KindDir, Mode: 0o1777,
				Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Nlink: 2, Atime: now, Mtime: now, Ctime: now, Btime: now}).encode()})
		})
		if err != nil {
			return err
		}
	}
	// Ids reserved before the crash may have been handed out by changes
	// that did not survive it: never hand them out again.
	s.nextObj = s.objHigh
	if replayed > 0 {
		s.log.Info("history: replayed intent log", "entries", replayed, "files", replayedFiles)
	}
	// The replayed changes are pending again; commit them now so their
	// intent files can go. A commit that fails for want of room does not
	// keep the store from opening: the changes stay pending, read from
	// memory, their intent files stay, and the flusher tries again.
	if err := s.commit(); err != nil {
		s.mu.RLock()
		broken := s.broken
		s.mu.RUnlock()
		if broken != nil || !noRoom(err) {
			return err
		}
		s.log.Error("history: cannot commit the replayed changes yet; serving them from memory", "err", err)
	}
	return nil
}

// indexState is the index's state: the newest transaction it applied and
// where the log's next frame starts.
func (s *Store) indexState() (index.State, error) {
	var st index.State
	err := s.index.View(func(tx *bolt.Tx) error {
		var err error
		st, _, err = index.ReadState(tx)
		return err
	})
	return st, err
}

// catchUpIndex applies committed frames the index has not seen, and loads
// the collapsed moments from it: the log is the truth, the index may lag
// it by the transactions a crash (or a full disk) interrupted, or be empty
// after Rebuild removed it.
func (s *Store) catchUpIndex() error {
	st, err := s.indexState()
	if err != nil {
		return err
	}
	n, err := s.replayLog(s.index, st, math.MaxUint64, nil)
	if n > 0 {
		s.log.Info("history: index caught up with the log", "transactions", n)
	}
	if err != nil {
		return err
	}
	// The moments collapsed, which frames of the cleaner's may have added.
	var cs collapses
	if err := s.index.View(func(tx *bolt.Tx) error {
		var err error
		cs, err = loadCollapses(tx)
		return err
	}); err != nil {
		return err
	}
	s.gone.Store(&cs)
	return nil
}

// replayLog applies to db every frame of the log after st, up to the
// transaction upTo: a frame being appended behind it may be incomplete.
// Blocks it does not know are located by reading the packs (locate), the
// packs of remote volumes as known says when it is not nil.
func (s *Store) replayLog(db *bolt.DB, st index.State, upTo TID, known *bolt.Tx) (int, error) {
	var packMap map[Hash]pack.Loc // learnt once, when a frame needs it
	n := 0
	err := txlog.Scan(s.logDir(), st.Next, func(t *Txn, loc, next txlog.Loc) error {
		if t.TID > upTo {
			return errStop
		}
		if st.Applied != 0 && t.TID <= st.Applied {
			return nil
		}
		if packMap == nil {
			need, err := unknownBlocks(db, t)
			if err != nil {
				return err
			}
			if need {
				// Blocks the index has not seen: written by a commit a
				// crash interrupted, or the index is being rebuilt.
				// A store with an index lost only the blocks of
				// commits a crash interrupted, which are in volume 0
				// (packs move only once their commit is indexed); a
				// rebuild reads every volume.
				if packMap, err = s.locate(known, st != index.State{}); err != nil {
					return err
				}
			}
		}
		n++
		if err := db.Update(func(tx *bolt.Tx) error { return index.ApplyTxn(tx, t, loc, next, packMap, true) }); err != nil {
			return err
		}
		if t.TID == upTo {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if err == nil && n > 0 {
		err = index.MissingBlocks(db)
	}
	return n, err
}

// unknownBlocks reports whether t references a block db does not index.
func unknownBlocks(db *bolt.DB, t *Txn) (bool, error) {
	need := false
	err := db.View(func(tx *bolt.Tx) error {
		for _, op := range t.Ops {
			if op.Kind != OpCreate || !strings.HasPrefix(op.Key, record.PrefixData) {
				continue
			}
			c, err := record.DecodeChunk(op.Payload)
			if err != nil {
				return err
			}
			if c.Block {
				if _, ok, err := index.GetBlk(tx, c.Hash); err != nil || !ok {
					need = !ok
					return err
				}
			}
		}
		return nil
	})
	return need, err
}

func (s *Store) flusher() {
	defer close(s.done)
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	// A commit that fails (a full disk) is tried again at every tick; the
	// log says so once, then once a minute, and says when it works again.
	var failed int
	var logged time.Time
	reserved := time.Now() // Open made it
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		err := s.commit()
		switch {
		case err == nil || errors.Is(err, ErrClosed):
			if failed > 0 {
				s.log.Info("history: commit works again", "failed_attempts", failed)
				failed = 0
			}
			if time.Since(reserved) > time.Minute {
				s.keepReserve() // again, if it was given up and there is room now
				reserved = time.Now()
			}
		case failed == 0 || time.Since(logged) >= time.Minute:
			failed++
			logged = time.Now()
			s.log.Error("history: commit failed; retrying every flush interval", "err", err, "failed_attempts", failed)
		default:
			failed++
		}
	}
}

// Commit makes every change so far durable as one new transaction, now
// (an explicit sync). It returns the transaction's id, or the newest one
// when nothing was pending.
func (s *Store) Commit() (TID, error) {
	err := s.commit()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastTID, err
}

// Durable returns once every change made so far would survive a crash,
// without committing a transaction: the intent log is fsynced, shared with
// every other caller waiting at the same time.
func (s *Store) Durable() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	ps := s.ilog.Positions()
	s.mu.RUnlock()
	return s.ilog.SyncAll(ps)
}

// Commits counts the transactions committed since Open.
func (s *Store) Commits() uint64 { return s.commits.Load() }

// LastTID is the newest committed transaction.
func (s *Store) LastTID() TID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lastTID
}

// Now is the TID that stands for this moment.
func (s *Store) Now() TID { return TIDAt(s.opts.Clock()) }

// nextTID is at least TIDGap greater than every TID before it, across
// restarts and clock steps backwards: a mirror puts frames of its own in
// the gap (apply.go).
func (s *Store) nextTID() TID {
	t := s.Now()
	if t < s.lastTID+TIDGap {
		t = s.lastTID + TIDGap
	}
	return t
}

// Close commits what is pending and closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	<-s.moverDone
	// A cleaner pass stops at its next batch (it watches s.stop); wait
	// for it so nothing writes behind the closed files.
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	err := s.commit()
	if err != nil {
		// Not committed (a full disk, say): the intent log may still hold
		// what is buffered, for the next start to replay.
		if derr := s.Durable(); derr != nil {
			err = errors.Join(err, derr)
		} else {
			err = fmt.Errorf("%w (the changes are in the intent log, replayed at the next start)", err)
		}
	}
	s.commitMu.Lock() // no commit sends to the dropper after this
	s.mu.Lock()
	s.closed = true
	s.endedCond.Broadcast()
	s.mu.Unlock()
	close(s.drops)
	s.commitMu.Unlock()
	<-s.dropsDone
	if cerr := s.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) closeFiles() error {
	var errs []error
	if s.ilog != nil {
		errs = append(errs, s.ilog.Close())
	}
	if s.tlog != nil {
		errs = append(errs, s.tlog.Close())
	}
	if s.packs != nil {
		errs = append(errs, s.packs.Close())
	}
	for _, v := range s.vols {
		if v.v != nil {
			errs = append(errs, v.v.Close())
		}
	}
	if s.index != nil {
		errs = append(errs, index.Close(s.index))
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	return errors.Join(errs...)
}

// stopping reports whether Close has begun: a cleaner pass stops at its
// next batch, and the next pass after Open finishes the work.
func (s *Store) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// checkOpen is nil while the store takes changes: open, and no commit
// left the index behind the log.
func (s *Store) checkOpen() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.broken
}

// Dir is the store's data directory.
func (s *Store) Dir() string { return s.dir }
