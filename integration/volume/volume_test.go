package volume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// drain runs `asof volume drain NAME` while libnfs reads the live files and writes new
// ones; the clients must meet no error.
func (w *world) drain(step, name string) {
	w.t.Helper()
	stop := w.churn("churn", 256<<10)
	_, _, err := w.s.Admin(context.Background(), "volume", "drain", name)
	res := stop()
	if err != nil {
		w.t.Fatalf("%s: %v", step, err)
	}
	if len(res.errs) > 0 {
		w.t.Fatalf("%s: %d client errors during the drain, the first: %v", step, len(res.errs), res.errs[0])
	}
	w.t.Logf("%s: drained %s while libnfs read %d files and wrote %d", step, name, res.reads, res.writes)
}

// Directory to directory: add, drain and remove while the server serves; every file and
// past moment exact, and verify clean, after each step.
func TestVolumeDirToDir(t *testing.T) {
	w := startWorld(t, nil)
	a, b := newDir(t, "a"), newDir(t, "b")

	w.generation("g1", 6, 1<<20)
	w.check("before any volume")
	w.admin("volume", "add", "a", a)
	w.check("a added")
	// Everything sealed leaves the data directory for a.
	w.seal()
	w.drain("data drained to a", "data")
	w.empty("data drained to a", "data", "")
	if v, _ := w.volume("a"); v.Packs == 0 {
		t.Fatalf("data drained to a: a holds no pack: %+v", w.volumes())
	}
	if len(packFiles(t, a)) == 0 {
		t.Fatalf("data drained to a: no pack in %s", a)
	}
	w.check("data drained to a")
	w.verify("data drained to a", false)

	w.generation("g2", 4, 1<<20)
	w.seal()
	w.admin("volume", "add", "b", b)
	w.check("b added")
	w.drain("a drained to b", "a")
	w.empty("a drained to b", "a", a)
	w.check("a drained to b")
	w.verify("a drained to b", false)

	w.admin("volume", "remove", "a")
	if _, ok := w.volume("a"); ok {
		t.Fatalf("a removed: still listed: %+v", w.volumes())
	}
	w.check("a removed")
	w.verify("a removed", false)
	// and after a restart, read from b alone
	w.seal()
	w.check("restarted")
	w.verify("restarted", false)
}

// Directory to S3 and back: a bucket on versitygw takes the packs of a directory volume,
// then gives them back; verify --deep reads every block of the bucket.
func TestVolumeDirToS3(t *testing.T) {
	s3 := startS3(t)
	env := s3.env()
	env["ASOF_VOLUME_CACHE"] = "64MiB"
	w := startWorld(t, env)
	a := newDir(t, "a")

	w.generation("g1", 6, 1<<20)
	w.admin("volume", "add", "a", a)
	w.seal()
	w.drain("data drained to a", "data")
	w.check("data drained to a")

	w.admin("volume", "add", "s3", "s3://"+s3.Bucket+"/store1", "--endpoint", s3.Endpoint)
	w.check("s3 added")
	w.generation("g2", 4, 1<<20)
	w.seal()
	w.drain("a drained to s3", "a")
	w.empty("a drained to s3", "a", a)
	v, _ := w.volume("s3")
	if got := len(s3.packs(t, "store1/")); v.Packs == 0 || got != v.Packs || v.Bytes <= 0 {
		t.Fatalf("a drained to s3: volume list says %d packs, %d bytes on s3; the bucket holds %d packs", v.Packs, v.Bytes, got)
	}
	w.check("a drained to s3")
	w.verify("a drained to s3", true)
	w.admin("volume", "remove", "a")
	w.check("a removed")
	w.verify("a removed", true)

	// Cold: a restart with the cache dropped reads every block from the bucket again.
	if code, err := w.s.Term(); err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit %d, %v", code, err)
	}
	if err := os.RemoveAll(filepath.Join(w.s.DataDir, "cache")); err != nil {
		t.Fatal(err)
	}
	if err := w.s.Restart(); err != nil {
		t.Fatal(err)
	}
	w.check("cold cache")
	if c := w.volumes().Cache; c == nil || c.Max != 64<<20 || c.Used <= 0 || c.Used > c.Max || c.Misses == 0 {
		t.Fatalf("cold cache: volume list says the S3 cache is %+v; want volume_cache's 64 MiB bound, partly used", c)
	}

	// And back: s3 drained to a new directory volume, then removed.
	c := newDir(t, "c")
	w.admin("volume", "add", "c", c)
	w.drain("s3 drained to c", "s3")
	w.empty("s3 drained to c", "s3", "")
	if left := s3.packs(t, "store1/"); len(left) > 0 {
		t.Fatalf("s3 drained to c: the bucket still holds %v", left)
	}
	w.check("s3 drained to c")
	w.verify("s3 drained to c", false)
	w.admin("volume", "remove", "s3")
	w.check("s3 removed")
	w.verify("s3 removed", false)
}

