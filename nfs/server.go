// Package nfs serves the file system over NFSv3 and MOUNTv3 (RFC 1813) on
// one port. It translates: handles to nodes, AUTH_SYS credentials to
// callers, XDR arguments to fs calls, errnos to NFS statuses. Every rule
// lives in package fs; RPC itself is package sunrpc's.
package nfs

import (
	"context"
	"log/slog"
	"net"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/nfs/sunrpc"
)

// Options configure the NFS server.
type Options struct {
	Logger *slog.Logger
	// Key is the store's handle secret (LoadKey).
	Key []byte
	// Observer is told of every call (metrics); nil for none.
	Observer fs.Observer
}

// A Server answers NFS and MOUNT calls for one file system. Whose identity
// a call acts as comes from its credential (fs.Caller applies the
// export's squash rule).
type Server struct {
	h *handler
}

// New returns a server of f.
func New(f *fs.FS, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = fs.NopObserver{}
	}
	return &Server{h: &handler{f: f, key: opts.Key, log: opts.Logger, observer: opts.Observer}}
}

// ServeConn answers the calls on c until the client closes it or ctx is
// done; then it reads no more calls, lets those in flight finish and send
// their replies, closes c and returns. No goroutine of the connection
// outlives it. It returns the I/O error that broke the connection, if one
// did, for the caller to log.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	return sunrpc.ServeConn(ctx, c, s.h, s.h.log)
}
