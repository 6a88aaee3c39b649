//go:build !linux

package sunrpc

import "syscall"

// unread reports whether the client has sent bytes that are not read yet:
// here it cannot be told.
func unread(syscall.RawConn) bool { return true }
