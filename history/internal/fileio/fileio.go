// Package fileio holds the file operations the store's mechanisms share:
// gathered writes, directory syncs, atomic replacement of small files,
// preallocation and data-only syncs, and the listing of files named by
// sequence numbers.
package fileio

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SyncDir makes dir's entries durable: a file created, renamed or removed
// there survives a crash only once its directory is synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("history: sync directory %s: %w", dir, err)
	}
	return nil
}

// WriteAtomic replaces path with b so that a crash leaves the old file or
// the new one, whole: written beside it, fsynced, renamed over it, and the
// directory fsynced.
func WriteAtomic(path string, b []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("history: write %s: %w", path, err)
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("history: write %s: %w", path, err)
	}
	return nil
}

// Pwritev writes every byte of iov at off, resuming after short writes
// and interrupted calls.
func Pwritev(f *os.File, iov [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(iov) > 0 {
		var n int
		var werr error
		if err := rc.Control(func(fd uintptr) { n, werr = unix.Pwritev(int(fd), iov, off) }); err != nil {
			return err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return fmt.Errorf("%s: %w", f.Name(), werr)
		}
		if n == 0 {
			return fmt.Errorf("%s: %w", f.Name(), io.ErrShortWrite)
		}
		off += int64(n)
		iov = skipIov(iov, n)
	}
	return nil
}

// skipIov drops the first n bytes of iov, after a short read or write.
func skipIov(iov [][]byte, n int) [][]byte {
	for n > 0 {
		if n < len(iov[0]) {
			iov[0] = iov[0][n:]
			break
		}
		n -= len(iov[0])
		iov = iov[1:]
	}
	return iov
}

// ListSeq lists the sequence numbers of the files in dir named as
// hexadecimal numbers of at most bits bits with the given suffix (log
// segments, packs, intent files), in order. Other names are ignored.
func ListSeq(dir, suffix string, bits int, what string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("history: list %s: %w", what, err)
	}
	var seqs []uint64
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(n, 16, bits); err == nil {
			seqs = append(seqs, v)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

// ListSeq32 is ListSeq for 32-bit sequence numbers.
func ListSeq32(dir, suffix, what string) ([]uint32, error) {
	seqs, err := ListSeq(dir, suffix, 32, what)
	out := make([]uint32, len(seqs))
	for i, v := range seqs {
		out[i] = uint32(v)
	}
	return out, err
}
