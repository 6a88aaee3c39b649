package history

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/asof/asof/history/internal/fileio"
	"golang.org/x/sys/unix"
)

// The reserve is a file of allocated space in the data directory that the
// store gives up when its index must catch up with the log and the disk
// has no room for that (as ZFS keeps slop space for its own metadata).
// Without it, a store whose disk filled up through its index could neither
// commit nor open again until someone freed space by hand. The store makes
// it again once the disk has room to spare.
var reserveSize int64 = 64 << 20

func (s *Store) reservePath() string { return filepath.Join(s.dir, "reserve") }

// keepReserve makes the reserve when it is missing and the disk has twice
// its size free; otherwise, or where space cannot be allocated ahead,
// nothing.
func (s *Store) keepReserve() {
	p := s.reservePath()
	if _, err := os.Stat(p); err == nil || reserveSize <= 0 {
		return
	}
	var st unix.Statfs_t
	if unix.Statfs(s.dir, &st) != nil || int64(st.Bavail)*int64(st.Bsize) < 2*reserveSize {
		return
	}
	f, err := os.OpenFile(p+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	err = fileio.Preallocate(f, reserveSize)
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err == nil {
		err = os.Rename(p+".tmp", p)
	}
	if err != nil {
		os.Remove(p + ".tmp")
		return
	}
	fileio.SyncDir(s.dir)
}

// catchUpIndexOrReserve is catchUpIndex, which gives up the reserve and
// tries once more when the disk has no room for the index.
func (s *Store) catchUpIndexOrReserve() error {
	err := s.catchUpIndex()
	if !noRoom(err) {
		return err
	}
	if os.Remove(s.reservePath()) != nil {
		return err
	}
	fileio.SyncDir(s.dir)
	s.log.Warn("history: the disk is full: gave up the reserve so that the index can catch up with the log; make room on the disk",
		"bytes", reserveSize, "err", err)
	if err := s.catchUpIndex(); err != nil {
		return fmt.Errorf("history: index catch-up with the reserve given up: %w", err)
	}
	return nil
}

// noRoom tells the errors of a disk, or a quota, that has no room left.
func noRoom(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
