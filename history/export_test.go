package history

import (
	"encoding/binary"

	"github.com/asof/asof/history/internal/index"
	bolt "go.etcd.io/bbolt"
)

// API only the tests use.

// ChunkSize is the chunk size this store was made with.
func (s *Store) ChunkSize() int { return s.chunk }

// ReadInodeCached is ReadInode that does not wait for the disk (ReadView
// with nowait): ErrWouldBlock, and nothing in p, where a block is not in
// memory.
func (s *Store) ReadInodeCached(obj ObjID, p []byte, off int64, at TID) (int, Inode, error) {
	return s.readInto(obj, p, off, at, true)
}

// VersionAt returns the newest version of obj at or before at.
func (s *Store) VersionAt(obj ObjID, at TID) (Version, bool, error) {
	var out Version
	var found bool
	err := s.index.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(index.BucketVer).Cursor()
		k := binary.BigEndian.AppendUint64(nil, uint64(obj))
		want := binary.BigEndian.AppendUint64(k, uint64(at))
		kk, v := c.Seek(want)
		if kk == nil || string(kk) != string(want) {
			kk, v = c.Prev()
		}
		if kk == nil || len(kk) != 16 || string(kk[:8]) != string(k) || len(v) != 9 {
			return nil
		}
		found = true
		out = Version{TID: TID(binary.BigEndian.Uint64(kk[8:])), Change: Change(v[0]), Size: binary.BigEndian.Uint64(v[1:])}
		return nil
	})
	return out, found, err
}