// kill -9 of the server in the middle of drains, round after round: after each restart
// the drain goes on, nothing is lost, the drained volume ends with no pack left (no
// orphan), and verify is clean.
func TestVolumeKillMidDrain(t *testing.T) {
	const rounds = 5
	w := startWorld(t, nil)
	prev, prevDir := "v0", newDir(t, "v0")
	w.admin("volume", "add", prev, prevDir)
	// Many packs, so that a drain takes a while: each restart seals one.
	for i := 0; i < 4; i++ {
		w.generation("g", 3, 2<<20)
		w.seal()
	}
	w.drain("data drained to v0", "data")
	w.check("before the kills")
	mid := 0
	for r := 1; r <= rounds; r++ {
		name, dir := "v"+string(rune('0'+r)), newDir(t, "v"+string(rune('0'+r)))
		w.admin("volume", "add", name, dir)
		stop := w.churn("kill", 128<<10)
		drained := make(chan error, 1)
		go func() {
			_, _, err := w.s.Admin(context.Background(), "volume", "drain", prev)
			drained <- err
		}()
		// Kill once the first pack has landed on the new volume, a while later
		// each round.
		deadline := time.Now().Add(30 * time.Second)
		for len(packFiles(t, dir)) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(r-1) * 30 * time.Millisecond)
		res := stop()
		if err := w.s.Kill9(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-drained:
			if err == nil {
				t.Logf("round %d: the drain of %s finished before the kill", r, prev)
			} else {
				mid++
				t.Logf("round %d: killed mid-drain of %s (%d of its packs left): %v", r, prev, len(packFiles(t, prevDir)), err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the drain command did not end with the server", r)
		}
		if len(res.errs) > 0 {
			t.Fatalf("round %d: %d client errors before the kill, the first: %v", r, len(res.errs), res.errs[0])
		}
		if err := w.s.Restart(); err != nil {
			t.Fatal(err)
		}
		w.check("round " + string(rune('0'+r)) + " restarted")
		// The drain goes on where it stopped (run again, it finishes what is left).
		w.drain("round "+string(rune('0'+r))+" drain again", prev)
		w.empty("round "+string(rune('0'+r))+" drained", prev, prevDir)
		w.admin("volume", "remove", prev)
		w.check("round " + string(rune('0'+r)) + " removed")
		w.verify("round "+string(rune('0'+r)), false)
		// Only the live volume holds packs, and exactly those the index places there.
		v, _ := w.volume(name)
		if got := len(packFiles(t, dir)); got != v.Packs {
			t.Fatalf("round %d: %s holds %d pack files, the index places %d there", r, dir, got, v.Packs)
		}
		prev, prevDir = name, dir
	}
	if mid < rounds/2+1 {
		t.Fatalf("only %d of %d rounds killed the server mid-drain", mid, rounds)
	}
}

// The S3 server killed in the middle of a drain and of reads: reads of blocks in the
// bucket fail with EIO (nfs-cat fails, never returns wrong bytes), the server logs the
// outage once, writes go on, and everything catches up once the bucket is back.
func TestVolumeS3Outage(t *testing.T) {
	s3 := startS3(t)
	w := startWorld(t, s3.env())
	a := newDir(t, "a")
	w.admin("volume", "add", "a", a)
	for i := 0; i < 3; i++ {
		w.generation("g", 3, 2<<20)
		w.seal()
	}
	w.drain("data drained to a", "data")
	w.admin("volume", "add", "s3", "s3://"+s3.Bucket, "--endpoint", s3.Endpoint)

	// Mid-drain: the bucket goes once the first pack is in it.
	drained := make(chan error, 1)
	go func() {
		_, _, err := w.s.Admin(context.Background(), "volume", "drain", "a")
		drained <- err
	}()
	deadline := time.Now().Add(60 * time.Second)
	for len(s3.packs(t, "")) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	s3.Kill()
	if err := <-drained; err == nil {
		t.Log("the drain finished before the S3 server went")
	} else {
		t.Logf("drain with the S3 server gone: %v", err)
	}

	// Reads: files wholly on a read; files in the bucket (no cache: never read since
	// the cache was emptied) fail with EIO, never wrong bytes.
	ctx := context.Background()
	failed, fine := 0, 0
	w.mu.Lock()
	live := make(map[string][]byte, len(w.live))
	for k, v := range w.live {
		live[k] = v
	}
	w.mu.Unlock()
	for p, want := range live {
		got, err := w.nfs.Cat(ctx, p)
		if err != nil {
			// nfs-cat does not say which status; a READ of go-nfs-client does.
			if _, err := w.readStatus(p); err == nil || !strings.Contains(err.Error(), "NFS3ERR_IO") {
				t.Errorf("READ %s with the S3 server gone: %v, want NFS3ERR_IO", p, err)
			}
			failed++
			continue
		}
		if string(got) != string(want) {
			t.Fatalf("nfs-cat %s with the S3 server gone: %d bytes, not the %d written", p, len(got), len(want))
		}
		fine++
	}
	t.Logf("S3 down: %d files read whole, %d failed with EIO", fine, failed)
	if failed == 0 {
		t.Fatal("no read failed with the S3 server gone: nothing was read from the bucket")
	}
	// Writes go on.
	if err := w.write(ctx, "/while-down.bin", w.data(3<<20)); err != nil {
		t.Fatalf("write with the S3 server gone: %v", err)
	}
	if n := strings.Count(w.s.Log(), "S3 volume failing"); n != 1 {
		t.Errorf("the server logged the outage %d times, want once:\n%s", n, w.s.Log())
	}

	// Mid-read: the S3 server comes back, then goes again while a big file in the
	// bucket is being read; the read gives the right bytes or fails, never wrong ones.
	s3.Restart(t)
	var big string
	for p, c := range live {
		if len(c) >= 2<<20 {
			big = p
			break
		}
	}
	for i := 0; i < 3; i++ {
		res := make(chan error, 1)
		var got []byte
		go func() {
			var err error
			got, err = w.nfs.Cat(ctx, big)
			res <- err
		}()
		time.Sleep(time.Duration(5+20*i) * time.Millisecond)
		s3.Kill()
		err := <-res
		if err == nil && string(got) != string(live[big]) {
			t.Fatalf("nfs-cat %s with the S3 server killed mid-read: %d wrong bytes", big, len(got))
		}
		t.Logf("nfs-cat %s, S3 server killed mid-read: %d right bytes, or failed: %v", big, len(got), err)
		s3.Restart(t)
	}

	// Back: the drain goes on by itself (the mover keeps packs off a volume whose put
	// failed for half a minute), everything reads, verify --deep is clean.
	deadline = time.Now().Add(2 * time.Minute)
	for {
		v, _ := w.volume("a")
		if v.Packs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the drain did not go on once the S3 server was back: %+v", w.volumes())
		}
		time.Sleep(500 * time.Millisecond)
	}
	w.empty("after the outage", "a", a)
	// No copy the failed puts left behind: the bucket holds what the index places there.
	if v, _ := w.volume("s3"); len(s3.packs(t, "")) != v.Packs {
		t.Fatalf("after the outage: the bucket holds %v, the index places %d packs there", s3.packs(t, ""), v.Packs)
	}
	w.check("after the outage")
	w.verify("after the outage", true)
	if !strings.Contains(w.s.Log(), "S3 volume") {
		t.Error("no log line about the S3 volume")
	}
}

