package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// lineServer is a ConnServer of a small protocol: each line is a call,
// answered "ok <line>" once release lets it through. Like the real
// servers, a cancelled ctx stops it reading new calls, not the call in
// flight.
type lineServer struct {
	started chan string   // each call as it starts
	release chan struct{} // closed to let calls answer; nil answers at once
	served  atomic.Int32  // connections served
}

func (h *lineServer) ServeConn(ctx context.Context, c net.Conn) error {
	h.served.Add(1)
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if h.started != nil {
			h.started <- line
		}
		if h.release != nil {
			<-h.release
		}
		if _, err := fmt.Fprintf(c, "ok %s", line); err != nil {
			return err
		}
	}
}

// logBuf is a slog destination tests can read while the server writes.
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

func newTestConns(t *testing.T, allow bool) (*conns, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	cs := newConns(slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
		func(netip.Addr) bool { return allow })
	t.Cleanup(func() { cs.shutdown(context.Background()) })
	return cs, lb
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// call sends one call and reads its answer.
func call(t *testing.T, c net.Conn, r *bufio.Reader, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("answer to %q: %v", msg, err)
	}
	return strings.TrimSpace(line)
}

// failingListener fails its first n accepts as a process out of file
// descriptors does, then accepts for real.
type failingListener struct {
	net.Listener
	n       atomic.Int32
	attempt atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.attempt.Add(1)
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// An accept that fails (EMFILE) does not stop the listener: it backs off
// and serves again, and the episode is logged once, not once per retry.
func TestAcceptBacksOffAndRecovers(t *testing.T) {
	cs, lb := newTestConns(t, true)
	fl := &failingListener{Listener: listenTCP(t)}
	fl.n.Store(5)
	h := &lineServer{}
	begin := time.Now()
	cs.serve("nfs", fl, h)

	c, err := net.Dial("tcp", fl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := call(t, c, bufio.NewReader(c), "hello"); got != "ok hello" {
		t.Fatalf("answer %q", got)
	}
	// Five failures back off 5+10+20+40+80 ms before the sixth accept.
	if d := time.Since(begin); d < 155*time.Millisecond {
		t.Errorf("served after %v: the failed accepts were not backed off", d)
	}
	if n := fl.attempt.Load(); n != 6 && n != 7 {
		t.Errorf("%d accept calls, want the 5 failed ones and the one that worked (and the next, waiting)", n)
	}
	log := lb.String()
	if n := strings.Count(log, "accept failed"); n != 1 {
		t.Errorf("%d lines say the accept failed, want 1:\n%s", n, log)
	}
	if !strings.Contains(log, "too many open files") || !strings.Contains(log, "accepting again") ||
		!strings.Contains(log, "failed_accepts=5") {
		t.Errorf("the log does not tell the episode:\n%s", log)
	}
}

// Shutdown waits for a call in flight to be answered before it returns
// (so before the store closes), accepts no new client meanwhile, and the
// connection reads no call after it.
func TestShutdownDrainsCallsInFlight(t *testing.T) {
	cs, _ := newTestConns(t, true)
	l := listenTCP(t)
	h := &lineServer{started: make(chan string, 1), release: make(chan struct{})}
	cs.serve("9p", l, h)

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "slow\n")
	<-h.started

	closed := make(chan int)
	go func() { closed <- cs.shutdown(context.Background()) }()
	select {
	case <-closed:
		t.Fatal("shutdown returned with a call in flight")
	case <-time.After(200 * time.Millisecond):
	}
	if c2, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c2.Close()
		t.Error("a new client connected during shutdown")
	}

	close(h.release)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "ok slow\n" {
		t.Fatalf("the call in flight was answered %q, %v", line, err)
	}
	if n := <-closed; n != 0 {
		t.Errorf("shutdown closed %d connections, want none: the call finished in time", n)
	}
	if _, err := r.ReadString('\n'); err != io.EOF {
		t.Errorf("after shutdown the connection gave %v, want EOF", err)
	}
}

// At the shutdown deadline, connections still busy are closed, and
// shutdown returns.
func TestShutdownDeadlineClosesBusyConnections(t *testing.T) {
	cs, lb := newTestConns(t, true)
	l := listenTCP(t)
	h := &lineServer{started: make(chan string, 1), release: make(chan struct{})}
	defer close(h.release)
	cs.serve("nfs", l, h)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "stuck\n")
	<-h.started

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if n := cs.shutdown(ctx); n != 1 {
		t.Errorf("shutdown closed %d connections, want 1", n)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the busy connection is still open")
	}
	if !strings.Contains(lb.String(), "shutdown deadline passed") {
		t.Errorf("the log does not say connections were cut:\n%s", lb.String())
	}
}

// A client outside exports.allow is closed before it is served.
func TestAllowRefusesBeforeServing(t *testing.T) {
	cs, lb := newTestConns(t, false)
	l := listenTCP(t)
	h := &lineServer{}
	cs.serve("nfs", l, h)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "let me in\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("refused client read %d bytes, %v", n, err)
	}
	if h.served.Load() != 0 {
		t.Error("the handler served a refused client")
	}
	if !strings.Contains(lb.String(), "refused a client outside exports.allow") {
		t.Errorf("no log line for the refusal:\n%s", lb.String())
	}
}

// A connection broken by the network (a reset) is logged once, by the
// lifecycle, at debug level (libnfs's tools leave that way); one the
// client closes is not an error.
func TestIOErrorLoggedOnce(t *testing.T) {
	cs, lb := newTestConns(t, true)
	l := listenTCP(t)
	h := &lineServer{}
	cs.serve("9p", l, h)

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	call(t, c, bufio.NewReader(c), "bye")
	c.Close()

	c, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	call(t, c, bufio.NewReader(c), "crash")
	c.(*net.TCPConn).SetLinger(0) // Close sends a reset
	c.Close()

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(lb.String(), "ended by an I/O error") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	log := lb.String()
	if n := strings.Count(log, "ended by an I/O error"); n != 1 {
		t.Errorf("%d I/O error lines, want 1 (for the reset connection):\n%s", n, log)
	}
	if !strings.Contains(log, "level=DEBUG msg=\"client connection ended by an I/O error\"") || !strings.Contains(log, "connection reset") {
		t.Errorf("the line does not say what broke:\n%s", log)
	}
}
