package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// ConnServer serves one client connection of a protocol: until the client
// closes it or ctx is cancelled; once ctx is cancelled it reads no new
// call, finishes the calls in flight and returns. It returns the I/O error
// that broke the connection, if one did, and logs none itself: the
// lifecycle logs it, once. c is the accepted connection itself, not a
// wrapper, so that a server can hand replies to writev (net.Buffers only
// does so for the net package's own connections). nfs.Server and
// ninep.Server are ConnServers.
type ConnServer interface {
	ServeConn(ctx context.Context, c net.Conn) error
}

// Accept backoff after a failed accept (out of descriptors, a client gone
// before it was accepted): doubling from the first to the last, as
// net/http does. A listener is never given up on: NFS and 9P share the
// process's descriptors, so one running short is both running short, and
// both must come back when descriptors are free again.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// closeGrace is how long shutdown waits, after closing the connections
// still open at its deadline, for their goroutines to see it.
const closeGrace = time.Second

// conns is the one connection lifecycle of both protocols and of mirror
// targets: an accept loop per listener, exports.allow (mirror.allow for
// targets), a record of every open connection, and a
// shutdown that drains them before the store closes.
type conns struct {
	log   *slog.Logger
	allow func(netip.Addr) bool

	// ctx is every connection's context; cancelling it asks each
	// ConnServer to finish its calls in flight and return.
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{} // closed when shutdown starts: accept loops end

	// mu guards the fields below. Nothing blocking is done under it.
	mu        sync.Mutex
	closed    bool // shutdown started: no new loop, no new connection
	listeners []net.Listener
	open      map[net.Conn]string // connection -> protocol

	loops sync.WaitGroup // accept loops
	// served counts connection goroutines; Add only under mu while
	// !closed, so that shutdown's Wait never races an Add.
	served sync.WaitGroup
}

func newConns(log *slog.Logger, allow func(netip.Addr) bool) *conns {
	ctx, cancel := context.WithCancel(context.Background())
	return &conns{log: log, allow: allow, ctx: ctx, cancel: cancel, stop: make(chan struct{}), open: map[net.Conn]string{}}
}

// serve accepts connections on l and serves each with h in a goroutine of
// its own, until shutdown: the clients exports.allow lets in.
func (cs *conns) serve(proto string, l net.Listener, h ConnServer) {
	cs.serveAllowing(proto, l, h, gate{cs.allow, "exports.allow"})
}

// A gate says which clients a listener serves, and the setting that says
// so, for the log line of a refusal.
type gate struct {
	allow func(netip.Addr) bool
	key   string
}

// serveAllowing is serve with the clients g lets in.
func (cs *conns) serveAllowing(proto string, l net.Listener, h ConnServer, g gate) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		l.Close()
		return
	}
	cs.listeners = append(cs.listeners, l)
	cs.loops.Add(1)
	go func() {
		defer cs.loops.Done()
		cs.acceptLoop(proto, l, h, g)
	}()
}

func (cs *conns) acceptLoop(proto string, l net.Listener, h ConnServer, g gate) {
	var (
		delay    time.Duration
		failures int
		since    time.Time
	)
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-cs.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return // closed by someone else than shutdown: nothing to accept from
			}
			// One line per episode: a loop that fails a thousand times a
			// second while out of descriptors must not fill the log too.
			if failures == 0 {
				since = time.Now()
				cs.log.Warn("accept failed; retrying with backoff until it works again", "protocol", proto, "err", err)
			}
			failures++
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			select {
			case <-cs.stop:
				return
			case <-time.After(delay):
			}
			continue
		}
		if failures > 0 {
			cs.log.Info("accepting again", "protocol", proto, "failed_accepts", failures, "for", time.Since(since).Round(time.Millisecond))
			failures, delay = 0, 0
		}
		if !g.allowed(c.RemoteAddr()) {
			cs.log.Warn("refused a client outside "+g.key, "protocol", proto, "client", c.RemoteAddr().String())
			c.Close()
			continue
		}
		cs.start(proto, c, h)
	}
}

func (g gate) allowed(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && g.allow(ap.Addr().Unmap())
}

// start serves c with h in a goroutine of its own, tracked until it
// returns.
func (cs *conns) start(proto string, c net.Conn, h ConnServer) {
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		c.Close()
		return
	}
	cs.open[c] = proto
	cs.served.Add(1)
	cs.mu.Unlock()
	go func() {
		defer cs.served.Done()
		client := c.RemoteAddr().String()
		cs.log.Debug("client connected", "protocol", proto, "client", client)
		err := h.ServeConn(cs.ctx, c)
		c.Close()
		cs.mu.Lock()
		delete(cs.open, c)
		cs.mu.Unlock()
		// The one place a connection's I/O error is logged: handlers
		// return it and say nothing. A reset is how libnfs's tools and
		// crashed clients leave, not a fault of the server: debug only.
		switch {
		case !brokenBy(err):
			cs.log.Debug("client disconnected", "protocol", proto, "client", client)
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
			cs.log.Debug("client connection ended by an I/O error", "protocol", proto, "client", client, "err", err)
		default:
			cs.log.Warn("client connection ended by an I/O error", "protocol", proto, "client", client, "err", err)
		}
	}()
}

// brokenBy reports whether err says the connection broke. The end of a
// connection is not such an error: EOF, a Close (the handler's or
// shutdown's), a deadline a handler set to stop reading.
func brokenBy(err error) bool {
	return err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
		!errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded)
}

// shutdown stops accepting, asks every connection to finish its calls in
// flight, and waits for them until ctx is done; then it closes the
// connections still open. It returns how many it had to close. After it
// returns no handler is started again, so the store can close.
func (cs *conns) shutdown(ctx context.Context) int {
	cs.mu.Lock()
	if !cs.closed {
		cs.closed = true
		close(cs.stop)
	}
	ls := cs.listeners
	cs.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	cs.loops.Wait()
	cs.cancel()

	done := make(chan struct{})
	go func() { cs.served.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	cs.mu.Lock()
	n := len(cs.open)
	for c := range cs.open {
		c.Close()
	}
	cs.mu.Unlock()
	cs.log.Warn("shutdown deadline passed with calls in flight: closed their connections", "connections", n)
	select {
	case <-done:
	case <-time.After(closeGrace):
		cs.log.Warn("connection handlers still running after their connections closed; closing the store under them")
	}
	return n
}
