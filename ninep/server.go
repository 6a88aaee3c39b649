// Package ninep serves the file system over 9P2000.L with
// github.com/hugelgupf/p9. It translates: fids to nodes, 9P requests to fs
// calls, errors to Linux errnos. Every rule about names, permissions,
// identity, @@ and the read-only past lives in package fs.
//
// Three pieces:
//
//   - Server serves one connection at a time with ServeConn, each with its
//     own p9 server (so that each File knows its connection, and one
//     client's renames never take another client's locks inside p9).
//   - file (file.go) is the p9.File: a node, the identity of the attach it
//     descends from, and the state of an open fid.
//   - wire (wire.go) sits between the connection and p9 at the message
//     layer and makes up for what p9 v0.4.1 cannot express through its
//     File interface: the attach's user, errnos of failed xattr walks,
//     setuid/setgid bits, "." and ".." walks, Tauth and Tgetlock.
//
// Identity: each Tattach names its user, by uid (n_uname) or, when that is
// unset, by name (uname), which is looked up in the server's user database
// for the groups, as diod does; exports.squash applies (fs.LocalUser). Every
// fid carries the identity of the attach it descends from, so one
// connection serves many users: Linux's v9fs with access=user attaches once
// per local user.
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
	// Logger receives refused attaches and unexpected errors.
	Logger *slog.Logger
	// Observer is told of every request (metrics); nil for none.
	Observer fs.Observer
}

// Server answers 9P2000.L for one file system, one connection at a time
// per ServeConn call.
type Server struct {
	f   *fs.FS
	log *slog.Logger
	obs fs.Observer

	// refusedMu guards refused: the unames whose refused attach has been
	// logged, so that a client retrying an unknown user (v9fs does, on
	// every access by that local user) logs it once.
	refusedMu sync.Mutex
	refused   map[string]bool
}

// maxRefusedLogged bounds the names remembered in Server.refused: a client
// sending ever new names must not grow it without end.
const maxRefusedLogged = 1024

// shutdownGrace is how long, once ServeConn's context is done, replies to
// the requests in flight may take to reach a client: one that stops
// reading cannot hold the connection open beyond it.
const shutdownGrace = 10 * time.Second

// New makes a server for f.
func New(f *fs.FS, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = fs.NopObserver{}
	}
	return &Server{f: f, log: opts.Logger, obs: opts.Observer, refused: map[string]bool{}}
}

// ServeConn answers the requests on c until the client closes c or ctx is
// done. Once ctx is done it reads no new request, lets the requests in
// flight answer (for up to shutdownGrace), closes c and returns. It returns
// only once no goroutine serving c remains, with the I/O error that broke
// the connection, if one did; it logs none itself.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	sess := &session{Server: s, client: c.RemoteAddr().String()}
	w := newWire(c, sess)
	sess.w = w

	done := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		select {
		case <-ctx.Done():
			w.shutdown(shutdownGrace)
		case <-done:
		}
	}()

	// Handle returns once its reader has stopped and every request it
	// started has answered (p9 waits for them), and closes w.
	p9.NewServer(sess, p9.WithServerLogger(p9Logger{s.log})).Handle(w, w)
	w.Close()
	close(done)
	watcher.Wait()
	return w.brokenBy()
}

// Serve answers 9P2000.L on l until l is closed, then stops every
// connection as ServeConn does when its context ends, and returns nil once
// they have all returned.
func Serve(l net.Listener, f *fs.FS, opts Options) error {
	s := New(f, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
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
				s.log.Warn("ninep: accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("ninep: accept: %w", err)
		}
		delay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ServeConn(ctx, c)
		}()
	}
}

// session is one connection: the Attacher of its own p9 server.
type session struct {
	*Server
	client string
	w      *wire
}

// Attach gives p9 the root to walk the attach from. p9 passes Attach
// nothing of the Tattach, so this root belongs to no one: the wire names
// every attach by its tag as the first and only component p9 walks from
// it, and file.walk makes the attached fid there, as the attach's user
// (see attach). p9 never makes it a fid (the wire leaves no attach name
// empty); were it one, it would act as the anonymous user.
func (s *session) Attach() (p9.File, error) {
	return &file{s: s, n: s.f.Root(), cred: s.f.Anonymous(), unattached: true, holders: 1}, nil
}

// attach serves the Tattach in flight under tag: the identity its uname
// and n_uname name, and the attach name resolved as that identity.
func (s *session) attach(tag uint16) ([]p9.QID, *file, fs.Attr, error) {
	c, ok := s.w.call(tag)
	if !ok || c.typ != msgTattach {
		return nil, nil, fs.Attr{}, linux.EINVAL
	}
	cred, err := s.identify(c.uname, c.nuname)
	if err != nil {
		return nil, nil, fs.Attr{}, err
	}
	n, err := s.f.Resolve(cred, c.aname)
	if err != nil {
		return nil, nil, fs.Attr{}, s.errno("attach", err)
	}
	a, err := s.f.Getattr(n)
	if err != nil {
		return nil, nil, fs.Attr{}, s.errno("attach", err)
	}
	q := qidOf(a)
	s.w.attached(tag, q)
	return []p9.QID{q}, s.newFile(n, cred), a, nil
}

// noUID is n_uname unset (P9_NONUNAME).
const noUID = ^uint32(0)

// identify is the identity an attach acts as: the user n_uname names, or,
// when it is unset, the user named uname in the server's user database. An
// attach that names no user at all acts as the anonymous identity, as an
// NFS call without a credential does. An attach naming a user the database
// does not know is refused with EPERM, as diod refuses it (diod says ESRCH,
// which mount(8) reports as "No such process"): it meant someone, and
// acting as someone else would surprise it.
func (s *session) identify(uname string, nuname uint32) (fs.Cred, error) {
	if nuname != noUID {
		return s.f.LocalUser(nuname), nil
	}
	if uname == "" {
		return s.f.Anonymous(), nil
	}
	if c, ok := s.f.LocalUserByName(uname); ok {
		return c, nil
	}
	s.refusedMu.Lock()
	first := !s.refused[uname] && len(s.refused) < maxRefusedLogged
	if first {
		s.refused[uname] = true
	}
	s.refusedMu.Unlock()
	if first {
		s.log.Warn("ninep: refused an attach by a user this server does not know (it is logged once per name)",
			"client", s.client, "uname", uname)
	}
	return fs.Cred{}, linux.EPERM
}

// errno turns an fs error into the Linux errno p9 sends. fs.Errno is the
// one mapping both adapters share; the result is a linux.Errno because p9
// would otherwise pass a syscall.Errno through os.ErrExist and friends and
// answer EEXIST for ENOTEMPTY and EACCES for EPERM.
func (s *Server) errno(op string, err error) error {
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
