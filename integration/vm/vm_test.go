package vm_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asof/asof/integration/serverproc"
	"github.com/asof/asof/integration/vm"
)

func TestMain(m *testing.M) { os.Exit(serverproc.Main(m)) }

// needVM skips when this machine cannot boot the guest (not root, no qemu, ...) or with
// -short: each boot costs about 10 s.
func needVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a Linux guest (~10 s); skipped with -short")
	}
	if err := vm.Available(); err != nil {
		t.Skip(err)
	}
}

// asof is the server command: the asof binary of this module, listening inside the
// namespace and letting the guest's network in.
func asof(t *testing.T) vm.Command {
	bin := serverproc.Binary(t)
	sock, err := os.MkdirTemp("", "asof-vm-sock-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	return vm.Command{
		Argv: []string{bin, "serve"},
		Env: []string{
			"ASOF_DATA=" + filepath.Join(t.TempDir(), "data"),
			"ASOF_NFS_LISTEN=@HOST@:2049",
			"ASOF_NINEP_LISTEN=@HOST@:5640",
			"ASOF_CONTROL_SOCKET=" + filepath.Join(sock, "control.sock"),
			"ASOF_EXPORTS_ALLOW=@GUESTNET@",
		},
	}
}

func run(t *testing.T, o vm.Options) vm.Result {
	t.Helper()
	o.Logf = t.Logf
	res, err := vm.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %v, whole run %v", res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	if res.ServerExit != 0 {
		t.Errorf("asof exited %d on SIGTERM at the end, want 0", res.ServerExit)
	}
	return res
}

// The Linux kernel's NFSv3 client does everyday file work on asof, and the
// server logs no warning for it (the client probes NFS_ACL at every mount,
// which go-nfs alone would warn about).
func TestSmokeNFS(t *testing.T) {
	needVM(t)
	res := run(t, vm.Options{
		Server:   asof(t),
		NFSPort:  2049,
		Workload: "workloads/smoke.sh",
	})
	for _, l := range strings.Split(res.ServerLog, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("server logged: %s", l)
		}
	}
}

// The kernel client writes to an asof whose disk (a 40 MiB tmpfs) fills up: the write
// that finds no room fails with "No space left on device", what fitted stays, and the
// server logs the failing commits once, not at every attempt.
func TestFullDiskNFS(t *testing.T) { fullDisk(t, vm.Options{NFSPort: 2049}) }

// The same through 9P.
func TestFullDisk9P(t *testing.T) { fullDisk(t, vm.Options{NinePPort: 5640}) }

func fullDisk(t *testing.T, o vm.Options) {
	needVM(t)
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=40m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	o.Server = asof(t)
	for i, e := range o.Server.Env {
		if strings.HasPrefix(e, "ASOF_DATA=") {
			o.Server.Env[i] = "ASOF_DATA=" + filepath.Join(mnt, "data")
		}
	}
	o.Workload, o.Logf = "workloads/full.sh", t.Logf
	res, err := vm.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest: %s", grepLines(res.Console, "dd"))
	if !strings.Contains(res.Console, "ok   dd says there is no space") {
		t.Errorf("the guest's checks did not run through:\n%s", res.Console)
	}
	if n := strings.Count(res.ServerLog, "commit failed"); n != 1 {
		t.Errorf("%d log lines say a commit failed, want one:\n%s", n, res.ServerLog)
	}
	// SIGTERM cannot commit on the full disk: asof says where the changes are and
	// exits 1.
	if res.ServerExit != 1 || !strings.Contains(res.ServerLog, "intent log") {
		t.Errorf("asof exited %d on SIGTERM on the full disk, want 1 with a word on the intent log:\n%s",
			res.ServerExit, res.ServerLog)
	}
}

// asof restarts (SIGTERM, then kill -9) while the kernel client holds a file open on a
// hard mount: the client carries on, and writes from before and after are all there.
func TestRestartWithOpenFileNFS(t *testing.T) {
	needVM(t)
	res := run(t, vm.Options{
		Server:   asof(t),
		NFSPort:  2049,
		Workload: "workloads/restart.sh",
	})
	if len(res.Restarts) != 2 {
		t.Fatalf("restarts = %+v, want TERM then KILL", res.Restarts)
	}
	if r := res.Restarts[0]; r.Signal != "TERM" || r.ExitCode != 0 {
		t.Errorf("after SIGTERM asof exited %d, want 0", r.ExitCode)
	}
}

// grepLines is the lines of s that contain sub, joined.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, " | ")
}
