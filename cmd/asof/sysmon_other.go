//go:build !unix

package main

// keepSysmonAwake does nothing here (no exec).
func keepSysmonAwake() {}
