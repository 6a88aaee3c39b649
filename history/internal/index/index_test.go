package index

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
	"github.com/asof/asof/history/internal/txlog"
	bolt "go.etcd.io/bbolt"
)

// A record created by one transaction and ended by a later one is visible
// as of the moments between them, and the index's state names the last
// transaction applied and where the next frame starts.
func TestApplyTxnThenReadAsOf(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "index.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	apply := func(tx *txlog.Txn, at, next txlog.Loc) {
		t.Helper()
		if err := db.Update(func(btx *bolt.Tx) error { return ApplyTxn(btx, tx, at, next, nil, false) }); err != nil {
			t.Fatal(err)
		}
	}
	chunk := record.EncodeChunk(record.ChunkRef{Inline: []byte("data")})
	apply(&txlog.Txn{TID: 10, ObjHigh: 5, Ops: []txlog.Op{
		{Kind: txlog.OpCreate, Obj: 2, Key: record.DirentKey("a"), Payload: []byte("child a")},
		{Kind: txlog.OpCreate, Obj: 2, Key: record.ChunkKey(0), Payload: chunk},
		{Kind: txlog.OpCreate, Obj: 2, Key: record.ChunkKey(2), Payload: chunk},
	}}, txlog.Loc{Seg: 1}, txlog.Loc{Seg: 1, Off: 100})
	apply(&txlog.Txn{TID: 20, ObjHigh: 5, Ops: []txlog.Op{
		{Kind: txlog.OpEnd, Obj: 2, Key: record.DirentKey("a"), Create: 10},
	}}, txlog.Loc{Seg: 1, Off: 100}, txlog.Loc{Seg: 1, Off: 150})
	err = db.View(func(tx *bolt.Tx) error {
		for at, want := range map[record.TID]bool{9: false, 10: true, 19: true, 20: false} {
			r, ok, err := Latest(tx, 2, record.DirentKey("a"), at)
			if err != nil || ok != want || ok && string(r.Payload) != "child a" {
				t.Errorf("as of %d: %q, %v, %v; want visible %v", at, r.Payload, ok, err, want)
			}
		}
		var chunks []int
		if err := ChunkRecords(tx, 2, 0, 4, 15, func(i int, payload []byte) error {
			chunks = append(chunks, i)
			return nil
		}); err != nil {
			return err
		}
		if len(chunks) != 2 || chunks[0] != 0 || chunks[1] != 2 {
			t.Errorf("chunk records 0..3: %v, want 0 and 2 (1 and 3 are holes)", chunks)
		}
		st, ok, err := ReadState(tx)
		if err != nil || !ok || st.Applied != 20 || st.Next != (txlog.Loc{Seg: 1, Off: 150}) || st.ObjHigh != 5 {
			t.Errorf("state %+v, %v, %v", st, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A record whose key's checksum does not match is damage, not data.
func TestDamagedRecordIsCorrupt(t *testing.T) {
	r := record.Record{Obj: 3, Key: record.KeyInode, Create: 7, Payload: []byte("inode")}
	k, v := RecKey(r.Obj, r.Key, r.Create), RecValue(&r)
	if got, err := DecodeRec(k, v); err != nil || string(got.Payload) != "inode" {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	v[len(v)-1] ^= 1
	if _, err := DecodeRec(k, v); err == nil {
		t.Fatal("a damaged record decoded")
	}
}

// syncedFreelist reads the newest bbolt meta page of the file at path and
// reports whether it points at a written free page list (bbolt's layout:
// a 16-byte page header, then magic, version, page size and flags, u32
// each, the root bucket, 16 bytes, the free list's page, and later the
// transaction id).
func syncedFreelist(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.LittleEndian.Uint32(b[16+8:]))
	var freelist, txid uint64
	for _, p := range []int{0, pageSize} {
		m := b[p+16:]
		if id := binary.LittleEndian.Uint64(m[48:]); id >= txid {
			txid, freelist = id, binary.LittleEndian.Uint64(m[32:])
		}
	}
	return freelist != ^uint64(0)
}

// Close writes the free page list a commit left unwritten, so that the next
// Open reads it rather than walking every page; an Open of an index that
// has its buckets writes nothing, so the list stays written; a process that
// stops without Close leaves it unwritten (and bbolt rebuilds it).
func TestCloseWritesTheFreelist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	db, err := Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	put := func(db *bolt.DB, v string) {
		t.Helper()
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(BucketMeta).Put([]byte("k"), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	put(db, "1")
	if err := Close(db); err != nil {
		t.Fatal(err)
	}
	if !syncedFreelist(t, path) {
		t.Fatal("after a commit and Close: no free page list written")
	}
	db, err = Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := Close(db); err != nil {
		t.Fatal(err)
	}
	if !syncedFreelist(t, path) {
		t.Fatal("after an Open and Close with no commit: the free page list is gone")
	}
	db, err = Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	put(db, "2")
	if err := db.Close(); err != nil { // a process that stops without Close
		t.Fatal(err)
	}
	if syncedFreelist(t, path) {
		t.Fatal("a commit wrote the free page list: commits should leave it to Close")
	}
	db, err = Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(BucketMeta).Get([]byte("k")); string(v) != "2" {
			t.Errorf("after a reopen with the list rebuilt: %q, want 2", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := Close(db); err != nil {
		t.Fatal(err)
	}
}

// Blocks placed ahead of a batch's frames end with the references the
// frames make, at the place given; one no frame refers to is gone, and an
// entry the index had already keeps its place.
func TestPlaceBlocksThenFramesCountTheirReferences(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "index.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hash := func(i byte) record.Hash { return record.Hash{i, 0xa5} }
	loc := func(p uint32) pack.Loc { return pack.Loc{Pack: p, Off: 64, Length: 4} }
	ref := func(h record.Hash) []byte {
		return record.EncodeChunk(record.ChunkRef{Block: true, Hash: h, Length: 4})
	}
	create := func(obj record.ObjID, key string, h record.Hash) txlog.Op {
		return txlog.Op{Kind: txlog.OpCreate, Obj: obj, Key: key, Payload: ref(h)}
	}
	// An older transaction made block 1's entry, in pack 1.
	if err := db.Update(func(tx *bolt.Tx) error {
		return ApplyTxn(tx, &txlog.Txn{TID: 5, ObjHigh: 9, Ops: []txlog.Op{create(7, record.PrefixData+"0", hash(1))}},
			txlog.Loc{}, txlog.Loc{Off: 10}, map[record.Hash]pack.Loc{hash(1): loc(1)}, false)
	}); err != nil {
		t.Fatal(err)
	}
	stored := map[record.Hash]pack.Loc{hash(1): loc(2), hash(2): loc(2), hash(3): loc(2), hash(4): loc(2)}
	if err := db.Update(func(tx *bolt.Tx) error {
		placed, err := PlaceBlocks(tx, stored)
		if err != nil {
			return err
		}
		if len(placed) != 3 {
			t.Errorf("placed %d blocks, want 3 (block 1 had an entry)", len(placed))
		}
		frames := []*txlog.Txn{
			{TID: 10, ObjHigh: 9, Ops: []txlog.Op{create(8, record.PrefixData+"0", hash(2)), create(8, record.PrefixData+"1", hash(1))}},
			{TID: 11, ObjHigh: 9, Ops: []txlog.Op{create(9, record.PrefixData+"0", hash(2)), create(9, record.PrefixData+"1", hash(3))}},
		}
		for i, f := range frames {
			if err := ApplyTxn(tx, f, txlog.Loc{Off: int64(10 * (i + 1))}, txlog.Loc{Off: int64(10 * (i + 2))}, stored, false); err != nil {
				return err
			}
		}
		return DropUnreferenced(tx, placed)
	}); err != nil {
		t.Fatal(err)
	}
	want := map[record.Hash]BlkEntry{hash(1): {Loc: loc(1), Refs: 2}, hash(2): {Loc: loc(2), Refs: 2}, hash(3): {Loc: loc(2), Refs: 1}}
	db.View(func(tx *bolt.Tx) error {
		for i := byte(1); i <= 4; i++ {
			e, ok, err := GetBlk(tx, hash(i))
			if w, wok := want[hash(i)]; ok != wok || err != nil || e != w {
				t.Errorf("block %d: %+v %v %v, want %+v %v", i, e, ok, err, w, wok)
			}
		}
		return nil
	})
}
