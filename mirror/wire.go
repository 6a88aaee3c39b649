// Package mirror keeps a second asof store up to date with a first
// (docs/SPEC.md section 6): a source serves its committed transactions and
// the blocks they name over TCP, a target pulls them from the newest
// transaction it holds. The engine does the storing (history: MirrorRead,
// Applier); this package carries the stream, proves who is talking, and
// reports progress.
package mirror

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/asof/asof/history"
)

// The stream is a sequence of messages, each
//
//	type u8 | body length u32 | body
//
// in big-endian, as the engine's own frames. The first message each way is
// a handshake that names the stream's version: a peer that speaks another
// is refused with a message saying which. Transactions travel as the log
// holds them (history.EncodeFrame), with their checksums; blocks are
// checked by their SHA-256 on arrival.
//
//	source -> target  hello     magic [8] | version u16 | nonce [32]
//	target -> source  auth      version u16 | mac [32] | nonce [32] | name
//	source -> target  welcome   mac [32] | lineage | last tid u64
//	                  refused   reason
//
//	target -> source  pull      since u64 | max frames u32 | max bytes u32 | wait ms u32
//	source -> target  batch     last u64 | base u64 | n u32 | (lo u64 | to u64)* | n u32 | (length u32 | frame)*
//	target -> source  need      n u32 | hash [32]*
//	source -> target  block     hash [32] | found u8 | data          (one per hash asked, in order)
//	target -> source  have      n u32 | (obj u64 | key | create u64)*
//	source -> target  has       n u32 | bitmap
//	target -> source  digest    at u64
//	source -> target  entry     path | kind u8 | sum [32] | problem  (the tree at at, in order)
//	                  digested  asked u64 | read u64
//	source -> target  failed    reason                             (a request the source could not answer)
//
// Strings are length u16 | bytes (keys, names) or length u32 | bytes
// (reasons). A mac is HMAC-SHA256 of the token over a label and both
// nonces: the target proves it holds the token before the source says
// anything about itself, and the source proves it holds it too.
const (
	// Version is the stream's version.
	Version = 1
	magic   = "ASOFMIRR"

	msgHello    = 1
	msgAuth     = 2
	msgWelcome  = 3
	msgRefused  = 4
	msgPull     = 5
	msgBatch    = 6
	msgNeed     = 7
	msgBlock    = 8
	msgHave     = 9
	msgHas      = 10
	msgDigest   = 11
	msgEntry    = 12
	msgDigested = 13
	msgFailed   = 14

	nonceLen = 32
	macLen   = 32
	hashLen  = history.HashLen

	// maxHandshake bounds a message before the peer is known: garbage on
	// the port costs a few bytes of memory.
	maxHandshake = 4 << 10
	// maxMessage bounds a message from a peer that proved it holds the
	// token: a batch of frames, or one block.
	maxMessage = 1 << 30
)

var errMalformed = errors.New("mirror: malformed message")

