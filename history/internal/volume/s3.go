package volume

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says where an object-store volume is and how to reach it.
// It holds no credential: those come from the server's environment or a
// file, read when the volume is opened, and are never logged.
type S3Config struct {
	Endpoint string // http://host:port or https://host
	Bucket   string
	Prefix   string // "" or a path ending in "/" (one is added)
	Region   string // "" is us-east-1
	// CredentialsFile is an AWS shared credentials file; empty, the
	// credentials are AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
	// AWS_SESSION_TOKEN) from the environment.
	CredentialsFile string
	// Profile of CredentialsFile; empty is AWS_PROFILE, or "default".
	Profile string

	// Cache keeps the pieces of packs read; nil reads every range from
	// the store.
	Cache *Cache
	Retry Retry
	// Log receives the lines saying the store became unreachable, is
	// still, and is back; nil is slog.Default().
	Log *slog.Logger
}

// Retry bounds the attempts at one request. Zero fields take the defaults.
type Retry struct {
	Attempts int           // tries per request (5); while the store is known to be down a read tries once
	Base     time.Duration // wait before the second try, doubled each time, with jitter (100 ms)
	Cap      time.Duration // longest wait between tries (5 s)
	Timeout  time.Duration // one try of a read or a small request (15 s)
	// PutTimeout is one try of a pack's upload (10 min: 256 MiB at well
	// under 1 MB/s).
	PutTimeout time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 5
	}
	if r.Base <= 0 {
		r.Base = 100 * time.Millisecond
	}
	if r.Cap <= 0 {
		r.Cap = 5 * time.Second
	}
	if r.Timeout <= 0 {
		r.Timeout = 15 * time.Second
	}
	if r.PutTimeout <= 0 {
		r.PutTimeout = 10 * time.Minute
	}
	return r
}

// ParseURL splits s3://BUCKET/PREFIX into the bucket and the prefix
// (empty, or ending in "/").
func ParseURL(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("volume URL %q: want s3://BUCKET or s3://BUCKET/PREFIX", s)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := checkBucket(bucket); err != nil {
		return "", "", fmt.Errorf("volume URL %q: %w", s, err)
	}
	if prefix, err = cleanPrefix(prefix); err != nil {
		return "", "", fmt.Errorf("volume URL %q: %w", s, err)
	}
	return bucket, prefix, nil
}

var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// checkBucket applies S3's bucket naming rules, so that a typo is told
// apart from a bucket that does not exist.
func checkBucket(b string) error {
	switch {
	case b == "":
		return errors.New("no bucket name")
	case len(b) < 3 || len(b) > 63:
		return fmt.Errorf("bucket name %q must be 3 to 63 characters long", b)
	case !bucketRE.MatchString(b):
		return fmt.Errorf("bucket name %q may hold only lower-case letters, digits, dots and hyphens, and must begin and end with a letter or digit", b)
	case strings.Contains(b, ".."):
		return fmt.Errorf("bucket name %q has two dots in a row", b)
	case net.ParseIP(b) != nil:
		return fmt.Errorf("bucket name %q looks like an IP address", b)
	}
	return nil
}

func cleanPrefix(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	p = strings.TrimSuffix(p, "/")
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "":
			return "", fmt.Errorf("prefix %q has an empty path element", p)
		case ".", "..":
			return "", fmt.Errorf("prefix %q has a %q path element", p, part)
		}
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f || r == '\\' }) {
		return "", fmt.Errorf("prefix %q holds a control character or backslash", p)
	}
	return p + "/", nil
}

