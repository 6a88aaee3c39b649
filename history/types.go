package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/asof/asof/history/internal/pack"
	"github.com/asof/asof/history/internal/record"
)

// ObjID names an object (file, directory, symlink, ...) for its whole life
// and beyond: ids are never reused, so handles derived from them stay
// unambiguous across renames, restarts and deletes.
type ObjID = record.ObjID

// TID is a transaction id: nanoseconds since the Unix epoch of the moment the
// transaction committed (bumped by one when the clock has not advanced or
// went backwards). A moment therefore maps to a TID without any lookup, and
// "as of T" means "after every transaction with id <= T".
type TID = record.TID

// Live reads the newest state, including changes not yet committed.
const Live TID = math.MaxUint64

// RootID is the object id of the root directory, created by Open.
const RootID ObjID = 1

// TIDAt is the TID that stands for moment m.
func TIDAt(m time.Time) TID {
	n := m.UnixNano()
	if n < 0 {
		return 0
	}
	return TID(n)
}

// Kind is the type of an object.
type Kind uint8

const (
	KindFile Kind = iota + 1
	KindDir
	KindSymlink
	KindChar
	KindBlock
	KindFifo
	KindSocket
)

func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDir:
		return "dir"
	case KindSymlink:
		return "symlink"
	case KindChar:
		return "char"
	case KindBlock:
		return "block"
	case KindFifo:
		return "fifo"
	case KindSocket:
		return "socket"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Inode is an object's attribute record. Size is kept by the engine (writes
// and truncates move it); the other fields belong to the caller.
type Inode struct {
	Kind  Kind
	Mode  uint32 // permission bits with setuid, setgid and sticky (07777)
	Uid   uint32
	Gid   uint32
	Nlink uint32
	Size  uint64
	Rdev  uint64
	Atime int64 // ns since the epoch
	Mtime int64
	Ctime int64
	Btime int64
}

const inodeLen = 1 + 4*4 + 8*2 + 8*4

func (ino *Inode) encode() []byte {
	b := make([]byte, inodeLen)
	b[0] = byte(ino.Kind)
	binary.BigEndian.PutUint32(b[1:], ino.Mode)
	binary.BigEndian.PutUint32(b[5:], ino.Uid)
	binary.BigEndian.PutUint32(b[9:], ino.Gid)
	binary.BigEndian.PutUint32(b[13:], ino.Nlink)
	binary.BigEndian.PutUint64(b[17:], ino.Size)
	binary.BigEndian.PutUint64(b[25:], ino.Rdev)
	binary.BigEndian.PutUint64(b[33:], uint64(ino.Atime))
	binary.BigEndian.PutUint64(b[41:], uint64(ino.Mtime))
	binary.BigEndian.PutUint64(b[49:], uint64(ino.Ctime))
	binary.BigEndian.PutUint64(b[57:], uint64(ino.Btime))
	return b
}

func decodeInode(b []byte) (Inode, error) {
	if len(b) != inodeLen {
		return Inode{}, fmt.Errorf("%w: inode record of %d bytes", ErrCorrupt, len(b))
	}
	return Inode{
		Kind:  Kind(b[0]),
		Mode:  binary.BigEndian.Uint32(b[1:]),
		Uid:   binary.BigEndian.Uint32(b[5:]),
		Gid:   binary.BigEndian.Uint32(b[9:]),
		Nlink: binary.BigEndian.Uint32(b[13:]),
		Size:  binary.BigEndian.Uint64(b[17:]),
		Rdev:  binary.BigEndian.Uint64(b[25:]),
		Atime: int64(binary.BigEndian.Uint64(b[33:])),
		Mtime: int64(binary.BigEndian.Uint64(b[41:])),
		Ctime: int64(binary.BigEndian.Uint64(b[49:])),
		Btime: int64(binary.BigEndian.Uint64(b[57:])),
	}, nil
}

// Change says what a transaction did to one object; a version carries the
// union of its kinds.
type Change = record.Change

const (
	ChangeCreated = record.ChangeCreated
	ChangeWritten = record.ChangeWritten // file data or directory entries or symlink target
	ChangeAttr    = record.ChangeAttr    // attributes only
	ChangeRenamed = record.ChangeRenamed // noted by the caller: the object got a new name
	ChangeDeleted = record.ChangeDeleted // the object ended
	ChangeXattr   = record.ChangeXattr
)

// Hash addresses a block by its content (SHA-256), which is also its
// checksum.
type Hash = record.Hash

// HashLen is the size of a block address.
const HashLen = record.HashLen

func HashOf(p []byte) Hash { return record.HashOf(p) }

// Record is the unit of truth: one piece of an object's state, valid from
// the transaction Create up to (not including) Delete; Delete 0 means live.
type Record = record.Record

// Version is one transaction's change to one object.
type Version struct {
	TID    TID
	Change Change
	Size   uint64
}

var (
	// ErrNotFound: no such object or key as of the moment asked.
	ErrNotFound = errors.New("history: not found")
	// ErrCorrupt: a checksum did not match; the damaged data is never served.
	ErrCorrupt = record.ErrCorrupt
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("history: store closed")
	// ErrWouldBlock: a read asked not to wait for the disk (ReadView with
	// nowait) would have to.
	ErrWouldBlock = pack.ErrWouldBlock
)