// A directory labelled by another store is refused, and nothing changes.
func TestVolumeOfAnotherStoreRefused(t *testing.T) {
	other := startWorld(t, nil)
	theirs := newDir(t, "theirs")
	other.admin("volume", "add", "x", theirs)

	w := startWorld(t, nil)
	before := w.volumes()
	_, _, err := w.s.Admin(context.Background(), "volume", "add", "x", theirs)
	if err == nil {
		t.Fatal("volume add of another store's volume succeeded")
	}
	if !strings.Contains(err.Error(), "another store") {
		t.Errorf("volume add of another store's volume: %v; want a message saying it is another store's", err)
	}
	t.Log(err)
	sameVolumes(t, "another store's volume", before, w.volumes())
}

// Bad input at volume add: each refused with a message naming the problem, and nothing
// changes.
func TestVolumeAddBadInput(t *testing.T) {
	s3 := startS3(t)
	w := startWorld(t, s3.env())
	wrong := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(wrong, []byte("[default]\naws_access_key_id = nobody\naws_secret_access_key = wrongwrongwrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := w.volumes()
	cases := []struct {
		what string
		args []string
		want string
	}{
		{"malformed URL", []string{"s3://Bad_Bucket!/x", "--endpoint", s3.Endpoint}, "bucket"},
		{"empty prefix element", []string{"s3://" + s3.Bucket + "/a//b", "--endpoint", s3.Endpoint}, "prefix"},
		{"no endpoint", []string{"s3://" + s3.Bucket}, "--endpoint"},
		{"endpoint with a path", []string{"s3://" + s3.Bucket, "--endpoint", s3.Endpoint + "/path"}, "endpoint"},
		{"unreachable endpoint", []string{"s3://" + s3.Bucket, "--endpoint", "http://127.0.0.1:1"}, "cannot reach"},
		{"wrong credentials", []string{"s3://" + s3.Bucket, "--endpoint", s3.Endpoint, "--credentials-file", wrong}, "credentials"},
		{"missing bucket", []string{"s3://no-such-bucket", "--endpoint", s3.Endpoint}, "no-such-bucket"},
		{"missing directory", []string{filepath.Join(t.TempDir(), "absent")}, "absent"},
	}
	for _, c := range cases {
		_, _, err := w.s.Admin(context.Background(), append([]string{"volume", "add", "bad"}, c.args...)...)
		if err == nil {
			t.Errorf("%s: volume add succeeded", c.what)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want a message naming %q", c.what, err, c.want)
		}
		t.Logf("%s: %v", c.what, err)
		sameVolumes(t, c.what, before, w.volumes())
	}
	if strings.Contains(w.s.Log(), s3.Secret) || strings.Contains(w.s.Log(), "wrongwrongwrong") {
		t.Error("the server log holds a secret")
	}
}

func sameVolumes(t *testing.T, what string, a, b any) {
	t.Helper()
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	// Free space moves with everything else on the machine; the rest must not.
	if strip(ja) != strip(jb) {
		t.Errorf("%s: volume list changed:\n%s\n%s", what, ja, jb)
	}
}

func strip(j []byte) string {
	var r struct {
		Volumes []map[string]any `json:"volumes"`
	}
	json.Unmarshal(j, &r)
	for _, v := range r.Volumes {
		delete(v, "free")
	}
	out, _ := json.Marshal(r)
	return string(out)
}

// kill -9 in the middle of drains to S3: a directory volume drained into a bucket, then
// that bucket's prefix drained into another prefix (a pack downloaded, checked and put),
// round after round; after each restart the drain finishes, nothing is lost, the drained
// volume ends empty and the bucket holds exactly what the index places there.
func TestVolumeKillMidDrainToS3(t *testing.T) {
	const rounds = 3
	s3 := startS3(t)
	w := startWorld(t, s3.env())
	prev, prevDir, prevPrefix := "v0", newDir(t, "v0"), ""
	w.admin("volume", "add", prev, prevDir)
	for i := 0; i < 3; i++ {
		w.generation("g", 3, 2<<20)
		w.seal()
	}
	w.drain("data drained to v0", "data")
	mid := 0
	for r := 1; r <= rounds; r++ {
		step := fmt.Sprintf("round %d", r)
		name, prefix := fmt.Sprintf("s%d", r), fmt.Sprintf("r%d/", r)
		w.admin("volume", "add", name, "s3://"+s3.Bucket+"/"+prefix, "--endpoint", s3.Endpoint)
		stop := w.churn("kill", 128<<10)
		drained := make(chan error, 1)
		go func() {
			_, _, err := w.s.Admin(context.Background(), "volume", "drain", prev)
			drained <- err
		}()
		deadline := time.Now().Add(60 * time.Second)
		for len(s3.packs(t, prefix)) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Duration(r-1) * 100 * time.Millisecond)
		res := stop()
		if err := w.s.Kill9(); err != nil {
			t.Fatal(err)
		}
		if err := <-drained; err == nil {
			t.Logf("%s: the drain of %s finished before the kill", step, prev)
		} else {
			mid++
			t.Logf("%s: killed mid-drain of %s: %v", step, prev, err)
		}
		if len(res.errs) > 0 {
			t.Fatalf("%s: %d client errors before the kill, the first: %v", step, len(res.errs), res.errs[0])
		}
		if err := w.s.Restart(); err != nil {
			t.Fatal(err)
		}
		w.check(step + " restarted")
		w.drain(step+" drain again", prev)
		w.empty(step+" drained", prev, prevDir)
		if prevDir == "" {
			if left := s3.packs(t, prevPrefix); len(left) > 0 {
				t.Fatalf("%s: drained %s still has %v", step, prev, left)
			}
		}
		w.admin("volume", "remove", prev)
		w.check(step + " removed")
		w.verify(step, true)
		if v, _ := w.volume(name); len(s3.packs(t, prefix)) != v.Packs {
			t.Fatalf("%s: %s holds %v, the index places %d packs there", step, prefix, s3.packs(t, prefix), v.Packs)
		}
		prev, prevDir, prevPrefix = name, "", prefix
	}
	if mid < 2 {
		t.Fatalf("only %d of %d rounds killed the server mid-drain", mid, rounds)
	}
}
