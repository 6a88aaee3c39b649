package history

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/record"
	bolt "go.etcd.io/bbolt"
)

// What history holds about an object or a name, and which moments exist.

// Moment is the newest committed transaction at or before at: the state
// as of at is the state as of it. ok is false before the first one. A
// moment the cleaner collapsed is the end of its range; the cleaner's own
// transactions change no state and are no moments.
func (s *Store) Moment(at TID) (TID, bool, error) {
	s.mu.RLock()
	at = s.capRead(at)
	s.mu.RUnlock()
	if to := s.snap(at); to != at {
		return to, true, nil
	}
	var out TID
	var ok bool
	err := s.index.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(index.BucketTxn).Cursor()
		want := binary.BigEndian.AppendUint64(nil, uint64(at))
		k, v := c.Seek(want)
		if k == nil || string(k) != string(want) {
			k, v = c.Prev()
		}
		for ; len(k) == 8; k, v = c.Prev() {
			_, flags, err := index.DecodeTxnLoc(v)
			if err != nil {
				return err
			}
			if flags&index.TxnPruneOnly == 0 {
				out, ok = TID(binary.BigEndian.Uint64(k)), true
				return nil
			}
		}
		return nil
	})
	return out, ok, err
}

// Versions lists every transaction that changed obj, oldest first. It
// reads only obj's entries of the version index.
func (s *Store) Versions(obj ObjID) ([]Version, error) {
	var out []Version
	err := s.index.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(index.BucketVer).Cursor()
		prefix := binary.BigEndian.AppendUint64(nil, uint64(obj))
		for k, v := c.Seek(prefix); len(k) == 16 && string(k[:8]) == string(prefix); k, v = c.Next() {
			if len(v) != 9 {
				return fmt.Errorf("%w: version entry of %d bytes", ErrCorrupt, len(v))
			}
			out = append(out, Version{TID: TID(binary.BigEndian.Uint64(k[8:])), Change: Change(v[0]), Size: binary.BigEndian.Uint64(v[1:])})
		}
		return nil
	})
	return out, err
}

// LastEntry finds the object that name in directory dir last referred to,
// as committed, whether the entry still stands or not: ended is when the
// entry went (0 while it stands). It is one lookup: the newest record of
// the entry's key.
func (s *Store) LastEntry(dir ObjID, name string) (child ObjID, ended TID, ok bool, err error) {
	err = s.index.View(func(tx *bolt.Tx) error {
		r, found, err := index.Newest(tx, dir, record.DirentKey(name), math.MaxUint64)
		if err != nil || !found {
			return err
		}
		if child, _, err = decodeDirent(r.Payload); err != nil {
			return err
		}
		ended, ok = r.Delete, true
		return nil
	})
	return child, ended, ok, err
}
