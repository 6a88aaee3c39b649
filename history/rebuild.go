package history

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/asof/asof/history/internal/index"
	bolt "go.etcd.io/bbolt"
)

// rebuildInto makes a new index at path from the packs and the log alone,
// up to the transaction upTo (see replayLog for known).
func (s *Store) rebuildInto(path string, upTo TID, known *bolt.Tx) (*bolt.DB, error) {
	db, err := index.Open(path, true)
	if err != nil {
		return nil, err
	}
	if _, err := s.replayLog(db, index.State{}, upTo, known); err != nil {
		db.Close()
		return nil, err
	}
	db.NoSync = false
	if err := db.Sync(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Rebuild throws away the index of a store that is not open and makes it
// again from the log and the packs: opening a store without an index
// replays the whole log into a new one.
func Rebuild(dir string) error {
	idx := filepath.Join(dir, "index.db")
	if err := os.Rename(idx, idx+".old"); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("history: rebuild: %w", err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		os.Rename(idx+".old", idx)
		return fmt.Errorf("history: rebuild: %w", err)
	}
	if err := s.Close(); err != nil {
		return err
	}
	return os.Remove(idx + ".old")
}
