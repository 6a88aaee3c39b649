package nfs

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
)

// Options configure the NFS server.
type Options struct {
	// Cred is the identity every caller acts as: go-nfs passes no
	// per-request credentials, so the export is all-squash.
	Cred fs.Cred
	// Allow says which client addresses may connect (exports.allow).
	Allow  func(netip.Addr) bool
	Logger *slog.Logger
	// Key is the store's handle secret (LoadKey).
	Key []byte
	// Observer is told of every request (metrics); nil for none.
	Observer fs.Observer
}

// Serve answers NFSv3 and MOUNT on l until l is closed.
func Serve(l net.Listener, f *fs.FS, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = fs.NopObserver{}
	}
	h := &handler{f: f, cred: opts.Cred, key: opts.Key, log: opts.Logger, observer: opts.Observer}
	h.live = &billyFS{f: f, cred: opts.Cred, live: true, root: f.Root(), observer: opts.Observer}
	h.past = &billyFS{f: f, cred: opts.Cred, live: false, root: f.Root(), observer: opts.Observer}
	if opts.Allow != nil {
		h.allow = func(a net.Addr) bool { return addrAllowed(a, opts.Allow) }
	}
	gonfs.SetLogger(quietLogger{opts.Logger})
	err := gonfs.Serve(&listener{Listener: l, h: h}, h)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func addrAllowed(a net.Addr, allow func(netip.Addr) bool) bool {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	return allow(ap.Addr().Unmap())
}

// listener refuses clients outside exports.allow before they send anything,
// and puts the interposer between each connection and go-nfs.
type listener struct {
	net.Listener
	h *handler
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.h.allow != nil && !l.h.allow(c.RemoteAddr()) {
			l.h.log.Warn("nfs: refused a client outside exports.allow", "client", c.RemoteAddr().String())
			c.Close()
			continue
		}
		return newInterposed(c, l.h), nil
	}
}
