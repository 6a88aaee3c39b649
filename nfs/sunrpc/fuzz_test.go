package sunrpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// call is the record of a call with its record mark: credential flavor
// and body, then args.
func call(xid, prog, vers, proc, flavor uint32, cred, args []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0)
	for _, v := range []uint32{xid, msgCall, rpcVersion, prog, vers, proc, flavor, uint32(len(cred))} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	b = append(b, cred...)
	b = append(b, padding(len(cred))...)
	b = binary.BigEndian.AppendUint64(b, 0) // AUTH_NONE verifier
	b = append(b, args...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4)|lastFragment)
	return b
}

func unixCred(uid, gid uint32, groups ...uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, 7) // stamp
	b = binary.BigEndian.AppendUint32(b, 4)
	b = append(b, "host"...)
	b = binary.BigEndian.AppendUint32(b, uid)
	b = binary.BigEndian.AppendUint32(b, gid)
	b = binary.BigEndian.AppendUint32(b, uint32(len(groups)))
	for _, g := range groups {
		b = binary.BigEndian.AppendUint32(b, g)
	}
	return b
}

// A byte stream read as call records: whatever it holds, reading ends
// (at the end of the stream at the latest), every record read is at most
// MaxRecord, and decoding a record either fails or gives a call whose
// parts lie within the record; an AUTH_SYS credential decodes to at most
// 16 groups or fails.
func FuzzReadCall(f *testing.F) {
	args := []byte{0, 0, 0, 4, 1, 2, 3, 4}
	f.Add(call(1, 100003, 3, 1, AuthSys, unixCred(1000, 1000, 4, 24), args))
	f.Add(call(2, 100003, 3, 0, AuthNone, nil, nil))
	f.Add(call(3, 100005, 3, 1, 6, []byte{1, 2, 3, 4}, args))
	// Two fragments.
	whole := call(4, 100003, 3, 6, AuthSys, unixCred(0, 0), args)
	frag := binary.BigEndian.AppendUint32(nil, 10)
	frag = append(frag, whole[4:14]...)
	frag = binary.BigEndian.AppendUint32(frag, uint32(len(whole)-14)|lastFragment)
	f.Add(append(frag, whole[14:]...))
	f.Add([]byte{0x80, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for i := 0; ; i++ {
			if i > len(stream) {
				t.Fatal("more records than bytes")
			}
			rb, err := readRecord(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && len(stream) < MaxRecord {
					// Only a record too long fails otherwise, and
					// its header says so.
					if !bytes.Contains([]byte(err.Error()), []byte("more than")) {
						t.Fatalf("readRecord: %v", err)
					}
				}
				return
			}
			rec := *rb
			if len(rec) > MaxRecord {
				t.Fatalf("a record of %d bytes", len(rec))
			}
			var c Call
			ok, err := decodeCall(rec, &c)
			if err == nil && ok {
				if len(c.Cred)+len(c.Args) > len(rec) || len(c.Cred) > maxAuth {
					t.Fatalf("a call's parts are longer than its record")
				}
				c.Flavor = AuthSys
				if u, err := c.Unix(); err == nil && len(u.Groups()) > maxGroups {
					t.Fatalf("%d groups", len(u.Groups()))
				}
			}
			putBuf(rb)
		}
	})
}
