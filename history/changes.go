package history

import (
	"encoding/binary"
	"errors"
	"path/filepath"

	"github.com/asof/asof/history/internal/index"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// The change stream: the ordered frames of the transaction log, as a
// mirror reads them (see internal/txlog).

// OpKind says what an op does.
type OpKind = txlog.OpKind

const (
	OpCreate   = txlog.OpCreate   // creates the record (Obj, Key, frame tid) with Payload
	OpEnd      = txlog.OpEnd      // ends the record (Obj, Key, Create) at the frame's tid
	OpDrop     = txlog.OpDrop     // removes the record (Obj, Key, Create): no kept moment sees it
	OpVersion  = txlog.OpVersion  // rewrites the version entry (Obj, Create) to Payload
	OpCollapse = txlog.OpCollapse // moments from Create up to the tid in Payload read as that tid
	OpNop      = txlog.OpNop      // stands in a cleaner frame whose ops a log rewrite removed
)

// Op is one record change of a transaction, as the change stream carries it.
type Op = txlog.Op

// Note is what a transaction did to one object, for version listings.
type Note = txlog.Note

// Txn is one committed transaction.
type Txn = txlog.Txn

// Changes calls fn with every committed transaction after since, in order.
// It finds the first one through the transaction index and reads the log
// from there: the cost is what changed, not the size of the store, and no
// state is kept for any reader.
func (s *Store) Changes(since TID, fn func(t *Txn) error) error {
	var from txlog.Loc
	found := false
	// The cleaner rewrites old segments and their index entries under
	// logMu: hold it from the lookup to the end of the scan.
	s.logMu.RLock()
	defer s.logMu.RUnlock()
	err := s.index.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(index.BucketTxn).Cursor().Seek(binary.BigEndian.AppendUint64(nil, uint64(since)+1))
		if k == nil {
			return nil
		}
		var err error
		from, _, err = index.DecodeTxnLoc(v)
		found = err == nil
		return err
	})
	if err != nil || !found {
		return err
	}
	// Stop at the newest transaction committed now: a frame being
	// appended behind it may be incomplete.
	last := s.LastTID()
	err = txlog.Scan(s.logDir(), from, func(t *Txn, _, _ txlog.Loc) error {
		if t.TID > last {
			return errStop
		}
		if t.TID > since {
			if err := fn(t); err != nil {
				return err
			}
		}
		if t.TID == last {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

func (s *Store) logDir() string { return filepath.Join(s.dir, "log") }
