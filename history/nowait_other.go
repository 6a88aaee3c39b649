//go:build !linux

package history

// resident cannot tell here whether reading b would wait for the disk: it
// says it would not, and the read waits if it must.
func resident(b []byte) (bool, error) { return true, nil }
