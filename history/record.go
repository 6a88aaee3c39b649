package history

import (
	"encoding/binary"
	"fmt"
)

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

// ChunkSize is the file-offset grain of data records in a new store: a
// 1 GiB file is 65536 records, and rewriting 4 KiB costs one new 16 KiB
// block. Smaller chunks cost more records (and index) per byte, larger
// ones more bytes written and hashed per small write: 64 KiB chunks made
// a 4 KiB random write 2.5x slower, 4 KiB ones a sequential write 4x
// slower (see integration/bench/README.md). Stores made with 64 KiB keep
// it (FORMAT).
const ChunkSize = 16 << 10

// InlineMax is the largest chunk kept inside its record instead of a block.
const InlineMax = 4 << 10

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
