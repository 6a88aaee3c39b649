package volume

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/asof/asof/internal/s3test"
	"github.com/minio/minio-go/v7"
)

func openS3Internal(t *testing.T, srv *s3test.Server, log io.Writer) *S3 {
	t.Helper()
	srv.Env(t)
	v, err := OpenS3(S3Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: "p/",
		Log: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// flipping reads as data the first time through, and with one byte
// changed after a Seek back to the start: a source that changed between
// its checksum and its upload, or bytes damaged on the way.
type flipping struct {
	*bytes.Reader
	data   []byte
	passes int
}

func (f *flipping) Seek(off int64, whence int) (int64, error) {
	if off == 0 && whence == io.SeekStart {
		f.passes++
		if f.passes == 2 {
			d := bytes.Clone(f.data)
			d[len(d)/2] ^= 0x40
			f.Reader = bytes.NewReader(d)
		}
	}
	return f.Reader.Seek(off, whence)
}

// A pack's PUT carries its CRC-32C, which the store checks and keeps: the
// object's checksum is the source's, and bytes that differ from what the
// checksum was taken of are refused, leaving no object. A store without
// checksums gets Content-MD5 instead, and its ETag is checked.
func TestS3PutIsCheckedByCRC32C(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	var log bytes.Buffer
	v := openS3Internal(t, srv, &log)
	data := make([]byte, 3<<20+17)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	if err := v.put(ctx, PackName(1), bytes.NewReader(data), int64(len(data)), v.retry.PutTimeout, nil); err != nil {
		t.Fatal(err)
	}
	info, err := srv.Client(t).StatObject(ctx, srv.Bucket, "p/"+PackName(1), minio.StatObjectOptions{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	want := base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.Checksum(data, castagnoli)))
	if info.ChecksumCRC32C != want || info.Size != int64(len(data)) {
		t.Fatalf("the object: %d bytes, CRC-32C %q; want %d bytes, %q", info.Size, info.ChecksumCRC32C, len(data), want)
	}
	if v.md5Only.Load() {
		t.Fatalf("the store keeps checksums, yet puts went the MD5 way: %s", log.String())
	}

	err = v.put(ctx, PackName(2), &flipping{Reader: bytes.NewReader(data), data: data}, int64(len(data)), v.retry.PutTimeout, nil)
	if err == nil || !strings.Contains(err.Error(), "BadDigest") && !strings.Contains(strings.ToLower(err.Error()), "checksum") {
		t.Fatalf("a PUT whose bytes are not those checksummed: %v, want the store's refusal", err)
	}
	if _, err := srv.Client(t).StatObject(ctx, srv.Bucket, "p/"+PackName(2), minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Fatalf("after a refused PUT the object is there: %v", err)
	}

	v.md5Only.Store(true)
	if err := v.put(ctx, PackName(3), bytes.NewReader(data), int64(len(data)), v.retry.PutTimeout, nil); err != nil {
		t.Fatal(err)
	}
	info, err = srv.Client(t).StatObject(ctx, srv.Bucket, "p/"+PackName(3), minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if etag := strings.Trim(info.ETag, `"`); etag != fmt.Sprintf("%x", md5.Sum(data)) {
		t.Fatalf("the MD5 way: ETag %s, want the MD5", etag)
	}
	err = v.put(ctx, PackName(4), &flipping{Reader: bytes.NewReader(data), data: data}, int64(len(data)), v.retry.PutTimeout, nil)
	if err == nil {
		t.Fatal("the MD5 way: a PUT whose bytes are not those hashed went through")
	}
}
