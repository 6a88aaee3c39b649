package vm

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"path"
	"strings"
)

// cpioArchive writes the "newc" cpio format the kernel unpacks as an initramfs. Parent
// directories are emitted before the files in them, as the kernel does not create them.
type cpioArchive struct {
	buf  bytes.Buffer
	ino  uint32
	dirs map[string]bool
}

func newCpio() *cpioArchive { return &cpioArchive{ino: 1 << 20, dirs: map[string]bool{}} }

const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
)

func (a *cpioArchive) entry(name string, mode uint32, data []byte) {
	a.ino++
	name = strings.TrimPrefix(name, "/")
	fmt.Fprintf(&a.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	a.buf.WriteString(name)
	a.buf.WriteByte(0)
	a.pad()
	a.buf.Write(data)
	a.pad()
}

func (a *cpioArchive) pad() {
	for a.buf.Len()%4 != 0 {
		a.buf.WriteByte(0)
	}
}

func (a *cpioArchive) dir(p string) {
	p = path.Clean("/" + p)
	if p == "/" || a.dirs[p] {
		return
	}
	a.dir(path.Dir(p))
	a.dirs[p] = true
	a.entry(p, cpioDir|0o755, nil)
}

// file adds a regular file at absolute path p with permission bits perm.
func (a *cpioArchive) file(p string, perm uint32, data []byte) {
	p = path.Clean("/" + p)
	a.dir(path.Dir(p))
	a.entry(p, cpioFile|perm&0o7777, data)
}

// gzipped ends the archive and returns it compressed.
func (a *cpioArchive) gzipped() ([]byte, error) {
	a.entry("TRAILER!!!", 0, nil)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(a.buf.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
