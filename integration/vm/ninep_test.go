package vm_test

import (
	"testing"

	"github.com/asof/asof/integration/vm"
)

// The Linux kernel's v9fs client does everyday file work on asof.
func TestSmoke9P(t *testing.T) {
	needVM(t)
	run(t, vm.Options{
		Server:    asof(t),
		NinePPort: 5640,
		Workload:  "workloads/smoke.sh",
	})
}

// One guest mounts asof over NFS and 9P at once: what is written through
// one protocol is read through the other, at once.
func TestCrossProtocol(t *testing.T) {
	needVM(t)
	res := run(t, vm.Options{
		Server:    asof(t),
		NFSPort:   2049,
		NinePPort: 5640,
		Together:  true,
		Workload:  "workloads/smoke.sh",
	})
	if m, ok := res.Mount("both"); !ok || !m.Passed {
		t.Fatalf("both mounts: %+v", m)
	}
}

// 9P fids never outlive a server: after a restart (SIGTERM, then kill -9)
// the client remounts and finds every acknowledged byte.
func TestRestartAndRemount9P(t *testing.T) {
	needVM(t)
	res := run(t, vm.Options{
		Server:    asof(t),
		NinePPort: 5640,
		Workload:  "workloads/restart9p.sh",
	})
	if len(res.Restarts) != 2 {
		t.Fatalf("restarts = %+v, want TERM then KILL", res.Restarts)
	}
}
