//go:build !linux

package fileio

import (
	"errors"
	"os"
)

// Preallocate is not done here: intent files grow as they are appended to.
func Preallocate(*os.File, int64) error { return errors.ErrUnsupported }

// Datasync falls back to a full fsync (F_FULLFSYNC on darwin).
func Datasync(f *os.File) error { return f.Sync() }
