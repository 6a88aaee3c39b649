// Command s3put is volumes.sh's limit for a drain to S3: it PUTs files to a bucket one
// after the other with minio-go, the client asof's S3 volumes use, and prints the rate.
//
//	s3put -endpoint http://127.0.0.1:PORT -bucket B [-prefix P] [-mode plain|checked|crc32c] FILE...
//	s3put -endpoint http://127.0.0.1:PORT -bucket B -mkbucket
//
// Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
//
// -mode plain: minio.Client.PutObject with the size known and default options (what a
// program would write first). -mode checked: what a pack's PUT in asof cost until
// 2026-12-07 (and still costs on a store that keeps no checksums), one
// minio.Core.PutObject with the file's Content-MD5 and signed SHA-256 computed first, then
// a HEAD of the object. -mode crc32c: what it costs now, the file's CRC-32C computed
// first, one PUT carrying it (x-amz-checksum-crc32c) with an unsigned payload, then a HEAD
// that must give the same checksum back.
//
// The last line is "S3PUT files bytes seconds".
package main

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func main() {
	endpoint := flag.String("endpoint", "", "http://host:port")
	bucket := flag.String("bucket", "", "bucket")
	prefix := flag.String("prefix", "", "key prefix")
	mode := flag.String("mode", "plain", "plain, checked or crc32c")
	mkbucket := flag.Bool("mkbucket", false, "make the bucket and exit")
	flag.Parse()
	u, err := url.Parse(*endpoint)
	if err != nil || u.Host == "" {
		log.Fatalf("s3put: -endpoint %q: want http://host:port", *endpoint)
	}
	opts := &minio.Options{Creds: credentials.NewEnvAWS(), Secure: u.Scheme == "https", Region: "us-east-1"}
	core, err := minio.NewCore(u.Host, opts)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if *mkbucket {
		if err := core.MakeBucket(ctx, *bucket, minio.MakeBucketOptions{}); err != nil {
			log.Fatalf("s3put: make bucket %s: %v", *bucket, err)
		}
		return
	}
	var files int
	var bytes int64
	start := time.Now()
	for _, name := range flag.Args() {
		n, err := put(ctx, core, *mode, *bucket, *prefix+filepath.Base(name), name)
		if err != nil {
			log.Fatalf("s3put: %s: %v", name, err)
		}
		files++
		bytes += n
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("S3PUT %d %d %.3f\n", files, bytes, secs)
}

func put(ctx context.Context, core *minio.Core, mode, bucket, key, name string) (int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	switch mode {
	case "plain":
		_, err = core.Client.PutObject(ctx, bucket, key, f, st.Size(), minio.PutObjectOptions{ContentType: "application/octet-stream"})
		return st.Size(), err
	case "checked":
		md, sh := md5.New(), sha256.New()
		if _, err := io.Copy(io.MultiWriter(md, sh), f); err != nil {
			return 0, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		shasum := hex.EncodeToString(sh.Sum(nil))
		_, err = core.PutObject(ctx, bucket, key, f, st.Size(), base64.StdEncoding.EncodeToString(md.Sum(nil)), shasum,
			minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
		if err != nil {
			return 0, err
		}
		info, err := core.Client.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
		if err != nil {
			return 0, err
		}
		if info.Size != st.Size() {
			return 0, fmt.Errorf("stored %d bytes, not %d", info.Size, st.Size())
		}
		return st.Size(), nil
	case "crc32c":
		h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
		if _, err := io.Copy(h, f); err != nil {
			return 0, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		sum := base64.StdEncoding.EncodeToString(h.Sum(nil))
		_, err = core.PutObject(ctx, bucket, key, f, st.Size(), "", "", minio.PutObjectOptions{ContentType: "application/octet-stream",
			DisableContentSha256: true, UserMetadata: map[string]string{"x-amz-checksum-crc32c": sum}})
		if err != nil {
			return 0, err
		}
		info, err := core.Client.StatObject(ctx, bucket, key, minio.StatObjectOptions{Checksum: true})
		if err != nil {
			return 0, err
		}
		if info.Size != st.Size() || info.ChecksumCRC32C != sum {
			return 0, fmt.Errorf("stored %d bytes with CRC-32C %q, not %d with %q", info.Size, info.ChecksumCRC32C, st.Size(), sum)
		}
		return st.Size(), nil
	}
	return 0, fmt.Errorf("-mode %q: want plain, checked or crc32c", mode)
}
