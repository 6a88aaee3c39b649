package nfs

import (
	"errors"
	"log/slog"
	"net"
	"sync"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
)

// Options configure the NFS server.
type Options struct {
	// Cred is the identity every caller acts as: go-nfs passes no
	// per-request credentials, so the export is all-squash.
	Cred   fs.Cred
	Logger *slog.Logger
	// Key is the store's handle secret (LoadKey).
	Key []byte
	// Observer is told of every request (metrics); nil for none.
	Observer fs.Observer
}

var setLogger sync.Once

// Serve answers NFSv3 and MOUNT on l until l is closed.
func Serve(l net.Listener, f *fs.FS, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = fs.NopObserver{}
	}
	h := &handler{f: f, cred: opts.Cred, key: opts.Key, log: opts.Logger, observer: opts.Observer}
	h.live = &billyFS{f: f, cred: opts.Cred, live: true, root: f.Root()}
	h.past = &billyFS{f: f, cred: opts.Cred, live: false, root: f.Root()}
	// go-nfs has one logger for the whole process: set it once.
	setLogger.Do(func() { gonfs.SetLogger(quietLogger{opts.Logger}) })
	err := gonfs.Serve(&listener{Listener: l, h: h}, h)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// listener puts the interposer between each connection and go-nfs.
type listener struct {
	net.Listener
	h *handler
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newInterposed(c, l.h), nil
}
