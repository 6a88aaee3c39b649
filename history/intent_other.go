//go:build !linux

package history

import (
	"errors"
	"os"
)

// preallocate is not done here: intent files grow as they are appended to.
func preallocate(*os.File, int64) error { return errors.ErrUnsupported }

// datasync falls back to a full fsync (F_FULLFSYNC on darwin).
func datasync(f *os.File) error { return f.Sync() }
