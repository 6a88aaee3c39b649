package history

import (
	"encoding/binary"
	"errors"

	"github.com/asof/asof/history/internal/intent"
	"github.com/asof/asof/history/internal/record"
)

// Intent operations: the primitive changes a Tx makes, replayable in order.
const (
	iopNewObj  = 1  // obj, inode
	iopInode   = 2  // obj, inode
	iopEndObj  = 3  // obj
	iopPut     = 4  // obj, key, payload
	iopDel     = 5  // obj, key
	iopWrite   = 6  // obj, off, data
	iopTrunc   = 7  // obj, size
	iopNote    = 8  // obj, change
	iopReserve = 9  // object high-water mark
	iopCopy    = 10 // obj (destination), n (moment), data (source object id)
	iopAtime   = 11 // obj, n (access time)
)

type iop struct {
	kind byte
	obj  ObjID
	key  string
	data []byte
	n    uint64 // offset, size, change or high-water mark
}

func appendIop(b []byte, op iop) []byte {
	return append(appendIopHead(b, op), op.data...)
}

// appendIopHead appends an operation's encoding up to its data.
func appendIopHead(b []byte, op iop) []byte {
	b = append(b, op.kind)
	b = binary.BigEndian.AppendUint64(b, uint64(op.obj))
	b = binary.BigEndian.AppendUint64(b, op.n)
	b = binary.BigEndian.AppendUint16(b, uint16(len(op.key)))
	b = append(b, op.key...)
	return binary.BigEndian.AppendUint32(b, uint32(len(op.data)))
}

func decodeIops(body []byte) ([]iop, error) {
	r := record.Reader{B: body}
	var ops []iop
	for r.Off < len(body) && r.Err == nil {
		op := iop{kind: r.U8(), obj: ObjID(r.U64()), n: r.U64()}
		op.key = string(r.Bytes(int(r.U16())))
		op.data = r.Bytes(int(r.U32()))
		ops = append(ops, op)
	}
	if r.Err != nil {
		return nil, errors.New("history: intent entry truncated")
	}
	return ops, nil
}

// addIop appends op's encoding to e; with dataHeld, only up to its data,
// which the caller then holds (Entry.Hold).
func addIop(e *intent.Entry, op iop, dataHeld bool) {
	if dataHeld {
		e.Add(func(b []byte) []byte { return appendIopHead(b, op) })
	} else {
		e.Add(func(b []byte) []byte { return appendIop(b, op) })
	}
}
