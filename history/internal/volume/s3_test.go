package volume_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/history/internal/volume"
	"github.com/asof/asof/internal/s3test"
)

// fastRetry keeps tests of an unreachable store short.
var fastRetry = volume.Retry{Attempts: 3, Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond, Timeout: 3 * time.Second, PutTimeout: 30 * time.Second}

// logBuf collects log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

func openS3(t *testing.T, srv *s3test.Server, prefix string, cache *volume.Cache, log io.Writer) *volume.S3 {
	t.Helper()
	srv.Env(t)
	if log == nil {
		log = io.Discard
	}
	v, err := volume.OpenS3(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: prefix,
		Cache: cache, Retry: fastRetry, Log: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

func localPack(t *testing.T, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	name := filepath.Join(t.TempDir(), "src.pack")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return name, b
}

func readAll(t *testing.T, v volume.Volume, seq uint32, size int) ([]byte, error) {
	p := make([]byte, size)
	n, err := v.ReadAt(context.Background(), seq, p, 0)
	return p[:n], err
}

func TestS3PutReadRangesListDelete(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	for _, prefix := range []string{"", "store/one"} {
		for _, cached := range []bool{false, true} {
			t.Run(fmt.Sprintf("prefix=%q,cache=%v", prefix, cached), func(t *testing.T) {
				var cache *volume.Cache
				if cached {
					var err error
					if cache, err = volume.OpenCache(t.TempDir(), 64<<20, 256<<10); err != nil {
						t.Fatal(err)
					}
				}
				v := openS3(t, srv, prefix+fmt.Sprint(cached), cache, nil)
				src, data := localPack(t, 3<<20+12345)
				src2, data2 := localPack(t, 1000)
				if err := v.Put(ctx, 5, src); err != nil {
					t.Fatal(err)
				}
				if err := v.Put(ctx, 0x1a, src2); err != nil {
					t.Fatal(err)
				}
				for _, r := range [][2]int{{0, 1}, {0, 16 << 10}, {1<<20 - 100, 200}, {123, 2 << 20}, {len(data) - 10, 10}, {0, len(data)}} {
					p := make([]byte, r[1])
					n, err := v.ReadAt(ctx, 5, p, int64(r[0]))
					if err != nil || n != r[1] || !bytes.Equal(p, data[r[0]:r[0]+r[1]]) {
						t.Fatalf("ReadAt(%d, %d) = %d, %v", r[0], r[1], n, err)
					}
				}
				p := make([]byte, 100)
				if n, err := v.ReadAt(ctx, 5, p, int64(len(data)-40)); n != 40 || err != io.EOF || !bytes.Equal(p[:40], data[len(data)-40:]) {
					t.Fatalf("ReadAt across the end = %d, %v", n, err)
				}
				if _, err := v.ReadAt(ctx, 99, p, 0); !errors.Is(err, volume.ErrNoPack) {
					t.Fatalf("ReadAt of a missing pack = %v", err)
				}
				r, err := v.Stream(ctx, 0x1a)
				if err != nil {
					t.Fatal(err)
				}
				all, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(all, data2) {
					t.Fatalf("Stream = %d bytes, %v", len(all), err)
				}
				if err := volume.Claim(ctx, v, volume.Label{Store: "s", Volume: 1}); !errors.Is(err, volume.ErrForeign) {
					t.Fatalf("Claim of a prefix holding packs but no label = %v", err)
				}
				packs, err := v.List(ctx)
				want := []volume.Pack{{Seq: 5, Size: int64(len(data))}, {Seq: 0x1a, Size: int64(len(data2))}}
				if err != nil || len(packs) != 2 || packs[0] != want[0] || packs[1] != want[1] {
					t.Fatalf("List = %v, %v; want %v", packs, err, want)
				}
				if err := v.Put(ctx, 0x1a, src2); err != nil {
					t.Fatalf("Put again: %v", err)
				}
				if err := v.Delete(ctx, 5); err != nil {
					t.Fatal(err)
				}
				if err := v.Delete(ctx, 5); err != nil {
					t.Fatalf("a second Delete = %v", err)
				}
				if _, err := v.ReadAt(ctx, 5, p, 0); !errors.Is(err, volume.ErrNoPack) {
					t.Fatalf("ReadAt of a deleted pack = %v", err)
				}
				if packs, err := v.List(ctx); err != nil || len(packs) != 1 || packs[0].Seq != 0x1a {
					t.Fatalf("List after delete = %v, %v", packs, err)
				}
				if free, err := v.Free(ctx); err != nil || free != volume.Unbounded {
					t.Fatalf("Free = %d, %v", free, err)
				}
				if cached && cache.Used() != 0 {
					// Pack 5's pieces went with it; 0x1a was only streamed.
					t.Fatalf("the cache holds %d bytes of deleted packs", cache.Used())
				}
			})
		}
	}
}

func TestS3LabelsRefuseAnotherStoresVolume(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	v := openS3(t, srv, "vol", nil, nil)
	mine := volume.Label{Store: "store-a", Volume: 2}
	if err := volume.Check(ctx, v, mine); !errors.Is(err, volume.ErrForeign) {
		t.Fatalf("Check of an unlabelled prefix = %v", err)
	}
	if err := volume.Claim(ctx, v, mine); err != nil {
		t.Fatal(err)
	}
	if err := volume.Claim(ctx, v, mine); err != nil {
		t.Fatalf("Claim again = %v", err)
	}
	w := openS3(t, srv, "vol/", nil, nil)
	if err := volume.Check(ctx, w, mine); err != nil {
		t.Fatal(err)
	}
	err := volume.Check(ctx, w, volume.Label{Store: "store-b", Volume: 2})
	if !errors.Is(err, volume.ErrForeign) || !strings.Contains(err.Error(), "another store (store-a)") {
		t.Fatalf("Check by another store = %v", err)
	}
	if err := volume.Claim(ctx, w, volume.Label{Store: "store-b", Volume: 1}); !errors.Is(err, volume.ErrForeign) {
		t.Fatalf("Claim by another store = %v", err)
	}
	if got, err := w.ReadLabel(ctx); err != nil || got != mine {
		t.Fatalf("label after refusals = %v, %v", got, err)
	}
	// Another prefix of the same bucket is another volume.
	x := openS3(t, srv, "vol2", nil, nil)
	if _, err := x.ReadLabel(ctx); !errors.Is(err, volume.ErrNoLabel) {
		t.Fatalf("ReadLabel of another prefix = %v", err)
	}
}

func TestS3CacheBoundHeld(t *testing.T) {
	srv := s3test.Start(t)
	const chunk = 128 << 10
	bound := int64(5 * (chunk + 128))
	dir := t.TempDir()
	cache, err := volume.OpenCache(dir, bound, chunk)
	if err != nil {
		t.Fatal(err)
	}
	v := openS3(t, srv, "c", cache, nil)
	ctx := context.Background()
	src, data := localPack(t, 40*chunk+99)
	if err := v.Put(ctx, 1, src); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		for off := round * 1000; off < len(data); off += chunk / 3 {
			p := make([]byte, min(20000, len(data)-off))
			if n, err := v.ReadAt(ctx, 1, p, int64(off)); err != nil && err != io.EOF || !bytes.Equal(p[:n], data[off:off+n]) {
				t.Fatalf("read at %d: %d, %v", off, n, err)
			}
			if cache.Used() > bound {
				t.Fatalf("cache holds %d bytes, bound %d", cache.Used(), bound)
			}
		}
	}
	if cache.Stats().Evictions.Load() == 0 || cache.Stats().Hits.Load() == 0 {
		t.Fatalf("evictions %d, hits %d", cache.Stats().Evictions.Load(), cache.Stats().Hits.Load())
	}
	var onDisk int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			onDisk += info.Size()
		}
		return nil
	})
	if onDisk > bound {
		t.Fatalf("%d bytes on disk, bound %d", onDisk, bound)
	}
}

