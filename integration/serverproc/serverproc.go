// Package serverproc runs the real asof binary as a child process for end-to-end tests:
// built once per test binary from this module (go build ./cmd/asof), started as
// "asof serve" on free loopback ports with its own data directory, and stopped the way
// an operator or a crash would (SIGTERM, kill -9).
//
// The server is configured through the environment (SPEC.md, Configuration):
//
//	ASOF_DATA            the data directory
//	ASOF_NFS_LISTEN      127.0.0.1:PORT, or empty to disable NFS
//	ASOF_NINEP_LISTEN    127.0.0.1:PORT, or empty to disable 9P
//	ASOF_CONTROL_SOCKET  a unix socket (kept short: sun_path holds 107 bytes)
//
// Any other ASOF_* variable of the test's own environment is dropped, so a developer's
// settings never leak into a test; Options.Env adds more.
package serverproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ModuleRoot returns the directory of the go.mod above the working directory (a test runs
// in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("serverproc: no go.mod above the working directory")
		}
		dir = parent
	}
}

var (
	buildMu  sync.Mutex
	buildDir string
	binPath  string
	buildErr error
)

// Binary returns the asof binary the tests run: $ASOF_BIN when set, otherwise one built
// from this module with "go build -o TMP/asof ./cmd/asof", once per test binary.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func build() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if binPath != "" || buildErr != nil {
		return binPath, buildErr
	}
	if p := os.Getenv("ASOF_BIN"); p != "" {
		binPath, buildErr = filepath.Abs(p)
		return binPath, buildErr
	}
	sweepBuildDirs()
	root, err := ModuleRoot()
	if err != nil {
		buildErr = err
		return "", err
	}
	goTool, err := exec.LookPath("go") // go test puts its GOROOT/bin first in PATH
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("asof-bin-%d-", os.Getpid()))
	if err != nil {
		buildErr = err
		return "", err
	}
	out := filepath.Join(dir, "asof")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/asof")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		buildErr = fmt.Errorf("serverproc: go build ./cmd/asof in %s: %v\n%s", root, err, b)
		return "", buildErr
	}
	buildDir, binPath = dir, out
	return out, nil
}

// sweepBuildDirs removes binaries built by test processes that are gone (a test binary
// without Main cannot remove its own).
func sweepBuildDirs() {
	re := regexp.MustCompile(`^asof-bin-(\d+)-`)
	ents, _ := os.ReadDir(os.TempDir())
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pid != os.Getpid() && !processExists(pid) {
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}

func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Main runs the tests and then removes the binary Binary built. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(serverproc.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	buildMu.Lock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	buildMu.Unlock()
	return code
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// freePorts asks the kernel for n distinct free ports, holding each until all are chosen.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("serverproc: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Options for Start. The zero value runs "asof serve" with NFS and 9P on free ports and a
// fresh data directory.
type Options struct {
	Args          []string          // default {"serve"}
	Env           map[string]string // more environment; wins over what Start sets
	DataDir       string            // default: a new directory under t.TempDir()
	NoNFS         bool              // ASOF_NFS_LISTEN="" (disabled)
	NoNineP       bool              // ASOF_NINEP_LISTEN="" (disabled)
	NoControlWait bool              // do not wait for the control socket to accept
	StartTimeout  time.Duration     // to accept connections; default 30s
	Binary        string            // default Binary(t)
}

// Server is a running (or stopped) asof child process.
type Server struct {
	Bin           string
	DataDir       string
	NFSAddr       string // 127.0.0.1:PORT; empty when NFS is disabled
	NinePAddr     string // 127.0.0.1:PORT; empty when 9P is disabled
	ControlSocket string
	LogPath       string // stdout and stderr of every start, appended

	t    testing.TB
	o    Options
	env  []string
	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed once proc has been waited for (ProcessState is set)
}

// Start starts asof and waits until its NFS and 9P ports and its control socket accept
// connections; it fails the test if that does not happen. The server is stopped (SIGTERM,
// then SIGKILL) when the test ends, and its log is printed if the test failed.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Binary == "" {
		o.Binary = Binary(t)
	}
	if len(o.Args) == 0 {
		o.Args = []string{"serve"}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	s := &Server{Bin: o.Binary, t: t, o: o, DataDir: o.DataDir}
	if s.DataDir == "" {
		s.DataDir = filepath.Join(t.TempDir(), "data")
	}
	// a short directory for the socket and the log: t.TempDir() paths can outgrow sun_path
	short, err := os.MkdirTemp("", "asof-srv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	s.ControlSocket = filepath.Join(short, "control.sock")
	s.LogPath = filepath.Join(short, "server.log")
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	if !o.NoNFS {
		s.NFSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	}
	if !o.NoNineP {
		s.NinePAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	}
	s.env = s.buildEnv()
	t.Cleanup(func() {
		if s.Running() {
			if code, err := s.Term(); err != nil || code != 0 {
				t.Logf("serverproc: stopping asof at the end of the test: exit %d, %v", code, err)
			}
		}
		if t.Failed() {
			s.dumpLog()
		}
	})
	if err := s.start(); err != nil {
		t.Fatal(err) // the cleanup above prints the log
	}
	return s
}

func (s *Server) buildEnv() []string {
	vars := map[string]string{
		"ASOF_DATA":           s.DataDir,
		"ASOF_NFS_LISTEN":     s.NFSAddr,
		"ASOF_NINEP_LISTEN":   s.NinePAddr,
		"ASOF_CONTROL_SOCKET": s.ControlSocket,
	}
	for k, v := range s.o.Env {
		vars[k] = v
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ASOF_") {
			env = append(env, kv)
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+vars[k])
	}
	return env
}

// Env is the environment the server runs with: what an admin command needs to reach it.
func (s *Server) Env() []string { return append([]string(nil), s.env...) }

// NFSPort and NinePPort are the ports (0 when disabled).
func (s *Server) NFSPort() int   { return portOf(s.NFSAddr) }
func (s *Server) NinePPort() int { return portOf(s.NinePAddr) }

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("serverproc: already running")
	}
	if err := os.MkdirAll(filepath.Dir(s.DataDir), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "=== serverproc: %s %s (%s) ===\n", s.Bin, strings.Join(s.o.Args, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.Bin, s.o.Args...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("serverproc: starting %s: %w", s.Bin, err)
	}
	done := make(chan struct{})
	s.proc, s.done = cmd, done
	go func() {
		cmd.Wait()
		close(done)
	}()
	return s.waitReady(cmd, done)
}

