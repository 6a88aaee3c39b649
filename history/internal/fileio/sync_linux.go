//go:build linux

package fileio

import (
	"os"

	"golang.org/x/sys/unix"
)

// Preallocate gives f size bytes of allocated, zero-reading space
// (fallocate mode 0: the file's size becomes size).
func Preallocate(f *os.File, size int64) error {
	return ignoringEINTR(f, "fallocate", func(fd int) error { return unix.Fallocate(fd, 0, 0, size) })
}

// Datasync is fdatasync(2): the file's data and the metadata needed to
// read it back (size, block map, unwritten-extent state), not its times.
func Datasync(f *os.File) error {
	return ignoringEINTR(f, "fdatasync", unix.Fdatasync)
}

func ignoringEINTR(f *os.File, op string, call func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if cerr = call(int(fd)); cerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if cerr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: cerr}
	}
	return nil
}