func TestS3DamagedCacheIsNeverServed(t *testing.T) {
	srv := s3test.Start(t)
	const chunk = 128 << 10
	dir := t.TempDir()
	cache, err := volume.OpenCache(dir, 64<<20, chunk)
	if err != nil {
		t.Fatal(err)
	}
	v := openS3(t, srv, "d", cache, nil)
	ctx := context.Background()
	src, data := localPack(t, 4*chunk)
	if err := v.Put(ctx, 1, src); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, v, 1, len(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("first read: %v", err)
	}
	// Flip a byte in the middle of every cached piece.
	n := 0
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		f.ReadAt(b, info.Size()/2)
		b[0] ^= 0xff
		f.WriteAt(b, info.Size()/2)
		f.Close()
		n++
		return nil
	})
	if n != 4 {
		t.Fatalf("%d cache entries, want 4", n)
	}
	if got, err := readAll(t, v, 1, len(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after damage: %v, equal %v", err, bytes.Equal(got, data))
	}
	if d := cache.Stats().Damaged.Load(); d != 4 {
		t.Fatalf("%d damaged entries detected, want 4", d)
	}
}

// TestS3KilledMidReadFailsWithEIOAndRecovers kills the server while
// readers read: every read returns the right bytes or an error that is
// ErrUnavailable and EIO, never wrong bytes; one log line says so; once the
// server is back, reads work and a line says that too.
func TestS3KilledMidReadFailsWithEIOAndRecovers(t *testing.T) {
	srv := s3test.Start(t)
	var log logBuf
	const chunk = 64 << 10
	cache, err := volume.OpenCache(t.TempDir(), 4*chunk, chunk) // small: most reads go to the store
	if err != nil {
		t.Fatal(err)
	}
	v := openS3(t, srv, "k", cache, &log)
	ctx := context.Background()
	src, data := localPack(t, 8<<20)
	if err := v.Put(ctx, 1, src); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var good, failed atomic.Int64
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := r * 777777
			for !stop.Load() {
				off = (off + 300007) % (len(data) - 40000)
				p := make([]byte, 40000)
				n, err := v.ReadAt(ctx, 1, p, int64(off))
				if err != nil {
					var errno syscall.Errno
					if !errors.Is(err, volume.ErrUnavailable) || !errors.As(err, &errno) || errno != syscall.EIO {
						t.Errorf("read failed with %v, not an EIO-class unavailable error", err)
						return
					}
					failed.Add(1)
					continue
				}
				if n != len(p) || !bytes.Equal(p, data[off:off+n]) {
					t.Errorf("wrong bytes at %d", off)
					return
				}
				good.Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	srv.Kill()
	time.Sleep(1500 * time.Millisecond)
	// While down, uncached reads fail at once (one try).
	start := time.Now()
	p := make([]byte, 1000)
	if _, err := v.ReadAt(ctx, 1, p, 5<<20+12345); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("read while the store is down = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a read while the store is known down took %v", d)
	}
	if n := log.count("S3 volume failing"); n != 1 {
		t.Errorf("%d 'failing' log lines, want 1:\n%s", n, log.String())
	}
	if n := log.count("still failing"); n != 0 {
		t.Errorf("'still failing' logged within the first minute:\n%s", log.String())
	}
	srv.Restart(t)
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if failed.Load() == 0 || good.Load() == 0 {
		t.Fatalf("%d good reads, %d failed: the kill did not land mid-read", good.Load(), failed.Load())
	}
	got, err := readAll(t, v, 1, len(data))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after the store came back: %v", err)
	}
	if n := log.count("S3 volume answering again"); n != 1 {
		t.Errorf("%d 'answering again' lines, want 1:\n%s", n, log.String())
	}
	if strings.Contains(log.String(), "asoftestsecret") || strings.Contains(log.String(), "asoftestkey") {
		t.Errorf("a credential was logged:\n%s", log.String())
	}
}

