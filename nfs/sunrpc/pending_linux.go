//go:build linux

package sunrpc

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// unread reports whether the client has sent bytes that are not read yet
// (FIONREAD, alias TIOCINQ, on the socket); true when that cannot be told.
func unread(raw syscall.RawConn) bool {
	if raw == nil {
		return true
	}
	n := 1
	raw.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil {
			n = v
		}
	})
	return n != 0
}
