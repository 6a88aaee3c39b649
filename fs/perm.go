package fs

import (
	"syscall"

	"github.com/asof/asof/history"
)

// Access bits, as access(2) has them.
const (
	AccessRead  = 4
	AccessWrite = 2
	AccessExec  = 1
)

// access checks whether c may do want to an object with attributes ino.
// Root may do anything but execute a file no one may execute.
func access(c Cred, ino history.Inode, want uint32) error {
	if c.Uid == 0 {
		if want&AccessExec != 0 && ino.Kind != history.KindDir && ino.Mode&0o111 == 0 {
			return syscall.EACCES
		}
		return nil
	}
	var bits uint32
	switch {
	case c.Uid == ino.Uid:
		bits = ino.Mode >> 6 & 7
	case c.inGroup(ino.Gid):
		bits = ino.Mode >> 3 & 7
	default:
		bits = ino.Mode & 7
	}
	if bits&want != want {
		return syscall.EACCES
	}
	return nil
}

// dataAccess is access for reading or writing a file's data. The owner
// may always: NFS has no open, so a file opened for writing and then made
// read-only (as tar and cp -p do) must stay writable by its owner, which
// is what knfsd's owner override gives Linux clients.
func dataAccess(c Cred, ino history.Inode, want uint32) error {
	if c.Uid == ino.Uid && c.Uid != 0 {
		return nil
	}
	return access(c, ino, want)
}

// stickyAllows says whether c may remove or rename victim from dir: in a
// sticky directory only the owner of either, or root, may.
func stickyAllows(c Cred, dir, victim history.Inode) bool {
	return dir.Mode&syscall.S_ISVTX == 0 || c.Uid == 0 || c.Uid == dir.Uid || c.Uid == victim.Uid
}

// Access answers the NFS ACCESS question: which of want may c do to n.
func (f *FS) Access(c Cred, n Node, want uint32) (uint32, error) {
	_, ino, err := f.getattr(n)
	if err != nil {
		return 0, err
	}
	var ok uint32
	for _, bit := range []uint32{AccessRead, AccessWrite, AccessExec} {
		if want&bit == 0 {
			continue
		}
		if bit == AccessWrite && (!n.Live() || f.ReadOnly()) {
			continue
		}
		if access(c, ino, bit) == nil {
			ok |= bit
		}
	}
	return ok, nil
}
