package fs

import (
	"strings"
	"syscall"
	"testing"
)

// A restore of a live path is the caller's mistake: EINVAL, with a message
// that says what to give instead.
func TestRestoreOfALivePathIsInvalid(t *testing.T) {
	f, _ := newTestFS(t)
	if _, err := f.Mkdir(root, f.Root(), "docs", 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := f.Restore(root, "/docs")
	if Errno(err) != syscall.EINVAL || !strings.Contains(err.Error(), "@@WHEN") {
		t.Fatalf("restore /docs: %v (errno %v), want EINVAL naming @@WHEN", err, Errno(err))
	}
}
