package nfs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/asof/asof/integration/clients"
	"github.com/asof/asof/integration/serverproc"
)

// startWith starts a server with extra environment.
func startWith(t *testing.T, env map[string]string) (*serverproc.Server, clients.NFS) {
	t.Helper()
	env["ASOF_HISTORY_FLUSH_INTERVAL"] = flush.String()
	s := serverproc.Start(t, serverproc.Options{NoNineP: true, Env: env})
	return s, clients.NFS{Addr: s.NFSAddr, Timeout: time.Minute}
}

type pruneReport struct {
	DryRun       bool   `json:"dry_run"`
	Moments      int64  `json:"moments"`
	Records      int64  `json:"records"`
	Versions     int64  `json:"versions"`
	Blocks       int64  `json:"blocks"`
	BlockBytes   int64  `json:"block_bytes"`
	StoredBefore int64  `json:"stored_before"`
	StoredAfter  int64  `json:"stored_after"`
	Oldest       string `json:"oldest"`
}

type statsReply struct {
	StoredBytes int64     `json:"stored_bytes"`
	Versions    int64     `json:"versions"`
	Oldest      time.Time `json:"oldest"`
	Retention   string    `json:"retention"`
	LastPrune   *struct {
		Records int64 `json:"records"`
	} `json:"last_prune"`
}

// TestPruneThinsHistory: with a retention policy of one grain per second
// for three seconds and nothing older, history written through NFS thins
// to the live state once it is older than that; `asof prune --dry-run`
// says what would go and changes nothing, `asof prune` removes it and
// frees the blocks of overwritten data; reads of a thinned moment see the
// state it collapsed into; verify finds the store sound.
func TestPruneThinsHistory(t *testing.T) {
	needLibNFS(t)
	s, c := startWith(t, map[string]string{"ASOF_RETENTION": "1s for 3s"})
	ctx := context.Background()
	if !strings.Contains(s.Log(), "cleaner: thinning history by the retention policy") {
		t.Fatalf("no cleaner at start-up:\n%s", s.Log())
	}
	admin := func(args ...string) string {
		t.Helper()
		out, _, err := s.Admin(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	stats := func() statsReply {
		t.Helper()
		var st statsReply
		if err := json.Unmarshal([]byte(admin("stats", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	// Versions of a small file, and a large file overwritten: its first
	// content's blocks are needed by no kept moment once thinned.
	big := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	if err := c.Write(ctx, "/big.bin", big); err != nil {
		t.Fatal(err)
	}
	// nfs-cp creates GUARDED: later versions are WRITEs over the file.
	if err := c.Write(ctx, "/log.txt", []byte("v")); err != nil {
		t.Fatal(err)
	}
	p := dialProto(t, s.NFSAddr, "/")
	logFH, bigFH := p.lookup("log.txt"), p.lookup("big.bin")
	for i := 1; i < 4; i++ {
		time.Sleep(settle) // past the flush interval: versions of their own
		if st := p.write(logFH, 0, []byte(strings.Repeat("v", i+1))); st != nfsOK {
			t.Fatalf("WRITE: %s", statusName(st))
		}
	}
	firstTID := history(t, s, "/log.txt")[0].TID
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	for off := 0; off < len(big); off += 32 << 10 {
		if st := p.write(bigFH, uint64(off), big[off:off+32<<10]); st != nfsOK {
			t.Fatalf("WRITE: %s", statusName(st))
		}
	}
	time.Sleep(settle)
	if n := len(history(t, s, "/log.txt")); n != 4 {
		t.Fatalf("%d versions of log.txt before thinning, want 4", n)
	}
	before := stats()
	if before.Retention != "[1s for 3s]" {
		t.Fatalf("stats retention %q", before.Retention)
	}

	// Everything but the live state is now older than every window. The
	// cleaner's own next pass is about 10 s after start-up: these come first.
	time.Sleep(3500 * time.Millisecond)
	var dry, real pruneReport
	if err := json.Unmarshal([]byte(admin("prune", "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || dry.Records == 0 || dry.Blocks < 16 || dry.Moments == 0 {
		t.Fatalf("dry run: %+v", dry)
	}
	if n := len(history(t, s, "/log.txt")); n != 4 {
		t.Fatalf("a dry run changed history: %d versions", n)
	}
	if err := json.Unmarshal([]byte(admin("prune", "--json")), &real); err != nil {
		t.Fatal(err)
	}
	if real.Records != dry.Records || real.Blocks != dry.Blocks || real.StoredAfter >= real.StoredBefore {
		t.Fatalf("prune %+v after dry run %+v", real, dry)
	}
	t.Logf("prune: %+v", real)

	// One version left: the live one, carrying every change merged into it.
	vs := history(t, s, "/log.txt")
	if len(vs) != 1 || vs[0].Size != 4 || !strings.Contains(vs[0].Change, "created") {
		t.Fatalf("history after prune: %+v", vs)
	}
	// A thinned moment reads as the state it collapsed into: the live one.
	if got, err := c.Cat(ctx, "/log.txt@@"+firstTID); err != nil || string(got) != "vvvv" {
		t.Fatalf("log.txt@@%s after prune: %q %v", firstTID, got, err)
	}
	if got, err := c.Cat(ctx, "/big.bin"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big.bin after prune: %d bytes, %v", len(got), err)
	}
	after := stats()
	if !after.Oldest.After(before.Oldest) || after.StoredBytes >= before.StoredBytes || after.LastPrune == nil {
		t.Fatalf("stats before %+v, after %+v", before, after)
	}
	// The human form says what was freed.
	out := admin("prune")
	for _, w := range []string{"records removed", "blocks freed", "stored bytes"} {
		if !strings.Contains(out, w) {
			t.Errorf("asof prune output lacks %q:\n%s", w, out)
		}
	}
	if out := admin("verify"); !strings.Contains(out, "no damage") {
		t.Fatalf("verify after prune:\n%s", out)
	}
}

// TestPruneWithoutPolicy: without retention nothing is ever pruned.
func TestPruneWithoutPolicy(t *testing.T) {
	needLibNFS(t)
	s, c := startWith(t, map[string]string{})
	ctx := context.Background()
	if err := c.Write(ctx, "/a.txt", []byte("a")); err != nil {
		t.Fatal(err)
	}
	p := dialProto(t, s.NFSAddr, "/")
	fh := p.lookup("a.txt")
	for i := 1; i < 3; i++ {
		time.Sleep(settle)
		if st := p.write(fh, 0, []byte(strings.Repeat("a", i+1))); st != nfsOK {
			t.Fatalf("WRITE: %s", statusName(st))
		}
	}
	time.Sleep(settle)
	out, _, err := s.Admin(ctx, "prune", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep pruneReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Records != 0 || rep.Moments != 0 {
		t.Fatalf("prune without a policy removed something: %+v", rep)
	}
	if n := len(history(t, s, "/a.txt")); n != 3 {
		t.Fatalf("%d versions left, want 3", n)
	}
}
