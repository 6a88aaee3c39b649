// Package record holds what every part of the store names: object and
// transaction ids, block hashes, records and their keys, and the encoding
// of a data record's chunk reference.
package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"time"
)

// Castagnoli is the CRC-32C table every checksum of the store uses.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt: a checksum did not match; the damaged data is never served.
var ErrCorrupt = errors.New("history: checksum mismatch")

// ObjID names an object (file, directory, symlink, ...) for its whole life
// and beyond: ids are never reused, so handles derived from them stay
// unambiguous across renames, restarts and deletes.
type ObjID uint64

// TID is a transaction id: nanoseconds since the Unix epoch of the moment the
// transaction committed (bumped by one when the clock has not advanced or
// went backwards). A moment therefore maps to a TID without any lookup, and
// "as of T" means "after every transaction with id <= T".
type TID uint64

// Time is the wall-clock moment a TID stands for.
func (t TID) Time() time.Time { return time.Unix(0, int64(t)).UTC() }

func (t TID) String() string { return fmt.Sprintf("0x%016x", uint64(t)) }

// Change says what a transaction did to one object; a version carries the
// union of its kinds.
type Change uint8

const (
	ChangeCreated Change = 1 << iota
	ChangeWritten        // file data or directory entries or symlink target
	ChangeAttr           // attributes only
	ChangeRenamed        // noted by the caller: the object got a new name
	ChangeDeleted        // the object ended
	ChangeXattr
)

func (c Change) String() string {
	names := []string{"created", "written", "attributes", "renamed", "deleted", "xattr"}
	s := ""
	for i, n := range names {
		if c&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += n
		}
	}
	if s == "" {
		return "none"
	}
	return s
}

// HashLen is the size of a block address.
const HashLen = sha256.Size

// Hash addresses a block by its content. SHA-256: collision resistant, so
// two different blocks never share an address and dedup is safe whoever
// writes the data; it is in the standard library; and this kind of machine
// has the SHA extensions, which hash at well over 1 GB/s per core, faster
// than the disk. The hash doubles as the block's checksum.
type Hash [HashLen]byte

func HashOf(p []byte) Hash { return sha256.Sum256(p) }

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Record keys. Every key is NUL-free (POSIX names and xattr names cannot
// hold NUL, chunk numbers are hex), so an index key can end a key with a NUL
// and sort all versions of one (object, key) together, newest last, and all
// of a directory's entries in name order.
const (
	KeyInode    = "i"
	KeySymlink  = "s"
	PrefixDir   = "d" // + entry name
	PrefixData  = "x" // + 16 hex digits: chunk number
	PrefixXattr = "e" // + attribute name
	PrefixMeta  = "m" // + name: the file system's own bookkeeping, on the root
)

func DirentKey(name string) string { return PrefixDir + name }
func XattrKey(name string) string  { return PrefixXattr + name }
func ChunkKey(idx uint64) string {
	var b [17]byte
	b[0] = PrefixData[0]
	PutChunkHex(b[1:], idx)
	return string(b[:])
}

// PutChunkHex writes a chunk index as ChunkKey spells it: 16 hex digits,
// which sort as the numbers do.
func PutChunkHex(b []byte, idx uint64) {
	const digits = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = digits[idx&15]
		idx >>= 4
	}
}

func ChunkOfKey(key string) (uint64, bool) {
	if len(key) != 17 || key[0] != PrefixData[0] {
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
	return Checksum(r.Obj, r.Create, r.Delete, r.Key, r.Payload)
}

// Checksum is Record.Checksum of a record's fields, with the key as it
// lies in an index key.
func Checksum[K string | []byte](obj ObjID, create, del TID, key K, payload []byte) uint32 {
	var h [8 * 3]byte
	binary.BigEndian.PutUint64(h[0:], uint64(obj))
	binary.BigEndian.PutUint64(h[8:], uint64(create))
	binary.BigEndian.PutUint64(h[16:], uint64(del))
	c := crc32.Update(0, Castagnoli, h[:])
	c = crc32.Update(c, Castagnoli, []byte(key))
	c = crc32.Update(c, Castagnoli, []byte{0})
	return crc32.Update(c, Castagnoli, payload)
}

// Data records describe one chunk of a file: either the bytes themselves
// (small data lives inline) or the hash of a block holding them.
const (
	chunkInline byte = 0
	chunkBlock  byte = 1
)

// ChunkRef is a data record's payload, decoded.
type ChunkRef struct {
	Inline []byte // when not a block
	Hash   Hash
	Length uint32
	Block  bool
}

func EncodeChunk(c ChunkRef) []byte {
	if !c.Block {
		return append([]byte{chunkInline}, c.Inline...)
	}
	b := make([]byte, 1+4+len(c.Hash))
	b[0] = chunkBlock
	binary.BigEndian.PutUint32(b[1:], c.Length)
	copy(b[5:], c.Hash[:])
	return b
}

func DecodeChunk(p []byte) (ChunkRef, error) {
	if len(p) == 0 {
		return ChunkRef{}, fmt.Errorf("%w: empty data record", ErrCorrupt)
	}
	switch p[0] {
	case chunkInline:
		return ChunkRef{Inline: p[1:]}, nil
	case chunkBlock:
		if len(p) != 1+4+HashLen {
			return ChunkRef{}, fmt.Errorf("%w: block reference of %d bytes", ErrCorrupt, len(p))
		}
		c := ChunkRef{Block: true, Length: binary.BigEndian.Uint32(p[1:])}
		copy(c.Hash[:], p[5:])
		return c, nil
	}
	return ChunkRef{}, fmt.Errorf("%w: data record of type %d", ErrCorrupt, p[0])
}
