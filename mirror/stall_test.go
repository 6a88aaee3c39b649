package mirror

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/asof/asof/history"
)

// A target that stops reading (a SIGSTOPped process, a dead link that has
// not timed out) holds up nothing on its source: commits go on at their
// pace, and a cleaner pass, log compaction included, runs to the end.
func TestStalledTargetStallsNothing(t *testing.T) {
	src := startSource(t, t.TempDir())
	f := src.fs
	n, _, err := f.Create(root, f.Root(), "big", 0o644, false)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 24<<20)
	rand.Read(data)
	if _, err := f.Write(root, n, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Commit(); err != nil {
		t.Fatal(err)
	}

	// A target that asks for the frames and every block, then reads
	// nothing more.
	c, err := net.Dial("tcp", src.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	_, body, err := readMsg(r, maxHandshake)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := decodeHello(body)
	nonce := bytes.Repeat([]byte{9}, nonceLen)
	writeMsg(w, msgAuth, auth{version: Version, mac: mac(src.token, labelTarget, h.nonce, nonce), nonce: nonce, name: "stalled"}.encode())
	w.Flush()
	if typ, _, err := readMsg(r, maxHandshake); err != nil || typ != msgWelcome {
		t.Fatalf("handshake: %d %v", typ, err)
	}
	writeMsg(w, msgPull, pull{maxFrames: 1000, maxBytes: 64 << 20}.encode())
	w.Flush()
	_, body, err = readMsg(r, maxMessage)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decodeBatch(body)
	if err != nil {
		t.Fatal(err)
	}
	var hashes []history.Hash
	for _, fr := range b.Frames {
		for _, op := range fr.Ops {
			if op.Kind == history.OpCreate && len(op.Payload) == 1+4+history.HashLen && op.Payload[0] == 1 {
				var hh history.Hash
				copy(hh[:], op.Payload[5:])
				hashes = append(hashes, hh)
			}
		}
	}
	if len(hashes) < 1000 {
		t.Fatalf("%d blocks named", len(hashes))
	}
	writeMsg(w, msgNeed, encodeHashes(hashes))
	w.Flush()
	// Now it reads nothing: the source's writes to it block.
	deadline := time.Now().Add(10 * time.Second)
	for src.src.Status().Targets[0].SentBytes < 1<<20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	// The source changes the file over and over; each commit is quick,
	// and a cleaner pass drops the versions and rewrites the log.
	start := time.Now()
	var slowest time.Duration
	for i := 0; i < 40; i++ {
		if _, err := f.Write(root, n, bytes.Repeat([]byte{byte(i)}, 64<<10), int64(i)<<16, false); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if _, err := f.Commit(); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	time.Sleep(1100 * time.Millisecond) // the grain of the writes above ends
	t0 := time.Now()
	rep, err := src.store.Prune(history.Policy{{Keep: time.Second, Forever: true}}, history.PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if rep.Records == 0 {
		t.Fatalf("the cleaner dropped nothing: %+v", rep)
	}
	if slowest > 2*time.Second || took > 10*time.Second {
		t.Fatalf("with a target stalled, the slowest commit took %s and the cleaner pass %s", slowest, took)
	}
	if st := src.src.Status(); len(st.Targets) != 1 || st.Targets[0].SentBytes > 20<<20 {
		t.Fatalf("the stalled target is not stalled: %+v", st)
	}
	t.Logf("40 commits in %s (slowest %s); cleaner pass %s: %d records, %d segments", time.Since(start), slowest, took, rep.Records, rep.Segments)
}
