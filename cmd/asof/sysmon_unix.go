//go:build unix

package main

import (
	"os"
	"strings"
	"syscall"
)

// sysmonAwake is the GODEBUG setting that keeps the Go runtime's monitor
// thread (sysmon) out of its deep sleep: a scheduler trace every 2^31-1 ms,
// that is one line on standard error every 24.8 days.
//
// Why: when every P goes idle, sysmon sleeps deeply; the next system call
// wakes it and it then polls every 20 µs until it has been idle for a
// while. A server answering one request at a time goes idle between every
// two, so each request woke sysmon and paid its polls, each a timer and a
// context switch (expensive in a VM). In the libnfs metadata run that was a
// quarter of asof's CPU samples; kept awake, sysmon backs off to polling
// every 10 ms as it does in any busy program, and the server took 20-35 %
// less CPU per create, stat and remove (integration/bench/README.md). The
// runtime has no other way to say this (golang/go#18236), and GODEBUG is
// read only when a process starts, so serve starts itself again with it.
const sysmonAwake = "schedtrace=2147483647"

// keepSysmonAwake re-executes the server with sysmonAwake added to GODEBUG,
// unless GODEBUG already sets schedtrace (the user's choice, or this
// process is the re-executed one). It returns only if it does not
// re-execute: then the server runs as it is, only costlier per request.
func keepSysmonAwake() {
	godebug := os.Getenv("GODEBUG")
	for _, kv := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "schedtrace=") {
			return
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if godebug != "" {
		godebug += ","
	}
	env := []string{"GODEBUG=" + godebug + sysmonAwake}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") { // the first of a name counts
			env = append(env, kv)
		}
	}
	syscall.Exec(exe, os.Args, env) // returns only on failure
}
