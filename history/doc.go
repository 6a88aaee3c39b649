// Package history is asof's storage engine: every piece of file-system state
// is a record stamped with the transaction that created it and the one that
// ended it, so the store can be read as of any past moment.
//
// The layers, from the truth outwards:
//
//   - the transaction log (log/*.seg): append-only frames, one per
//     transaction, each holding the records it created and ended. It is the
//     truth; everything else is derived from it or points into it.
//   - packs (volumes/N/NNNNNNNN.pack): content-addressed data blocks, each
//     named by its SHA-256, which is also its checksum.
//   - the intent log (intent/*.log): a redo log of the changes not yet
//     committed, so a synchronous write is durable long before the next
//     transaction, without making a version of its own.
//   - the index (index.db, bbolt): records by (object, key, create tid),
//     versions by object, blocks by hash, transactions by tid. It can be
//     rebuilt from the log and the packs at any time (Rebuild).
//
// See README.md in this directory for the formats.
package history
