package server

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// listenPrivate listens on a new unix socket at path that only this
// process's user can connect to (mode 0600), replacing whatever socket a
// crashed server left there.
//
// bind(2) creates the socket file with the process umask, and the umask
// is process-wide: changing it while NFS, 9P and the flusher run would
// change the mode of whatever they create meanwhile. So the socket is
// bound in a fresh directory of mode 0700 next to path, where no one else
// can reach it, made 0600 there, and renamed into place: at path it is
// 0600 from its first moment, and rename replaces a stale socket
// atomically.
func listenPrivate(path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".s") // MkdirTemp makes it 0700
	if err != nil {
		return nil, fmt.Errorf("create a private directory for the socket: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	if n := len(tmp); n > maxSocketPath {
		return nil, fmt.Errorf("%s: asof binds the socket at %s first, %d bytes long, over the limit of %d for unix socket paths: use a path %d bytes shorter",
			path, tmp, n, maxSocketPath, n-maxSocketPath)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// The listener would unlink tmp on Close; the socket lives at path.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("move socket into place: %w", err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return nil, err
	}
	return &socketListener{UnixListener: l, path: path, st: st}, nil
}

// maxSocketPath is the longest unix socket path bind accepts on Linux
// (108 bytes with the NUL); BSDs and macOS allow 103, and config checks
// control.socket against those.
const maxSocketPath = 107

// socketListener removes its socket file on Close, unless another has
// replaced it since.
type socketListener struct {
	*net.UnixListener
	path string
	st   os.FileInfo
	once sync.Once
}

func (l *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if st, e := os.Lstat(l.path); e == nil && os.SameFile(st, l.st) {
			os.Remove(l.path)
		}
	})
	return err
}
