package fs

import (
	"strings"
	"syscall"

	"github.com/asof/asof/history"
)

// The tables both protocols need to turn an object's kind into what their
// clients expect: st_mode type bits, dirent types, device numbers. They
// live here once so that NFS and 9P can never disagree about a file.

// TypeBits is the S_IF* type of a kind, as st_mode carries it; 0 for a
// kind the engine does not know.
func TypeBits(k history.Kind) uint32 {
	switch k {
	case history.KindFile:
		return syscall.S_IFREG
	case history.KindDir:
		return syscall.S_IFDIR
	case history.KindSymlink:
		return syscall.S_IFLNK
	case history.KindChar:
		return syscall.S_IFCHR
	case history.KindBlock:
		return syscall.S_IFBLK
	case history.KindFifo:
		return syscall.S_IFIFO
	case history.KindSocket:
		return syscall.S_IFSOCK
	}
	return 0
}

// DirentType is the d_type of a kind (DT_REG, DT_DIR, ...), which Linux
// defines as the S_IF* bits shifted down by twelve.
func DirentType(k history.Kind) uint8 { return uint8(TypeBits(k) >> 12) }

// KindOfMode is the kind an st_mode's type bits name, as mknod receives
// them. No type bits means a regular file, as mknod(2) says. Directories
// and symlinks have calls of their own, so mknod refuses them, and any
// other pattern, with EINVAL.
func KindOfMode(mode uint32) (history.Kind, error) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		return history.KindFile, nil
	case syscall.S_IFCHR:
		return history.KindChar, nil
	case syscall.S_IFBLK:
		return history.KindBlock, nil
	case syscall.S_IFIFO:
		return history.KindFifo, nil
	case syscall.S_IFSOCK:
		return history.KindSocket, nil
	}
	return 0, syscall.EINVAL
}

// Rdev packs a device number the way the engine stores it: major in the
// high 32 bits, minor in the low. NFS's specdata3 carries the two halves
// as they are.
func Rdev(major, minor uint32) uint64 { return uint64(major)<<32 | uint64(minor) }

// RdevParts splits a stored device number into major and minor.
func RdevParts(rdev uint64) (major, minor uint32) { return uint32(rdev >> 32), uint32(rdev) }

// LinuxDev is a stored device number as Linux's dev_t (glibc's makedev),
// which is what 9P2000.L clients decode.
func LinuxDev(rdev uint64) uint64 {
	major, minor := uint64(rdev>>32), uint64(uint32(rdev))
	return (major&0xfffff000)<<32 | (major&0xfff)<<8 | (minor&0xffffff00)<<12 | minor&0xff
}

// Reserved reports whether a name carries the @@ time-travel suffix. Such
// a name is resolved by Lookup, never stored: listings never show one and
// a change to one is refused.
func Reserved(name string) bool { return strings.Contains(name, TimeSep) }

// TimeSep separates a name from its moment: name@@WHEN.
const TimeSep = "@@"
