//go:build !linux

package history

import "os"

// preadvNoWait cannot tell a cached read from one that waits for the disk
// here: it reads.
func preadvNoWait(f *os.File, iov [][]byte, off int64) error { return preadv(f, iov, off) }