// parseEndpoint checks an endpoint URL: http or https, a host, no path.
func parseEndpoint(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("S3 volume: no endpoint URL (--endpoint http://HOST:PORT or https://HOST)")
	}
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		return nil, fmt.Errorf("S3 endpoint %q: want an http:// or https:// URL", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("S3 endpoint %q: want an http:// or https:// URL", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("S3 endpoint %q: no host", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("S3 endpoint %q: want only a scheme, host and port (the bucket and prefix go in the volume's s3:// URL)", s)
	}
	return u, nil
}

// S3 is a volume that is a bucket, or a prefix in one, of an
// S3-compatible object store. Each pack is one object, written once by a
// single PUT whose CRC-32C the store checks, then checked again by its
// size and the checksum the store kept (put). Reads are ranged GETs through the cache.
type S3 struct {
	cfg    S3Config
	retry  Retry
	client *minio.Core
	where  string // for messages
	ns     string // the cache's namespace for this volume
	log    *slog.Logger

	md5Only atomic.Bool // the store keeps no object checksums: put the MD5 way

	mu       sync.Mutex
	down     bool      // the last request found the store failing
	downAt   time.Time // when it began to
	okAt     time.Time // the last success
	loggedAt time.Time // the last line saying it is failing
	told     bool      // that line has not been followed by one saying it is back
	now      func() time.Time
}

// OpenS3 makes a volume of cfg. It does not reach the store (a server
// starts while it is down); Probe does.
func OpenS3(cfg S3Config) (*S3, error) {
	ep, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	if err := checkBucket(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("S3 volume: %w", err)
	}
	if cfg.Prefix, err = cleanPrefix(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("S3 volume: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	where := fmt.Sprintf("s3://%s/%s at %s", cfg.Bucket, cfg.Prefix, ep.Scheme+"://"+ep.Host)
	creds, err := loadCredentials(cfg)
	if err != nil {
		return nil, fmt.Errorf("S3 volume %s: %w", where, err)
	}
	tr, err := minio.DefaultTransport(ep.Scheme == "https")
	if err != nil {
		return nil, err
	}
	// A store that does not answer must show as unreachable in seconds:
	// a reader waits for it.
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	c, err := minio.NewCore(ep.Host, &minio.Options{
		Creds:     creds,
		Secure:    ep.Scheme == "https",
		Region:    cfg.Region,
		Transport: tr,
		// Retries are ours (do): bounded in time, one try while down.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 volume %s: %w", where, err)
	}
	sum := sha256.Sum256([]byte(ep.Host + "\x00" + cfg.Bucket + "\x00" + cfg.Prefix))
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &S3{cfg: cfg, retry: cfg.Retry.withDefaults(), client: c, where: where,
		ns: "s3-" + hex.EncodeToString(sum[:8]), log: log, now: time.Now}, nil
}

// loadCredentials reads the credentials once, so that a missing one is
// told at open. Errors name the file but never quote it: a parse error
// could show a line holding the secret.
func loadCredentials(cfg S3Config) (*credentials.Credentials, error) {
	if cfg.CredentialsFile != "" {
		f, err := os.Open(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("credentials_file: %w", err)
		}
		f.Close()
		creds := credentials.NewFileAWSCredentials(cfg.CredentialsFile, cfg.Profile)
		v, err := creds.GetWithContext(nil)
		if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
			profile := cfg.Profile
			if profile == "" {
				profile = "the default profile"
			} else {
				profile = fmt.Sprintf("profile %q", profile)
			}
			return nil, fmt.Errorf("credentials_file %s: no aws_access_key_id and aws_secret_access_key in %s", cfg.CredentialsFile, profile)
		}
		return creds, nil
	}
	creds := credentials.NewEnvAWS()
	v, err := creds.GetWithContext(nil)
	if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
		return nil, errors.New("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the server's environment, or credentials_file")
	}
	return creds, nil
}

func (s *S3) Kind() string   { return "s3" }
func (s *S3) String() string { return s.where }

func (s *S3) key(name string) string { return s.cfg.Prefix + name }

// refused is a request the store answered with a refusal that retrying
// will not change: credentials, permissions, a missing bucket.
type refused struct{ msg string }

func (e *refused) Error() string { return e.msg }

// classify turns a request's error into what the caller acts on, and
// says whether another try may succeed.
func (s *S3) classify(op string, err error) (error, bool) {
	if r := minio.ToErrorResponse(err); r.Code != "" || r.StatusCode != 0 {
		switch {
		case r.Code == "NoSuchKey":
			return fmt.Errorf("volume %s: %s: %w", s.where, op, ErrNoPack), false
		case r.Code == "NoSuchBucket":
			return &refused{fmt.Sprintf("volume %s: bucket %q does not exist", s.where, s.cfg.Bucket)}, false
		case r.Code == "InvalidAccessKeyId" || r.Code == "SignatureDoesNotMatch" || r.Code == "InvalidToken" || r.Code == "ExpiredToken" ||
			r.Code == "XAdminUserNotFound": // versitygw's answer to an unknown access key
			return &refused{fmt.Sprintf("volume %s: the store refused the credentials (%s): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or credentials_file", s.where, r.Code)}, false
		case r.Code == "AccessDenied" || r.StatusCode == 403:
			return &refused{fmt.Sprintf("volume %s: access denied (wrong credentials, or no permission on bucket %q)", s.where, s.cfg.Bucket)}, false
		case r.StatusCode >= 500 || r.StatusCode == 429 || r.Code == "SlowDown" || r.Code == "InternalError" ||
			r.Code == "ServiceUnavailable" || r.Code == "RequestTimeout":
			return &unavailable{where: s.where, cause: fmt.Sprintf("%s: %s (%d)", op, r.Code, r.StatusCode)}, true
		}
		return fmt.Errorf("volume %s: %s: %w", s.where, op, err), false
	}
	return &unavailable{where: s.where, cause: fmt.Sprintf("%s: %v", op, err)}, true
}

// do runs one request, trying again with backoff while it fails in a way
// that may pass; each try has timeout. A read (once) tries only once
// while the store is known to be down, so that readers fail fast until a
// try succeeds.
func (s *S3) do(ctx context.Context, op string, timeout time.Duration, once bool, fn func(ctx context.Context) error) error {
	attempts := s.retry.Attempts
	if once && s.isDown() {
		attempts = 1
	}
	wait := s.retry.Base
	var err error
	var start time.Time
	for i := 0; i < attempts; i++ {
		if i > 0 {
			d := wait/2 + rand.N(wait/2+1)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return fmt.Errorf("volume %s: %s: %w", s.where, op, ctx.Err())
			}
			wait = min(wait*2, s.retry.Cap)
		}
		start = s.now()
		tctx, cancel := context.WithTimeout(ctx, timeout)
		err = fn(tctx)
		cancel()
		if err == nil {
			s.up()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("volume %s: %s: %w", s.where, op, ctx.Err())
		}
		var again bool
		if err, again = s.classify(op, err); !again {
			break
		}
	}
	if errors.Is(err, ErrNoPack) {
		s.up() // the store answered
	} else {
		s.failed(err, start)
	}
	return err
}

func (s *S3) isDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// failed notes that the store could not be reached, or refused us, on a
// try begun at start: one log line when it happens, then at most one a
// minute while it lasts or comes and goes. A failure older than the last
// success (a try that began before the store came back) changes nothing.
func (s *S3) failed(err error, start time.Time) {
	var r *refused
	if !errors.Is(err, ErrUnavailable) && !errors.As(err, &r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.okAt.After(start) {
		return
	}
	now := s.now()
	if !s.down {
		s.down, s.downAt = true, now
	}
	switch {
	case s.loggedAt.IsZero() || now.Sub(s.loggedAt) >= time.Minute && !s.told:
		s.log.Error("S3 volume failing: reads of its packs fail with EIO, sealed packs wait locally", "volume", s.where, "err", err)
	case now.Sub(s.loggedAt) >= time.Minute:
		s.log.Error("S3 volume still failing", "volume", s.where, "since", s.downAt.Format(time.RFC3339), "err", err)
	default:
		return
	}
	s.loggedAt, s.told = now, true
}

func (s *S3) up() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.okAt = s.now()
	if s.down && s.told {
		s.log.Info("S3 volume answering again", "volume", s.where, "after", s.okAt.Sub(s.downAt).Round(time.Second).String())
		s.told = false
	}
	s.down = false
}

// Probe checks that the store answers, takes the credentials, and has
// the bucket, with a message that names what is wrong: what `volume add`
// asks before it changes anything.
func (s *S3) Probe(ctx context.Context) error {
	err := s.do(ctx, "list", s.retry.Timeout, false, func(ctx context.Context) error {
		_, err := s.client.ListObjectsV2(s.cfg.Bucket, s.cfg.Prefix, "", "", "/", 1)
		return err
	})
	if u := (*unavailable)(nil); errors.As(err, &u) {
		return fmt.Errorf("cannot reach the S3 endpoint of volume %s: %s: %w", s.where, u.cause, ErrUnavailable)
	}
	return err
}

// getSmall reads a whole small object.
func (s *S3) getSmall(ctx context.Context, name string, limit int64) ([]byte, error) {
	var b []byte
	err := s.do(ctx, "get "+name, s.retry.Timeout, false, func(ctx context.Context) error {
		r, _, _, err := s.client.GetObject(ctx, s.cfg.Bucket, s.key(name), minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer r.Close()
		b, err = io.ReadAll(io.LimitReader(r, limit))
		return err
	})
	return b, err
}

func (s *S3) ReadLabel(ctx context.Context) (Label, error) {
	b, err := s.getSmall(ctx, LabelName, 4096)
	if errors.Is(err, ErrNoPack) {
		return Label{}, ErrNoLabel
	}
	if err != nil {
		return Label{}, err
	}
	return decodeLabel(b, s.where)
}

func (s *S3) WriteLabel(ctx context.Context, l Label) error {
	if err := l.valid(); err != nil {
		return err
	}
	b := l.encode()
	err := s.put(ctx, LabelName, bytes.NewReader(b), int64(len(b)), s.retry.Timeout, nil)
	return err
}

// put stores size bytes of r as object name, checked end to end: one PUT
// carrying the CRC-32C of the bytes (x-amz-checksum-crc32c), which the
// store checks against what it received (BadDigest otherwise), then a
// HEAD: the size must match, and so must the checksum the store kept. The
// payload is unsigned: the checksum, not the signature, covers the body.
// CRC-32C is hardware-assisted (GB/s); the MD5 and SHA-256 the other way
// needs cost a core for seconds per pack on each side, taken from the
// clients a drain runs beside.
//
// A store that keeps no checksum (it ignored the header, or refused it)
// gets the other way from then on: Content-MD5 and the signed SHA-256,
// which every S3 store checks, then the ETag (putMD5).
func (s *S3) put(ctx context.Context, name string, r io.ReadSeeker, size int64, timeout time.Duration, meta map[string]string) error {
	if s.md5Only.Load() {
		return s.putMD5(ctx, name, r, size, timeout, meta)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("volume %s: put %s: read source: %w", s.where, name, err)
	}
	sum := base64.StdEncoding.EncodeToString(h.Sum(nil))
	opts := minio.PutObjectOptions{
		ContentType:          "application/octet-stream",
		DisableContentSha256: true,
		UserMetadata:         map[string]string{"x-amz-checksum-crc32c": sum},
	}
	for k, v := range meta {
		opts.UserMetadata[k] = v
	}
	err := s.do(ctx, "put "+name, timeout, false, func(ctx context.Context) error {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := s.client.PutObject(ctx, s.cfg.Bucket, s.key(name), io.LimitReader(r, size), size, "", "", opts)
		return err
	})
	if e := minio.ToErrorResponse(err); err != nil && e.Code != "BadDigest" && (e.StatusCode == 400 || e.StatusCode == 501) {
		s.log.Warn("history: the S3 store refused a checksum header; its PUTs carry Content-MD5 and a signed SHA-256 from now on",
			"volume", s.where, "err", err)
		s.md5Only.Store(true)
		return s.putMD5(ctx, name, r, size, timeout, meta)
	}
	if err != nil {
		return err
	}
	var info minio.ObjectInfo
	err = s.do(ctx, "stat "+name, s.retry.Timeout, false, func(ctx context.Context) error {
		var err error
		info, err = s.client.StatObject(ctx, s.cfg.Bucket, s.key(name), minio.StatObjectOptions{Checksum: true})
		return err
	})
	if err != nil {
		return err
	}
	if info.Size != size {
		return fmt.Errorf("volume %s: put %s: the store holds %d bytes, not %d", s.where, name, info.Size, size)
	}
	if info.ChecksumCRC32C != "" {
		if info.ChecksumCRC32C != sum {
			return fmt.Errorf("volume %s: put %s: the stored object's CRC-32C %s is not the source's %s", s.where, name, info.ChecksumCRC32C, sum)
		}
		return nil
	}
	// A store that kept no checksum may not have checked it either.
	got, err := s.readBack(ctx, name, crc32.New(castagnoli))
	if err != nil {
		return err
	}
	if base64.StdEncoding.EncodeToString(got) != sum {
		return fmt.Errorf("volume %s: put %s: the object read back has CRC-32C %x, not the source's", s.where, name, got)
	}
	s.log.Warn("history: the S3 store keeps no object checksums; its PUTs carry Content-MD5 and a signed SHA-256 from now on",
		"volume", s.where)
	s.md5Only.Store(true)
	return nil
}

// putMD5 is put for a store that keeps no checksums: the PUT carries
// Content-MD5 and the payload's SHA-256 signed in the request, both checked
// by the store, and the ETag of the HEAD after must be the MD5 (a store
// that gives something else, an encrypting one, has the object read back
// and hashed).
func (s *S3) putMD5(ctx context.Context, name string, r io.ReadSeeker, size int64, timeout time.Duration, meta map[string]string) error {
	md := md5.New()
	sh := sha256.New()
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(io.MultiWriter(md, sh), r); err != nil {
		return fmt.Errorf("volume %s: put %s: read source: %w", s.where, name, err)
	}
	md5sum, shasum := md.Sum(nil), sh.Sum(nil)
	opts := minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		// Sign the payload's SHA-256 in the request, rather than
		// stream-sign it in chunks: the store checks the whole body.
		DisableContentSha256: true,
		UserMetadata:         map[string]string{},
	}
	for k, v := range meta {
		opts.UserMetadata[k] = v
	}
	err := s.do(ctx, "put "+name, timeout, false, func(ctx context.Context) error {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := s.client.PutObject(ctx, s.cfg.Bucket, s.key(name), io.LimitReader(r, size), size,
			base64.StdEncoding.EncodeToString(md5sum), hex.EncodeToString(shasum), opts)
		return err
	})
	if err != nil {
		return err
	}
	var info minio.ObjectInfo
	err = s.do(ctx, "stat "+name, s.retry.Timeout, false, func(ctx context.Context) error {
		var err error
		info, err = s.client.StatObject(ctx, s.cfg.Bucket, s.key(name), minio.StatObjectOptions{})
		return err
	})
	if err != nil {
		return err
	}
	if info.Size != size {
		return fmt.Errorf("volume %s: put %s: the store holds %d bytes, not %d", s.where, name, info.Size, size)
	}
	etag := strings.Trim(info.ETag, `"`)
	if len(etag) == 32 && !strings.Contains(etag, "-") {
		if etag != hex.EncodeToString(md5sum) {
			return fmt.Errorf("volume %s: put %s: the stored object's MD5 %s is not the source's %s", s.where, name, etag, hex.EncodeToString(md5sum))
		}
		return nil
	}
	got, err := s.readBack(ctx, name, sha256.New())
	if err != nil {
		return err
	}
	if !bytes.Equal(got, shasum) {
		return fmt.Errorf("volume %s: put %s: the object read back has SHA-256 %x, not the source's %x", s.where, name, got, shasum)
	}
	return nil
}

// readBack reads object name whole through h and returns its sum.
func (s *S3) readBack(ctx context.Context, name string, h hash.Hash) ([]byte, error) {
	var sum []byte
	err := s.do(ctx, "read back "+name, s.retry.PutTimeout, false, func(ctx context.Context) error {
		h.Reset()
		r, _, _, err := s.client.GetObject(ctx, s.cfg.Bucket, s.key(name), minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer r.Close()
		if _, err := io.Copy(h, r); err != nil {
			return err
		}
		sum = h.Sum(nil)
		return nil
	})
	return sum, err
}

func (s *S3) Put(ctx context.Context, seq uint32, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("volume %s: put pack %d: %w", s.where, seq, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("volume %s: put pack %d: %w", s.where, seq, err)
	}
	return s.put(ctx, PackName(seq), f, st.Size(), s.retry.PutTimeout, nil)
}

// getRange reads length bytes at off of an object, fewer at its end.
func (s *S3) getRange(ctx context.Context, seq uint32, off, length int64) ([]byte, error) {
	if length <= 0 {
		return nil, nil
	}
	var b []byte
	err := s.do(ctx, fmt.Sprintf("read pack %d", seq), s.retry.Timeout, true, func(ctx context.Context) error {
		var opts minio.GetObjectOptions
		if err := opts.SetRange(off, off+length-1); err != nil {
			return err
		}
		r, _, _, err := s.client.GetObject(ctx, s.cfg.Bucket, s.key(PackName(seq)), opts)
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			b = nil // at or past the end
			return nil
		}
		if err != nil {
			return err
		}
		defer r.Close()
		b = make([]byte, 0, length)
		buf := bytes.NewBuffer(b)
		_, err = io.Copy(buf, io.LimitReader(r, length))
		b = buf.Bytes()
		return err
	})
	return b, err
}

func (s *S3) ReadAt(ctx context.Context, seq uint32, p []byte, off int64) (int, error) {
	if s.cfg.Cache != nil {
		return s.cfg.Cache.readAt(s.ns, seq, p, off, func(off, length int64) ([]byte, error) {
			return s.getRange(ctx, seq, off, length)
		})
	}
	b, err := s.getRange(ctx, seq, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	n := copy(p, b)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Stream reads a pack whole, not through the cache. A failure after the
// first bytes is ErrUnavailable like any other.
func (s *S3) Stream(ctx context.Context, seq uint32) (io.ReadCloser, error) {
	var body io.ReadCloser
	err := s.do(ctx, fmt.Sprintf("read pack %d", seq), s.retry.Timeout, true, func(tctx context.Context) error {
		// The body outlives this try's deadline: it is read at the
		// caller's pace, under the caller's context.
		r, _, _, err := s.client.GetObject(ctx, s.cfg.Bucket, s.key(PackName(seq)), minio.GetObjectOptions{})
		body = r
		return err
	})
	if err != nil {
		return nil, err
	}
	return &streamBody{s: s, seq: seq, r: body}, nil
}

type streamBody struct {
	s   *S3
	seq uint32
	r   io.ReadCloser
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &unavailable{where: b.s.where, cause: fmt.Sprintf("read pack %d: %v", b.seq, err)}
		b.s.failed(err, b.s.now())
	}
	return n, err
}

func (b *streamBody) Close() error { return b.r.Close() }

func (s *S3) Delete(ctx context.Context, seq uint32) error {
	err := s.do(ctx, fmt.Sprintf("delete pack %d", seq), s.retry.Timeout, false, func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.cfg.Bucket, s.key(PackName(seq)), minio.RemoveObjectOptions{})
	})
	if err != nil && !errors.Is(err, ErrNoPack) {
		return err
	}
	if s.cfg.Cache != nil {
		s.cfg.Cache.forget(s.ns, seq)
	}
	return nil
}

func (s *S3) List(ctx context.Context) ([]Pack, error) {
	var packs []Pack
	err := s.do(ctx, "list packs", s.retry.PutTimeout, false, func(ctx context.Context) error {
		packs = packs[:0]
		for o := range s.client.Client.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix}) {
			if o.Err != nil {
				return o.Err
			}
			if seq, ok := parsePackName(strings.TrimPrefix(o.Key, s.cfg.Prefix)); ok {
				packs = append(packs, Pack{Seq: seq, Size: o.Size})
			}
		}
		return nil
	})
	return packs, err
}

// Free is Unbounded: an object store reports no limit.
func (s *S3) Free(ctx context.Context) (int64, error) { return Unbounded, nil }

func (s *S3) Close() error { return nil }