func TestS3BadURLs(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"bucket/prefix", "want s3://BUCKET"},
		{"s3:/bucket", "want s3://BUCKET"},
		{"s3://", "no bucket name"},
		{"s3:///prefix", "no bucket name"},
		{"s3://ab", "3 to 63"},
		{"s3://My_Bucket/x", "lower-case"},
		{"s3://-bucket", "lower-case"},
		{"s3://a..b", "two dots"},
		{"s3://192.168.1.1", "IP address"},
		{"s3://bucket//x", "empty path element"},
		{"s3://bucket/a/../b", `".." path element`},
	} {
		_, _, err := volume.ParseURL(c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseURL(%q) = %v, want an error saying %q", c.url, err, c.want)
		}
	}
	for _, c := range []struct{ url, bucket, prefix string }{
		{"s3://bucket", "bucket", ""},
		{"s3://bucket/", "bucket", ""},
		{"s3://my.bucket-1/a/b", "my.bucket-1", "a/b/"},
		{"s3://bucket/a/b/", "bucket", "a/b/"},
	} {
		b, p, err := volume.ParseURL(c.url)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v", c.url, b, p, err)
		}
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	for _, c := range []struct{ endpoint, want string }{
		{"", "no endpoint"},
		{"127.0.0.1:9000", "http:// or https://"},
		{"ftp://host", "http:// or https://"},
		{"http://", "no host"},
		{"http://host:9000/bucket", "only a scheme, host and port"},
		{"http://user:pw@host", "only a scheme, host and port"},
	} {
		_, err := volume.OpenS3(volume.S3Config{Endpoint: c.endpoint, Bucket: "bucket"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenS3 with endpoint %q = %v, want an error saying %q", c.endpoint, err, c.want)
		}
	}
}

