package server

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The control socket is 0600 whatever the umask, the umask is left alone,
// a stale socket is replaced, and no private directory is left behind.
func TestListenPrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // a crashed server's socket: the file stays

	old := syscall.Umask(0) // the most permissive umask there is
	defer syscall.Umask(old)
	l, err := listenPrivate(path)
	if got := syscall.Umask(0); got != 0 {
		t.Errorf("umask changed to %#o", got)
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", st.Mode())
	}
	if l.Addr().String() != path {
		t.Errorf("Addr %s, want %s", l.Addr(), path)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want the socket alone: %v", len(ents), ents)
	}

	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil || b[0] != 'x' {
		t.Errorf("read %q, %v through the socket", b, err)
	}
	c.Close()

	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
}
