package record

import (
	"encoding/binary"
	"errors"
)

// ErrShort is a Reader's error: a field ran past the end of its buffer.
var ErrShort = errors.New("short")

// Reader decodes big-endian fields from B, remembering the first overrun
// in Err: a caller reads every field and checks Err once.
type Reader struct {
	B   []byte
	Off int
	Err error
}

func (r *Reader) take(n int) []byte {
	if r.Err != nil || n < 0 || r.Off+n > len(r.B) {
		r.Err = ErrShort
		return make([]byte, max(n, 0))
	}
	p := r.B[r.Off : r.Off+n]
	r.Off += n
	return p
}
func (r *Reader) U8() byte    { return r.take(1)[0] }
func (r *Reader) U16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *Reader) U32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *Reader) U64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

// Bytes is the next n bytes, copied.
func (r *Reader) Bytes(n int) []byte {
	p := r.take(n)
	return append([]byte(nil), p...)
}
