package volume_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/asof/asof/internal/s3test"
)

// s3Server is a real S3 server for these tests (internal/s3test: versitygw on
// loopback, with one bucket), and what these tests ask of it besides.
type s3Server struct{ *s3test.Server }

// startS3 runs versitygw with one bucket; it is killed when the test ends. Without the
// binary the test is skipped, except under CI=true, where that is a failure.
func startS3(t *testing.T) *s3Server { return &s3Server{s3test.Start(t)} }

// packs lists the pack objects under prefix.
func (s *s3Server) packs(t *testing.T, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for o := range s.Client(t).ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list s3://%s/%s: %v", s.Bucket, prefix, o.Err)
		}
		if strings.HasSuffix(o.Key, ".pack") {
			names = append(names, o.Key)
		}
	}
	return names
}

// env is what the asof server needs to reach this store.
func (s *s3Server) env() map[string]string {
	return map[string]string{"AWS_ACCESS_KEY_ID": s.Access, "AWS_SECRET_ACCESS_KEY": s.Secret}
}