// waitReady polls until every enabled endpoint accepts a connection. Called with s.mu held.
func (s *Server) waitReady(cmd *exec.Cmd, done chan struct{}) error {
	type endpoint struct{ network, addr string }
	var eps []endpoint
	if s.NFSAddr != "" {
		eps = append(eps, endpoint{"tcp", s.NFSAddr})
	}
	if s.NinePAddr != "" {
		eps = append(eps, endpoint{"tcp", s.NinePAddr})
	}
	if !s.o.NoControlWait {
		eps = append(eps, endpoint{"unix", s.ControlSocket})
	}
	deadline := time.Now().Add(s.o.StartTimeout)
	for {
		select {
		case <-done:
			return fmt.Errorf("serverproc: asof exited before accepting connections: %v", cmd.ProcessState)
		default:
		}
		var pending error
		for _, ep := range eps {
			c, err := net.DialTimeout(ep.network, ep.addr, time.Second)
			if err != nil {
				pending = fmt.Errorf("%s %s: %w", ep.network, ep.addr, err)
				break
			}
			c.Close()
		}
		if pending == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("serverproc: asof not ready after %v: %v", s.o.StartTimeout, pending)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Running reports whether the process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Pid is the process id, 0 when not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.Process.Pid
}

// signalAndWait sends sig and waits for the exit, up to grace (then SIGKILL). It returns
// the exit status, -1 when a signal ended the process.
func (s *Server) signalAndWait(sig syscall.Signal, grace time.Duration) (int, error) {
	s.mu.Lock()
	cmd, done := s.proc, s.done
	s.mu.Unlock()
	if cmd == nil {
		return -1, errors.New("serverproc: asof is not running")
	}
	var err error
	select {
	case <-done:
		err = fmt.Errorf("serverproc: asof had already exited (%v)", cmd.ProcessState)
	default:
		cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(grace):
			cmd.Process.Kill()
			<-done
			err = fmt.Errorf("serverproc: asof still running %v after %v; killed", grace, sig)
		}
	}
	s.mu.Lock()
	s.proc = nil
	s.mu.Unlock()
	return cmd.ProcessState.ExitCode(), err
}

// Term sends SIGTERM and waits (up to 30 s, then SIGKILL) for the exit status. SPEC: the
// server stops accepting, commits what is buffered and exits 0.
func (s *Server) Term() (int, error) { return s.signalAndWait(syscall.SIGTERM, 30*time.Second) }

// Kill9 kills the server with SIGKILL, as a crash would, and waits for it to be gone.
func (s *Server) Kill9() error {
	_, err := s.signalAndWait(syscall.SIGKILL, 10*time.Second)
	return err
}

// Restart starts the server again with the same data, ports and environment, and waits
// until it accepts connections. A running server is first stopped with Term, which must
// exit 0; after Kill9 this is the restart after a crash.
func (s *Server) Restart() error {
	if s.Running() {
		code, err := s.Term()
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("serverproc: asof exited %d on SIGTERM", code)
		}
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("%w\n--- server log ---\n%s", err, s.logTail(40))
	}
	return nil
}

// Log returns everything the server printed so far, across restarts.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

func (s *Server) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(s.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *Server) dumpLog() {
	const max = 64 << 10
	l := s.Log()
	if len(l) > max {
		l = "...\n" + l[len(l)-max:]
	}
	s.t.Logf("serverproc: asof log (%s):\n%s", s.LogPath, l)
}

// Admin runs "asof ARGS..." against this server (an admin command over the control
// socket, with the server's environment) and returns its stdout and stderr; a non-zero
// exit is an error that includes stderr.
func (s *Server) Admin(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, s.Bin, args...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), errb.String(), fmt.Errorf("asof %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), nil
}
