package history

import (
	"os"

	"golang.org/x/sys/unix"
)

// preadvNoWait is preadv that reads only what the page cache holds
// (RWF_NOWAIT, Linux 4.14): ErrWouldBlock where it would wait for the disk.
func preadvNoWait(f *os.File, iov [][]byte, off int64) error {
	return vectored(f, iov, off, func(fd int, iovs [][]byte, off int64) (int, error) {
		return unix.Preadv2(fd, iovs, off, unix.RWF_NOWAIT)
	})
}
