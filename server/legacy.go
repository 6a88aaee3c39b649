package server

// ADAPTER, to delete at merge: nfs and ninep on this branch still have the
// old entry points, nfs.Serve(l, f, opts) and ninep.Serve(l, f, opts),
// which accept for themselves. legacyServer makes one a ConnServer, so
// that connections already go through conns (backoff, exports.allow,
// tracking, shutdown). With nfs.New and ninep.New, protocolServers in
// server.go returns those servers instead and this file goes.

import (
	"context"
	"log/slog"
	"net"
	"sync"
)

// legacyServer hands each connection to a Serve(net.Listener) through a
// listener of its own.
type legacyServer struct {
	feed *feedListener
	done chan struct{} // closed when Serve has returned
}

func newLegacyServer(proto string, log *slog.Logger, serve func(net.Listener) error) *legacyServer {
	ls := &legacyServer{feed: &feedListener{conns: make(chan net.Conn), closed: make(chan struct{})}, done: make(chan struct{})}
	go func() {
		defer close(ls.done)
		if err := serve(ls.feed); err != nil {
			log.Error("server stopped", "protocol", proto, "err", err)
		}
	}()
	return ls
}

// ServeConn gives c to the old server and returns once it closed c. The
// old servers cannot stop reading calls, so at shutdown c is closed under
// them, as they were before.
func (ls *legacyServer) ServeConn(ctx context.Context, c net.Conn) error {
	nc := &notifyConn{Conn: c, closed: make(chan struct{})}
	select {
	case ls.feed.conns <- nc:
	case <-ctx.Done():
		c.Close()
		return nil
	case <-ls.done:
		c.Close()
		return nil
	}
	select {
	case <-nc.closed:
	case <-ctx.Done():
		c.Close()
		select {
		case <-nc.closed:
		case <-ls.done:
		}
	}
	return nil
}

// Close ends the old server's Serve and waits for it.
func (ls *legacyServer) Close() error {
	ls.feed.Close()
	<-ls.done
	return nil
}

// feedListener is a net.Listener whose connections are handed to it.
type feedListener struct {
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *feedListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *feedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *feedListener) Addr() net.Addr { return &net.TCPAddr{} }

// notifyConn tells when the old server has closed it.
type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}