func TestS3RefusalsNameTheProblem(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	probe := func(cfg volume.S3Config) error {
		cfg.Retry = fastRetry
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		v, err := volume.OpenS3(cfg)
		if err != nil {
			return err
		}
		return v.Probe(ctx)
	}

	// Nothing listens on this port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	srv.Env(t)
	err = probe(volume.S3Config{Endpoint: dead, Bucket: srv.Bucket})
	if !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable endpoint: %v", err)
	}

	err = probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: "no-such-bucket"})
	if err == nil || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
		t.Errorf("missing bucket: %v", err)
	}

	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
	err = probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket})
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Errorf("wrong secret: %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "wrong-secret") {
		t.Errorf("the secret is in the message: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "nosuchkey")
	err = probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket})
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") && !strings.Contains(err.Error(), "access denied") {
		t.Errorf("unknown access key: %v", err)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	err = probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket})
	if err == nil || !strings.Contains(err.Error(), "no credentials: set AWS_ACCESS_KEY_ID") {
		t.Errorf("no credentials: %v", err)
	}

	// A credentials file, its named profile, and its absence.
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials")
	os.WriteFile(file, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n\n[other]\naws_access_key_id = %s\naws_secret_access_key = bad-secret-in-file\n",
		srv.Access, srv.Secret, srv.Access)), 0o600)
	if err := probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, CredentialsFile: file}); err != nil {
		t.Errorf("credentials file: %v", err)
	}
	err = probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, CredentialsFile: file, Profile: "other"})
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "bad-secret-in-file") {
		t.Errorf("credentials file, profile with a wrong secret: %v", err)
	}
	err = probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, CredentialsFile: file, Profile: "missing"})
	if err == nil || !strings.Contains(err.Error(), `no aws_access_key_id and aws_secret_access_key in profile "missing"`) {
		t.Errorf("credentials file, missing profile: %v", err)
	}
	err = probe(volume.S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, CredentialsFile: filepath.Join(dir, "nope")})
	if err == nil || !strings.Contains(err.Error(), "credentials_file") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing credentials file: %v", err)
	}
}

// TestS3PutWhileDownFailsCleanly: a pack put while the store is down
// fails as unavailable and leaves nothing; put again once it is back, it
// lands whole.
func TestS3PutWhileDownFailsCleanly(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	v := openS3(t, srv, "w", nil, nil)
	src, data := localPack(t, 2<<20)
	srv.Kill()
	if err := v.Put(ctx, 7, src); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Put while down = %v", err)
	}
	if _, err := v.List(ctx); !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("List while down = %v", err)
	}
	srv.Restart(t)
	if packs, err := v.List(ctx); err != nil || len(packs) != 0 {
		t.Fatalf("List after a failed put = %v, %v", packs, err)
	}
	if err := v.Put(ctx, 7, src); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, v, 7, len(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after put: %v", err)
	}
}
