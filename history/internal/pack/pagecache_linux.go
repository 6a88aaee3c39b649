package pack

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident tells whether every page of b, a part of a pack's mapping, is
// in the page cache, so that reading it will not wait for the disk.
func resident(b []byte) (bool, error) {
	if len(b) == 0 {
		return true, nil
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&b[0]))
	first := start &^ (page - 1)
	end := start + uintptr(len(b))
	var vec [256]byte
	for addr := first; addr < end; {
		n := min((end-addr+page-1)/page, uintptr(len(vec)))
		if err := mincore(addr, n*page, vec[:n]); err != nil {
			return false, err
		}
		for _, v := range vec[:n] {
			if v&1 == 0 {
				return false, nil
			}
		}
		addr += n * page
	}
	return true, nil
}

// mincore sets vec[i]&1 where page i of the length bytes from addr (page
// aligned, a page of vec each) is in the page cache (mincore(2); x/sys
// has no wrapper for it).
func mincore(addr, length uintptr, vec []byte) error {
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, addr, length, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return e
	}
	return nil
}

// dropPages drops the clean, unmapped page cache of f's bytes [off, off+n)
// (posix_fadvise POSIX_FADV_DONTNEED; whole pages only).
// The file may be closed meanwhile (the cleaner removed the pack): Control
// holds the descriptor for the call, and fails on a closed file.
func dropPages(f *os.File, off, n int64) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED) })
	}
}

// startWriteback starts writing f's bytes [off, off+n) to the disk and
// returns without waiting (sync_file_range(2) SYNC_FILE_RANGE_WRITE), so
// that the fsync of a commit finds most of its blocks written already.
func startWriteback(f *os.File, off, n int64) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE) })
	}
}
