package history

import (
	"encoding/binary"
	"fmt"
)

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
