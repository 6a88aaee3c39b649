// Package ninep serves the file system over 9P2000.L with
// github.com/hugelgupf/p9. It translates: fids to nodes, 9P requests to fs
// calls, errors to Linux errnos. Every rule about names, permissions, @@
// and the read-only past lives in package fs.
//
// Three pieces:
//
//   - Serve accepts connections, refuses addresses outside Options.Allow,
//     and runs one p9 server per connection (so that each File knows its
//     connection, and one client's renames never take another client's
//     locks inside p9).
//   - file (file.go) is the p9.File: a node, and the state of an open fid.
//   - wire (wire.go) sits between the connection and p9 at the message
//     layer and makes up for what p9 v0.4.1 cannot express: Tauth answered
//     ENOENT instead of ENOSYS, Tgetlock answered at all, attach names and
//     ".." walks p9 would refuse, setuid/setgid bits p9 strips, and the
//     errno of a failed xattr walk that p9 flattens to EINVAL.
//
// Identity: Tattach's uname/n_uname are not handed to the server by p9 and
// creates carry no uid the server can trust, so every caller acts as
// Options.Cred (exports.uid/gid), like an all-squash NFS export.
package ninep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/asof/asof/fs"
)

// Options configure the 9P server.
type Options struct {
	// Cred is the identity every caller acts as (exports.uid/gid).
	Cred fs.Cred
	// Logger receives refused connections and unexpected errors.
	Logger *slog.Logger
	// Observer is told of every request (metrics); nil for none.
	Observer fs.Observer
}

// server is what every connection shares.
type server struct {
	f    *fs.FS
	cred fs.Cred
	log  *slog.Logger
	fsid uint64
	obs  fs.Observer
}

// Serve answers 9P2000.L on l until l is closed, then closes the
// connections still open, waits for their requests to finish and returns
// nil.
func Serve(l net.Listener, f *fs.FS, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = fs.NopObserver{}
	}
	srv := &server{f: f, cred: opts.Cred, log: opts.Logger, fsid: f.Fsid(), obs: opts.Observer}

	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()

	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ECONNABORTED) {
				// Out of descriptors or a client gone before accept: back
				// off and go on, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				srv.log.Warn("ninep: accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("ninep: accept: %w", err)
		}
		delay = 0
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.serveConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

// session is one connection: the Attacher of its own p9 server.
type session struct {
	*server
	client string

	// xattrErrs holds, by attribute name, the errnos of xattr walks that
	// failed and that p9 is about to answer EINVAL; the wire puts the real
	// errno back in the reply (see wire.outbound).
	xmu      sync.Mutex
	xattrErr map[string][]linux.Errno
}

func (s *server) serveConn(c net.Conn) {
	sess := &session{server: s, client: c.RemoteAddr().String()}
	w := newWire(c, sess)
	s.log.Debug("ninep: client connected", "client", sess.client)
	p9.NewServer(sess, p9.WithServerLogger(p9Logger{s.log})).Handle(w, w)
	w.Close()
	s.log.Debug("ninep: client disconnected", "client", sess.client)
}

// Attach gives p9 the live root; p9 then walks the attach name from it, one
// component at a time through file.Walk (the wire has made every component
// one p9 accepts).
func (s *session) Attach() (p9.File, error) {
	return s.newFile(s.f.Root()), nil
}

func (s *session) noteXattrErr(name string, e linux.Errno) {
	s.xmu.Lock()
	defer s.xmu.Unlock()
	if s.xattrErr == nil {
		s.xattrErr = map[string][]linux.Errno{}
	}
	s.xattrErr[name] = append(s.xattrErr[name], e)
}

func (s *session) takeXattrErr(name string) (linux.Errno, bool) {
	s.xmu.Lock()
	defer s.xmu.Unlock()
	q := s.xattrErr[name]
	if len(q) == 0 {
		return 0, false
	}
	e := q[0]
	if len(q) == 1 {
		delete(s.xattrErr, name)
	} else {
		s.xattrErr[name] = q[1:]
	}
	return e, true
}

// errno turns an fs error into the Linux errno p9 sends. fs.Errno is the
// one mapping both adapters share; the result is a linux.Errno because p9
// would otherwise pass a syscall.Errno through os.ErrExist and friends and
// answer EEXIST for ENOTEMPTY and EACCES for EPERM.
func (s *server) errno(op string, err error) error {
	if err == nil {
		return nil
	}
	e := fs.Errno(err)
	if e == syscall.EIO {
		s.log.Error("ninep: operation failed", "op", op, "err", err)
	}
	return linux.Errno(e)
}

// p9Logger gives p9's Printf-style logging to slog: p9 logs every message
// it sends and receives, which is debug material; a panic in a handler is
// an error.
type p9Logger struct{ l *slog.Logger }

func (p p9Logger) Printf(format string, v ...any) {
	if strings.HasPrefix(format, "panic") {
		p.l.Error("ninep: " + fmt.Sprintf(format, v...))
		return
	}
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug("ninep: p9: " + fmt.Sprintf(format, v...))
	}
}

func (p p9Logger) Print(v ...any) { p.Printf("%s", fmt.Sprint(v...)) }
