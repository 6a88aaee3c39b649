package mirror

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/asof/asof/history"
)

// seedMessages are one valid body of each message a peer decodes, by type.
func seedMessages() map[byte][]byte {
	frame := &history.Txn{TID: 1 << 60, ObjHigh: 9, Ops: []history.Op{
		{Kind: history.OpCreate, Obj: 1, Key: "dx", Create: 1 << 60, Payload: []byte{0, 0, 0, 0, 0, 0, 0, 2, 1}},
		{Kind: history.OpEnd, Obj: 1, Key: "i", Create: 5},
	}, Notes: []history.Note{{Obj: 1, Change: 1, Size: 3}}}
	return map[byte][]byte{
		msgHello:    hello{version: Version, nonce: bytes.Repeat([]byte{1}, nonceLen)}.encode(),
		msgAuth:     auth{version: Version, mac: bytes.Repeat([]byte{2}, macLen), nonce: bytes.Repeat([]byte{3}, nonceLen), name: "host:/data"}.encode(),
		msgWelcome:  welcome{mac: bytes.Repeat([]byte{4}, macLen), lineage: "7ece382c-fd16-4a4d-a416-e5ddd4c3b388", last: 77}.encode(),
		msgPull:     pull{since: 5, maxFrames: 10, maxBytes: 1 << 20, waitMs: 100}.encode(),
		msgBatch:    encodeBatch(&history.MirrorBatch{Last: 9, Base: 3, Collapses: []history.Collapse{{Lo: 4, To: 8}}, Frames: []*history.Txn{frame}}),
		msgNeed:     encodeHashes([]history.Hash{history.HashOf([]byte("a")), history.HashOf([]byte("b"))}),
		msgBlock:    encodeBlock(history.HashOf([]byte("data")), []byte("data"), true),
		msgHave:     encodeRecords([]history.RecordKey{{Obj: 3, Key: "x0000000000000001", Create: 99}}),
		msgHas:      encodeBits([]bool{true, false, true}),
		msgEntry:    encodeEntry(Entry{Path: "/a/b", Kind: history.KindFile, Problem: ""}),
		msgDigested: encodeU64s(1, 2),
		msgRefused:  encodeText("authentication failed"),
	}
}

// decodeAny decodes body as a message of type typ, as a peer would.
func decodeAny(typ byte, body []byte) (any, error) {
	switch typ {
	case msgHello:
		return decodeHello(body)
	case msgAuth:
		return decodeAuth(body)
	case msgWelcome:
		return decodeWelcome(body)
	case msgPull:
		return decodePull(body)
	case msgBatch:
		return decodeBatch(body)
	case msgNeed:
		return decodeHashes(body)
	case msgBlock:
		h, data, found, err := decodeBlock(body)
		return []any{h, data, found}, err
	case msgHave:
		return decodeRecords(body)
	case msgHas:
		return decodeBits(body)
	case msgEntry:
		return decodeEntry(body)
	case msgDigested:
		return decodeU64s(body, 2)
	default:
		return decodeText(body), nil
	}
}

func TestWireMessagesDecodeAsEncoded(t *testing.T) {
	for typ, body := range seedMessages() {
		v, err := decodeAny(typ, body)
		if err != nil {
			t.Fatalf("type %d: %v", typ, err)
		}
		// Every byte is part of the message: one more or one less fails.
		if typ != msgRefused && typ != msgBlock {
			if _, err := decodeAny(typ, append(body[:len(body):len(body)], 0)); err == nil {
				t.Errorf("type %d: a trailing byte was accepted", typ)
			}
			if _, err := decodeAny(typ, body[:len(body)-1]); err == nil {
				t.Errorf("type %d: a short body was accepted", typ)
			}
		}
		_ = v
	}
	b, _ := decodeBatch(seedMessages()[msgBatch])
	if b.Last != 9 || b.Base != 3 || !reflect.DeepEqual(b.Collapses, []history.Collapse{{Lo: 4, To: 8}}) || len(b.Frames) != 1 ||
		b.Frames[0].Ops[0].Key != "dx" || b.Frames[0].Notes[0].Size != 3 {
		t.Fatalf("batch %+v", b)
	}
	bits, _ := decodeBits(encodeBits([]bool{true, false, true, true, false, false, false, false, true}))
	if fmt.Sprint(bits) != "[true false true true false false false false true]" {
		t.Fatalf("bits %v", bits)
	}
	// A frame damaged on the way is refused by its checksum.
	raw := seedMessages()[msgBatch]
	raw[len(raw)-3] ^= 1
	if _, err := decodeBatch(raw); err == nil {
		t.Fatal("a damaged frame was accepted")
	}
	// A message longer than the reader allows is refused before it is read.
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeMsg(w, msgAuth, make([]byte, maxHandshake+1))
	w.Flush()
	if _, _, err := readMsg(bufio.NewReader(&buf), maxHandshake); err == nil {
		t.Fatal("an oversized handshake was read")
	}
}

// FuzzDecode feeds every decoder arbitrary bytes: the first byte picks the
// message type. A decoder may refuse, never panic or loop; what it accepts
// it must accept again once encoded.
func FuzzDecode(f *testing.F) {
	for typ, body := range seedMessages() {
		f.Add(append([]byte{typ}, body...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		typ, body := in[0], in[1:]
		v, err := decodeAny(typ, body)
		if err != nil {
			return
		}
		var again []byte
		switch m := v.(type) {
		case *history.MirrorBatch:
			again = encodeBatch(m)
		case []history.Hash:
			again = encodeHashes(m)
		case []history.RecordKey:
			again = encodeRecords(m)
		case pull:
			again = m.encode()
		default:
			return
		}
		if _, err := decodeAny(typ, again); err != nil {
			t.Fatalf("type %d: accepted, encoded again, refused: %v", typ, err)
		}
	})
}

// TestWriteFuzzCorpus writes the seeds as the committed corpus, when asked.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MIRROR_WRITE_CORPUS") == "" {
		t.Skip("set MIRROR_WRITE_CORPUS=1 to write testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	os.MkdirAll(dir, 0o755)
	for typ, body := range seedMessages() {
		in := append([]byte{typ}, body...)
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-type-%02d", typ)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	garbage := map[string][]byte{"http": []byte("\x06GET / HTTP/1.0\r\n\r\n"), "huge-count": {msgNeed, 0xff, 0xff, 0xff, 0xff}, "empty-batch": {msgBatch}}
	for name, in := range garbage {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
		if err := os.WriteFile(filepath.Join(dir, "garbage-"+name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
