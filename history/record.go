package history

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record keys. Every key is NUL-free (POSIX names and xattr names cannot
// hold NUL, chunk numbers are hex), so an index key can end a key with a NUL
// and sort all versions of one (object, key) together, newest last, and all
// of a directory's entries in name order.
const (
	keyInode   = "i"
	keySymlink = "s"
	prefixDir  = "d" // + entry name
	prefixData = "x" // + 16 hex digits: chunk number
	prefixXatt = "e" // + attribute name
	prefixMeta = "m" // + name: the file system's own bookkeeping, on the root
)

func direntKey(name string) string { return prefixDir + name }
func xattrKey(name string) string  { return prefixXatt + name }
func chunkKey(idx uint64) string {
	var b [17]byte
	b[0] = prefixData[0]
	putChunkHex(b[1:], idx)
	return string(b[:])
}

// putChunkHex writes a chunk index as chunkKey spells it: 16 hex digits,
// which sort as the numbers do.
func putChunkHex(b []byte, idx uint64) {
	const digits = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = digits[idx&15]
		idx >>= 4
	}
}

func chunkOfKey(key string) (uint64, bool) {
	if len(key) != 17 || key[0] != prefixData[0] {
		return 0, false
	}
	n, err := strconv.ParseUint(key[1:], 16, 64)
	return n, err == nil
}

// Record is the unit of truth: one piece of an object's state, valid from
// the transaction Create up to (not including) Delete; Delete 0 means live.
type Record struct {
	Obj     ObjID
	Key     string
	Create  TID
	Delete  TID
	Payload []byte
}

// Visible reports whether the record is part of the state as of at.
func (r *Record) Visible(at TID) bool {
	return r.Create <= at && (r.Delete == 0 || r.Delete > at)
}

// Checksum covers every field, so a record read back from any copy (the
// log, the index, a mirror) can be checked on its own.
func (r *Record) Checksum() uint32 {
	return recChecksum(r.Obj, r.Create, r.Delete, r.Key, r.Payload)
}

func recChecksum[K string | []byte](obj ObjID, create, del TID, key K, payload []byte) uint32 {
	var h [8 * 3]byte
	binary.BigEndian.PutUint64(h[0:], uint64(obj))
	binary.BigEndian.PutUint64(h[8:], uint64(create))
	binary.BigEndian.PutUint64(h[16:], uint64(del))
	c := crc32.Update(0, castagnoli, h[:])
	c = crc32.Update(c, castagnoli, []byte(key))
	c = crc32.Update(c, castagnoli, []byte{0})
	return crc32.Update(c, castagnoli, payload)
}

// Index keys: obj(8) | key | 0x00 | create tid(8).
func recKey(obj ObjID, key string, create TID) []byte {
	b := make([]byte, 0, 8+len(key)+1+8)
	b = binary.BigEndian.AppendUint64(b, uint64(obj))
	b = append(b, key...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(create))
}

func recPrefix(obj ObjID, keyPrefix string) []byte {
	b := make([]byte, 0, 8+len(keyPrefix))
	b = binary.BigEndian.AppendUint64(b, uint64(obj))
	return append(b, keyPrefix...)
}

func parseRecKey(k []byte) (ObjID, string, TID, error) {
	if len(k) < 8+1+8 || k[len(k)-9] != 0 {
		return 0, "", 0, fmt.Errorf("%w: index key %x", ErrCorrupt, k)
	}
	return ObjID(binary.BigEndian.Uint64(k)), string(k[8 : len(k)-9]),
		TID(binary.BigEndian.Uint64(k[len(k)-8:])), nil
}

// Index values: delete tid(8) | checksum(4) | payload.
func recValue(r *Record) []byte {
	b := make([]byte, 12, 12+len(r.Payload))
	binary.BigEndian.PutUint64(b, uint64(r.Delete))
	binary.BigEndian.PutUint32(b[8:], r.Checksum())
	return append(b, r.Payload...)
}

// decodeRec rebuilds a record from an index entry and checks its checksum.
// The payload aliases v, which is only valid inside the bbolt transaction.
func decodeRec(k, v []byte) (Record, error) {
	obj, key, create, err := parseRecKey(k)
	if err != nil {
		return Record{}, err
	}
	if len(v) < 12 {
		return Record{}, fmt.Errorf("%w: index value of %d bytes for object %d key %q", ErrCorrupt, len(v), obj, key)
	}
	r := Record{Obj: obj, Key: key, Create: create, Delete: TID(binary.BigEndian.Uint64(v)), Payload: v[12:]}
	if r.Checksum() != binary.BigEndian.Uint32(v[8:]) {
		return Record{}, fmt.Errorf("%w: record object %d key %q created %s", ErrCorrupt, obj, key, create)
	}
	return r, nil
}

// Data records describe one chunk of a file: either the bytes themselves
// (small data lives inline) or the hash of a block holding them.
const (
	chunkInline byte = 0
	chunkBlock  byte = 1
)

// ChunkSize is the file-offset grain of data records in a new store: a
// 1 GiB file is 65536 records, and rewriting 4 KiB costs one new 16 KiB
// block. Smaller chunks cost more records (and index) per byte, larger
// ones more bytes written and hashed per small write: 64 KiB chunks made
// a 4 KiB random write 2.5x slower, 4 KiB ones a sequential write 4x
// slower (see integration/bench/README.md). Stores made with 64 KiB keep
// it (FORMAT).
const ChunkSize = 16 << 10

// ChunkSize is the chunk size this store was made with.
func (s *Store) ChunkSize() int { return s.chunk }

// InlineMax is the largest chunk kept inside its record instead of a block.
const InlineMax = 4 << 10

type chunkRef struct {
	inline []byte // when not a block
	hash   Hash
	length uint32
	block  bool
}

func (c chunkRef) size() int {
	if c.block {
		return int(c.length)
	}
	return len(c.inline)
}

func encodeChunk(c chunkRef) []byte {
	if !c.block {
		return append([]byte{chunkInline}, c.inline...)
	}
	b := make([]byte, 1+4+len(c.hash))
	b[0] = chunkBlock
	binary.BigEndian.PutUint32(b[1:], c.length)
	copy(b[5:], c.hash[:])
	return b
}

func decodeChunk(p []byte) (chunkRef, error) {
	if len(p) == 0 {
		return chunkRef{}, fmt.Errorf("%w: empty data record", ErrCorrupt)
	}
	switch p[0] {
	case chunkInline:
		return chunkRef{inline: p[1:]}, nil
	case chunkBlock:
		if len(p) != 1+4+HashLen {
			return chunkRef{}, fmt.Errorf("%w: block reference of %d bytes", ErrCorrupt, len(p))
		}
		c := chunkRef{block: true, length: binary.BigEndian.Uint32(p[1:])}
		copy(c.hash[:], p[5:])
		return c, nil
	}
	return chunkRef{}, fmt.Errorf("%w: data record of type %d", ErrCorrupt, p[0])
}

// Directory entries: child object id and its kind, so a listing needs no
// lookup of each child.
func encodeDirent(child ObjID, k Kind) []byte {
	b := make([]byte, 9)
	binary.BigEndian.PutUint64(b, uint64(child))
	b[8] = byte(k)
	return b
}

func decodeDirent(p []byte) (ObjID, Kind, error) {
	if len(p) != 9 {
		return 0, 0, fmt.Errorf("%w: directory entry of %d bytes", ErrCorrupt, len(p))
	}
	return ObjID(binary.BigEndian.Uint64(p)), Kind(p[8]), nil
}
