package fs

import (
	"errors"
	"strings"
	"syscall"

	"github.com/asof/asof/history"
)

// Extended attribute limits, as Linux's XATTR_NAME_MAX and XATTR_SIZE_MAX.
const (
	XattrNameMax = 255
	XattrSizeMax = 64 << 10
)

// Xattr flags, as setxattr(2) has them.
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// xattrAccess: user.* follows the file's permission bits, with Linux's
// exceptions (xattr_permission); the other namespaces (trusted, security,
// system) are root's.
func xattrAccess(c Cred, ino history.Inode, name string, want uint32) error {
	if strings.HasPrefix(name, "user.") {
		if ino.Kind != history.KindFile && ino.Kind != history.KindDir {
			return syscall.EPERM
		}
		if ino.Kind == history.KindDir && ino.Mode&syscall.S_ISVTX != 0 && want&AccessWrite != 0 &&
			c.Uid != 0 && c.Uid != ino.Uid {
			// A sticky directory (/tmp, a new store's root) is writable
			// by all; its attributes are still only its owner's to change.
			return syscall.EPERM
		}
		return access(c, ino, want)
	}
	if c.Uid != 0 && want&AccessWrite != 0 {
		return syscall.EPERM
	}
	if c.Uid != 0 && strings.HasPrefix(name, "trusted.") {
		// Invisible to all but root, as on Linux.
		return syscall.ENODATA
	}
	return nil
}

// GetXattr reads an extended attribute.
func (f *FS) GetXattr(c Cred, n Node, name string) ([]byte, error) {
	_, ino, err := f.getattr(n)
	if err != nil {
		return nil, err
	}
	if err := xattrAccess(c, ino, name, AccessRead); err != nil {
		return nil, err
	}
	v, err := f.s.Xattr(n.Obj, name, n.At)
	if errors.Is(err, history.ErrNotFound) {
		return nil, syscall.ENODATA
	}
	return v, err
}

// ListXattr lists extended attribute names.
func (f *FS) ListXattr(c Cred, n Node) ([]string, error) {
	if _, _, err := f.getattr(n); err != nil {
		return nil, err
	}
	names, err := f.s.Xattrs(n.Obj, n.At)
	if err != nil || c.Uid == 0 {
		return names, err
	}
	shown := names[:0]
	for _, name := range names {
		if !strings.HasPrefix(name, "trusted.") {
			shown = append(shown, name)
		}
	}
	return shown, nil
}

// SetXattr sets an extended attribute; flags as setxattr(2).
func (f *FS) SetXattr(c Cred, n Node, name string, value []byte, flags int) error {
	if len(name) == 0 || len(name) > XattrNameMax {
		return syscall.ERANGE
	}
	if len(value) > XattrSizeMax {
		return syscall.E2BIG
	}
	return f.update([]Node{n}, func(tx *history.Tx) error {
		ino, err := tx.Inode(n.Obj)
		if err != nil {
			return err
		}
		if err := xattrAccess(c, ino, name, AccessWrite); err != nil {
			return err
		}
		_, err = tx.Xattr(n.Obj, name)
		exists := err == nil
		if err != nil && !errors.Is(err, history.ErrNotFound) {
			return err
		}
		if flags&XattrCreate != 0 && exists {
			return syscall.EEXIST
		}
		if flags&XattrReplace != 0 && !exists {
			return syscall.ENODATA
		}
		if err := tx.SetXattr(n.Obj, name, value); err != nil {
			return err
		}
		ino.Ctime = f.now()
		return tx.PutInode(n.Obj, ino)
	})
}

// RemoveXattr removes an extended attribute.
func (f *FS) RemoveXattr(c Cred, n Node, name string) error {
	return f.update([]Node{n}, func(tx *history.Tx) error {
		ino, err := tx.Inode(n.Obj)
		if err != nil {
			return err
		}
		if err := xattrAccess(c, ino, name, AccessWrite); err != nil {
			return err
		}
		if _, err := tx.Xattr(n.Obj, name); errors.Is(err, history.ErrNotFound) {
			return syscall.ENODATA
		} else if err != nil {
			return err
		}
		if err := tx.RemoveXattr(n.Obj, name); err != nil {
			return err
		}
		ino.Ctime = f.now()
		return tx.PutInode(n.Obj, ino)
	})
}
