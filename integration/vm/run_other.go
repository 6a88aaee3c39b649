//go:build !linux

package vm

import "context"

// Run needs Linux: see Available.
func Run(ctx context.Context, o Options) (Result, error) {
	return Result{ServerExit: -1}, Available()
}
