package server

import (
	"log/slog"
	"net"
	"net/netip"
)

// allowListener refuses, before they send anything, clients outside
// exports.allow: one log line each, and the connection closed. Both
// protocols are served behind it, so neither adapter carries the rule.
type allowListener struct {
	net.Listener
	proto string
	allow func(netip.Addr) bool
	log   *slog.Logger
}

func (l *allowListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.allowed(c.RemoteAddr()) {
			return c, nil
		}
		l.log.Warn("refused a client outside exports.allow", "protocol", l.proto, "client", c.RemoteAddr().String())
		c.Close()
	}
}

func (l *allowListener) allowed(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && l.allow(ap.Addr().Unmap())
}
