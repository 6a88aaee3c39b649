package volume_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Server is a real S3 server for these tests: versitygw (Apache-2.0, installed by
// scripts/test-deps.sh) on a free loopback port, storing objects in a temporary
// directory. history/internal/volume/s3test does the same for the engine's tests; it is
// internal to history, so the end-to-end tests have their own.
type s3Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Access   string
	Secret   string
	Bucket   string

	bin, addr, dir, log string
	cmd                 *exec.Cmd
	done                chan struct{}
}

// versitygw finds the binary: $VERSITYGW, PATH, then the go command's GOBIN and GOPATH/bin.
func versitygw() (string, error) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		var dirs []string
		if len(lines) > 0 && lines[0] != "" {
			dirs = append(dirs, lines[0])
		}
		if len(lines) > 1 {
			for _, gp := range filepath.SplitList(lines[1]) {
				dirs = append(dirs, filepath.Join(gp, "bin"))
			}
		}
		for _, d := range dirs {
			if st, err := os.Stat(filepath.Join(d, "versitygw")); err == nil && !st.IsDir() {
				return filepath.Join(d, "versitygw"), nil
			}
		}
	}
	return "", errors.New("versitygw not found (run scripts/test-deps.sh, or set VERSITYGW)")
}

// startS3 runs versitygw with one bucket; it is killed when the test ends. Without the
// binary the test is skipped, except under CI=true, where that is a failure.
func startS3(t *testing.T) *s3Server {
	t.Helper()
	bin, err := versitygw()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	s := &s3Server{Access: "asofvolkey", Secret: "asofvolsecret0123456789", Bucket: "asof-vol",
		bin: bin, dir: filepath.Join(dir, "objects"), log: filepath.Join(dir, "versitygw.log")}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for try := 0; ; try++ { // a free port can be taken before the bind
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.addr = l.Addr().String()
		l.Close()
		if err = s.start(); err == nil {
			break
		}
		if try == 4 {
			t.Fatal(err)
		}
	}
	s.Endpoint = "http://" + s.addr
	t.Cleanup(s.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.client(t).MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("versitygw: make bucket %s: %v", s.Bucket, err)
	}
	return s
}

func (s *s3Server) start() error {
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "--port", s.addr, "posix", s.dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.Access, "ROOT_SECRET_KEY="+s.Secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			c.Close()
			s.cmd, s.done = cmd, done
			return nil
		}
		select {
		case <-done:
			out, _ := os.ReadFile(s.log)
			return fmt.Errorf("versitygw exited at start: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return errors.New("versitygw did not listen within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash or a pulled cable would; its objects
// stay for Restart.
func (s *s3Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts a killed server again on the same port and objects.
func (s *s3Server) Restart(t *testing.T) {
	t.Helper()
	var err error
	for try := 0; try < 50; try++ { // the port may linger a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("versitygw: restart: %v", err)
}

func (s *s3Server) client(t *testing.T) *minio.Client {
	t.Helper()
	c, err := minio.New(s.addr, &minio.Options{Creds: credentials.NewStaticV4(s.Access, s.Secret, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// packs lists the pack objects under prefix.
func (s *s3Server) packs(t *testing.T, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for o := range s.client(t).ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
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
