package record

import (
	"bytes"
	"errors"
	"testing"
)

// Chunk keys sort as their numbers do, and read back as them.
func TestChunkKeysSortByNumber(t *testing.T) {
	prev := ""
	for _, idx := range []uint64{0, 1, 15, 16, 255, 1 << 20, 1<<64 - 1} {
		k := ChunkKey(idx)
		if k <= prev {
			t.Fatalf("chunk %d's key %q sorts before %q", idx, k, prev)
		}
		if got, ok := ChunkOfKey(k); !ok || got != idx {
			t.Fatalf("key %q reads back as %d, %v", k, got, ok)
		}
		prev = k
	}
	if _, ok := ChunkOfKey(DirentKey("x0000000000000000")); ok {
		t.Fatal("a directory entry's key read as a chunk")
	}
}

// A chunk reference reads back as written, and a malformed one is
// ErrCorrupt.
func TestChunkRefRoundTrip(t *testing.T) {
	block := ChunkRef{Block: true, Hash: HashOf([]byte("b")), Length: 16384}
	inline := ChunkRef{Inline: []byte("small")}
	for _, c := range []ChunkRef{block, inline} {
		got, err := DecodeChunk(EncodeChunk(c))
		if err != nil || got.Block != c.Block || got.Hash != c.Hash || got.Length != c.Length || !bytes.Equal(got.Inline, c.Inline) {
			t.Fatalf("%+v read back as %+v, %v", c, got, err)
		}
	}
	for _, p := range [][]byte{nil, {1, 0, 0}, {7}} {
		if _, err := DecodeChunk(p); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%x: %v, want ErrCorrupt", p, err)
		}
	}
}