// writeMsg sends one message.
func writeMsg(w *bufio.Writer, typ byte, body []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// readMsg reads one message of at most max bytes.
func readMsg(r *bufio.Reader, max int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if int64(n) > int64(max) {
		return 0, nil, fmt.Errorf("%w: a message of %d bytes (at most %d here)", errMalformed, n, max)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

// enc builds a message body.
type enc []byte

func (e *enc) u8(v byte)           { *e = append(*e, v) }
func (e *enc) u16(v uint16)        { *e = binary.BigEndian.AppendUint16(*e, v) }
func (e *enc) u32(v uint32)        { *e = binary.BigEndian.AppendUint32(*e, v) }
func (e *enc) u64(v uint64)        { *e = binary.BigEndian.AppendUint64(*e, v) }
func (e *enc) raw(b []byte)        { *e = append(*e, b...) }
func (e *enc) str16(s string)      { e.u16(uint16(len(s))); *e = append(*e, s...) }
func (e *enc) str32(s string)      { e.u32(uint32(len(s))); *e = append(*e, s...) }
func (e *enc) bytes32(b []byte)    { e.u32(uint32(len(b))); *e = append(*e, b...) }
func (e *enc) hash(h history.Hash) { *e = append(*e, h[:]...) }

// dec reads a message body, remembering the first overrun.
type dec struct {
	b   []byte
	err bool
}

func (d *dec) take(n int) []byte {
	if d.err || n < 0 || n > len(d.b) {
		d.err = true
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) u8() byte {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *dec) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

func (d *dec) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}

func (d *dec) str16() string { return string(d.take(int(d.u16()))) }
func (d *dec) str32() string { return string(d.take(int(d.u32()))) }

func (d *dec) hash() history.Hash {
	var h history.Hash
	copy(h[:], d.take(hashLen))
	return h
}

// count reads a count of items of at least min bytes each, refusing one
// the rest of the body cannot hold.
func (d *dec) count(min int) int {
	n := int(d.u32())
	if n > len(d.b)/min {
		d.err = true
		return 0
	}
	return n
}

// done fails a body that overran or has bytes left over.
func (d *dec) done(what string) error {
	if d.err || len(d.b) != 0 {
		return fmt.Errorf("%w: %s", errMalformed, what)
	}
	return nil
}

type hello struct {
	version uint16
	nonce   []byte
}

func (h hello) encode() []byte {
	var e enc
	e.raw([]byte(magic))
	e.u16(h.version)
	e.raw(h.nonce)
	return e
}

func decodeHello(b []byte) (hello, error) {
	d := dec{b: b}
	if string(d.take(len(magic))) != magic {
		return hello{}, fmt.Errorf("%w: not an asof mirror stream", errMalformed)
	}
	h := hello{version: d.u16()}
	if h.version != Version {
		// Said before the rest is checked: a later version may differ.
		return h, nil
	}
	h.nonce = d.take(nonceLen)
	return h, d.done("hello")
}

type auth struct {
	version uint16
	mac     []byte
	nonce   []byte
	name    string
}

func (a auth) encode() []byte {
	var e enc
	e.u16(a.version)
	e.raw(a.mac)
	e.raw(a.nonce)
	e.str16(a.name)
	return e
}

func decodeAuth(b []byte) (auth, error) {
	d := dec{b: b}
	a := auth{version: d.u16()}
	if a.version != Version && !d.err {
		return a, nil
	}
	a.mac = d.take(macLen)
	a.nonce = d.take(nonceLen)
	a.name = d.str16()
	return a, d.done("auth")
}

type welcome struct {
	mac     []byte
	lineage string
	last    history.TID
}

func (w welcome) encode() []byte {
	var e enc
	e.raw(w.mac)
	e.str16(w.lineage)
	e.u64(uint64(w.last))
	return e
}

func decodeWelcome(b []byte) (welcome, error) {
	d := dec{b: b}
	w := welcome{mac: d.take(macLen), lineage: d.str16(), last: history.TID(d.u64())}
	return w, d.done("welcome")
}

type pull struct {
	since     history.TID
	maxFrames uint32
	maxBytes  uint32
	waitMs    uint32
}

func (p pull) encode() []byte {
	var e enc
	e.u64(uint64(p.since))
	e.u32(p.maxFrames)
	e.u32(p.maxBytes)
	e.u32(p.waitMs)
	return e
}

func decodePull(b []byte) (pull, error) {
	d := dec{b: b}
	p := pull{since: history.TID(d.u64()), maxFrames: d.u32(), maxBytes: d.u32(), waitMs: d.u32()}
	return p, d.done("pull")
}

func encodeBatch(b *history.MirrorBatch) []byte {
	e := enc(make([]byte, 0, 1024))
	e.u64(uint64(b.Last))
	e.u64(uint64(b.Base))
	e.u32(uint32(len(b.Collapses)))
	for _, c := range b.Collapses {
		e.u64(uint64(c.Lo))
		e.u64(uint64(c.To))
	}
	e.u32(uint32(len(b.Frames)))
	for _, t := range b.Frames {
		e.bytes32(history.EncodeFrame(t))
	}
	return e
}

func decodeBatch(b []byte) (*history.MirrorBatch, error) {
	d := dec{b: b}
	mb := &history.MirrorBatch{Last: history.TID(d.u64()), Base: history.TID(d.u64())}
	n := d.count(16)
	for i := 0; i < n && !d.err; i++ {
		c := history.Collapse{Lo: history.TID(d.u64()), To: history.TID(d.u64())}
		if c.Lo >= c.To {
			return nil, fmt.Errorf("%w: collapsed range %s..%s", errMalformed, c.Lo, c.To)
		}
		mb.Collapses = append(mb.Collapses, c)
	}
	n = d.count(4)
	for i := 0; i < n && !d.err; i++ {
		raw := d.take(int(d.u32()))
		if d.err {
			break
		}
		t, err := history.DecodeFrame(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: frame %d: %v", errMalformed, i, err)
		}
		mb.Frames = append(mb.Frames, t)
	}
	return mb, d.done("batch")
}

func encodeHashes(hs []history.Hash) []byte {
	e := enc(make([]byte, 0, 4+len(hs)*hashLen))
	e.u32(uint32(len(hs)))
	for _, h := range hs {
		e.hash(h)
	}
	return e
}

func decodeHashes(b []byte) ([]history.Hash, error) {
	d := dec{b: b}
	n := d.count(hashLen)
	hs := make([]history.Hash, 0, n)
	for i := 0; i < n && !d.err; i++ {
		hs = append(hs, d.hash())
	}
	return hs, d.done("need")
}

// A block message carries one block asked for, or says the source no
// longer holds it (its cleaner freed it since the batch was read).
func encodeBlock(h history.Hash, data []byte, found bool) []byte {
	e := enc(make([]byte, 0, hashLen+1+len(data)))
	e.hash(h)
	if found {
		e.u8(1)
		e.raw(data)
	} else {
		e.u8(0)
	}
	return e
}

func decodeBlock(b []byte) (history.Hash, []byte, bool, error) {
	d := dec{b: b}
	h := d.hash()
	found := d.u8()
	if d.err || found > 1 || (found == 0 && len(d.b) > 0) {
		return h, nil, false, fmt.Errorf("%w: block", errMalformed)
	}
	return h, d.b, found == 1, nil
}

func encodeRecords(ks []history.RecordKey) []byte {
	var e enc
	e.u32(uint32(len(ks)))
	for _, k := range ks {
		e.u64(uint64(k.Obj))
		e.str16(k.Key)
		e.u64(uint64(k.Create))
	}
	return e
}

func decodeRecords(b []byte) ([]history.RecordKey, error) {
	d := dec{b: b}
	n := d.count(18)
	ks := make([]history.RecordKey, 0, n)
	for i := 0; i < n && !d.err; i++ {
		ks = append(ks, history.RecordKey{Obj: history.ObjID(d.u64()), Key: d.str16(), Create: history.TID(d.u64())})
	}
	return ks, d.done("have")
}

func encodeBits(bs []bool) []byte {
	var e enc
	e.u32(uint32(len(bs)))
	bits := make([]byte, (len(bs)+7)/8)
	for i, b := range bs {
		if b {
			bits[i/8] |= 1 << (i % 8)
		}
	}
	e.raw(bits)
	return e
}

func decodeBits(b []byte) ([]bool, error) {
	d := dec{b: b}
	n := int(d.u32())
	if n > len(d.b)*8 {
		return nil, fmt.Errorf("%w: has", errMalformed)
	}
	bits := d.take((n + 7) / 8)
	out := make([]bool, n)
	for i := range out {
		out[i] = bits[i/8]&(1<<(i%8)) != 0
	}
	return out, d.done("has")
}

func encodeEntry(en Entry) []byte {
	var e enc
	e.str16(en.Path)
	e.u8(byte(en.Kind))
	e.raw(en.Sum[:])
	e.str32(en.Problem)
	return e
}

func decodeEntry(b []byte) (Entry, error) {
	d := dec{b: b}
	en := Entry{Path: d.str16(), Kind: history.Kind(d.u8())}
	copy(en.Sum[:], d.take(len(en.Sum)))
	en.Problem = d.str32()
	return en, d.done("entry")
}

func encodeU64s(vs ...uint64) []byte {
	var e enc
	for _, v := range vs {
		e.u64(v)
	}
	return e
}

func decodeU64s(b []byte, n int) ([]uint64, error) {
	d := dec{b: b}
	out := make([]uint64, n)
	for i := range out {
		out[i] = d.u64()
	}
	return out, d.done("tid")
}

func encodeText(s string) []byte {
	var e enc
	e.str32(s)
	return e
}

func decodeText(b []byte) string {
	d := dec{b: b}
	s := d.str32()
	if d.done("text") != nil {
		return "(malformed)"
	}
	return s
}
