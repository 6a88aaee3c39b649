package history

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/volume"
	bolt "go.etcd.io/bbolt"
)

// Stats describes the store as committed.
type Stats struct {
	Objects      int64 // live objects
	Records      int64 // records, live and historical
	Versions     int64 // object versions
	LogicalBytes int64 // sum of the sizes of live files
	StoredBytes  int64 // bytes on disk: packs, log and index
	BlockBytes   int64 // of which packs
	Blocks       int64 // distinct blocks
	// UniqueBytes is the data of the distinct blocks; ReferencedBytes
	// counts it once per record, live or historical, that refers to it:
	// what the blocks would take if nothing were shared.
	UniqueBytes     int64
	ReferencedBytes int64
	Oldest          TID // the oldest moment that can be read
	Last            TID // the newest transaction
}

// DedupRatio is how many times over sharing stores the blocks' data: the
// bytes the records refer to, live and historical, per distinct block
// byte; 1 when nothing is shared. (Live logical bytes per block byte would
// fall below 1 as history grows, whatever is shared.)
func (st Stats) DedupRatio() float64 {
	if st.UniqueBytes == 0 {
		return 1
	}
	return float64(st.ReferencedBytes) / float64(st.UniqueBytes)
}

type statsCache struct {
	mu   sync.Mutex
	at   time.Time
	last Stats
}

// Stats scans the index: its cost grows with the store, so callers that
// ask often (NFS FSSTAT) get an answer up to a few seconds old.
func (s *Store) Stats(maxAge time.Duration) (Stats, error) {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	if maxAge > 0 && time.Since(s.stats.at) < maxAge {
		return s.stats.last, nil
	}
	var st Stats
	err := s.index.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(index.BucketRec).ForEach(func(k, v []byte) error {
			st.Records++
			if len(k) == 8+len(record.KeyInode)+1+8 && string(k[8:9]) == record.KeyInode && len(v) >= 12 && binary.BigEndian.Uint64(v) == 0 {
				r, err := index.DecodeRec(k, v)
				if err != nil {
					return err
				}
				ino, err := decodeInode(r.Payload)
				if err != nil {
					return err
				}
				st.Objects++
				if ino.Kind == KindFile {
					st.LogicalBytes += int64(ino.Size)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		st.Versions = int64(tx.Bucket(index.BucketVer).Stats().KeyN)
		err = tx.Bucket(index.BucketBlk).ForEach(func(k, v []byte) error {
			e, err := index.DecodeBlk(v)
			if err != nil {
				return err
			}
			st.Blocks++
			st.UniqueBytes += int64(e.Loc.Length)
			st.ReferencedBytes += int64(e.Refs) * int64(e.Loc.Length)
			return nil
		})
		if err != nil {
			return err
		}
		// The oldest moment with a state of its own: the first
		// transaction, or the end of the range the cleaner collapsed it
		// into.
		c := tx.Bucket(index.BucketTxn).Cursor()
		for k, v := c.First(); len(k) == 8; k, v = c.Next() {
			if _, flags, err := index.DecodeTxnLoc(v); err != nil || flags&index.TxnPruneOnly != 0 {
				continue
			}
			st.Oldest = s.snap(TID(binary.BigEndian.Uint64(k)))
			break
		}
		if k, _ := tx.Bucket(index.BucketTxn).Cursor().Last(); len(k) == 8 {
			st.Last = TID(binary.BigEndian.Uint64(k))
		}
		return nil
	})
	if err != nil {
		return Stats{}, err
	}
	if st.BlockBytes, err = s.packs.StoredBytes(); err != nil {
		return Stats{}, err
	}
	st.BlockBytes += s.otherVolumeBytes()
	st.StoredBytes = st.BlockBytes + dirSize(s.logDir()) + fileSize(filepath.Join(s.dir, "index.db"))
	s.stats.at, s.stats.last = time.Now(), st
	return st, nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func dirSize(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		n += fileSize(filepath.Join(dir, e.Name()))
	}
	return n
}

// otherVolumeBytes is the size of the packs on directory volumes other
// than the data directory's. S3 volumes' are not counted: stats are read
// often (metrics), and listing a bucket is a request; asof volume list
// shows them.
func (s *Store) otherVolumeBytes() int64 {
	s.vmu.Lock()
	var vols []*vol
	for id, v := range s.vols {
		if id != 0 && v.v != nil {
			vols = append(vols, v)
		}
	}
	s.vmu.Unlock()
	var n int64
	for _, v := range vols {
		if d, ok := v.v.(*volume.Dir); ok {
			l, _ := d.List(context.Background())
			for _, p := range l {
				n += p.Size
			}
		}
	}
	return n
}
