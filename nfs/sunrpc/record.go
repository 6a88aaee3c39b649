// Package sunrpc serves ONC RPC (RFC 5531) over TCP connections: record
// marking, the call and reply headers, credentials, and the scheduling of a
// connection's calls. What a call means is its Handler's business.
//
// The protocol's numbers come from github.com/willscott/go-nfs and the
// go-nfs-client RPC package it is built on.
package sunrpc

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// MaxRecord bounds a call record: a WRITE of 1 MiB (NFS's wtmax) and its
// header, with room for clients that send more than they are told.
const MaxRecord = 4 << 20

// lastFragment marks the last fragment of a record in its 4-byte header;
// the other 31 bits are the fragment's length.
const lastFragment = 1 << 31

// readRecord reads one record, reassembling its fragments, into a buffer
// from the pool.
func readRecord(r io.Reader) (*[]byte, error) {
	var bp *[]byte
	n := 0
	for {
		var h [4]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			putBuf(bp)
			return nil, err
		}
		v := binary.BigEndian.Uint32(h[:])
		k := int(v &^ lastFragment)
		if n+k > MaxRecord {
			putBuf(bp)
			return nil, fmt.Errorf("sunrpc: a call record of more than %d bytes", MaxRecord)
		}
		if bp == nil || cap(*bp) < n+k {
			nb := getBuf(n + k)
			if bp != nil {
				*nb = append((*nb)[:0], (*bp)[:n]...)
				putBuf(bp)
			}
			bp = nb
		}
		*bp = (*bp)[:n+k]
		if _, err := io.ReadFull(r, (*bp)[n:]); err != nil {
			putBuf(bp)
			return nil, err
		}
		n += k
		if v&lastFragment != 0 {
			return bp, nil
		}
	}
}

// recordBuffered tells whether a whole one-fragment record is in br
// already, so that reading it will not wait for the client.
func recordBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 4 {
		return false
	}
	h, err := br.Peek(4)
	if err != nil {
		return false
	}
	v := binary.BigEndian.Uint32(h)
	return v&lastFragment != 0 && br.Buffered() >= 4+int(v&^lastFragment)
}

// Buffers for call records and replies: most are small; WRITE calls and
// READ replies are up to 1 MiB and a header.
const (
	smallBuf = 8 << 10
	bigBuf   = 1<<20 + 8<<10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, 0, smallBuf); return &b }}
	bigBufs   = sync.Pool{New: func() any { b := make([]byte, 0, bigBuf); return &b }}
)

// getBuf returns an empty buffer with room for n bytes.
func getBuf(n int) *[]byte {
	switch {
	case n <= smallBuf:
		return smallBufs.Get().(*[]byte)
	case n <= bigBuf:
		return bigBufs.Get().(*[]byte)
	}
	b := make([]byte, 0, n)
	return &b
}

// putBuf gives a buffer from getBuf back; nil is ignored.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	*b = (*b)[:0]
	switch cap(*b) {
	case smallBuf:
		smallBufs.Put(b)
	case bigBuf:
		bigBufs.Put(b)
	}
}
