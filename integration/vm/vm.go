// Package vm boots a real Linux kernel under qemu and lets its NFSv3 and 9P2000.L clients
// mount a file server that runs on this machine, then runs a busybox shell workload on the
// mounts. It is asof's way of testing against the clients people actually use.
//
// Each Run creates its own network namespace with a tap device; the server command and qemu
// both run inside it, so nothing is reachable from outside and runs never collide. The guest
// (Debian's stock kernel, busybox, the client modules and a few GNU tools) is built once by
// guest/build.sh into Dir() and reused. A boot costs about 10 s with software emulation.
//
// The guest talks to the host through console lines (see guest/init.sh):
//
//	GUEST-BOOTED, GUEST-MOUNTED P, GUEST-PASS P, GUEST-FAIL P rc=N, GUEST-DONE rc=N
//	GUEST-CALL ID WORDS...       from the host-call helper: Options.OnCall answers it,
//	                             except "restart-server [TERM|KILL]" (the restart-server
//	                             helper), which restarts the server
//	GUEST-RESTART-SERVER [SIG]   restarts the server too, but nobody waits for it
//
// and the host answers a call by typing "GUEST-REPLY ID rc=N TEXT" into the guest's console.
package vm

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Addresses inside every Run's network namespace. The server listens on HostIP (the
// command's @HOST@); the guest is GuestIP, inside GuestNet (@GUEST@ and @GUESTNET@). A
// server that filters clients by address must allow GuestNet.
const (
	HostIP   = "10.213.7.1"
	GuestIP  = "10.213.7.2"
	GuestNet = "10.213.7.0/24"
)

// Mount points in the guest.
const (
	NFSMount   = "/mnt/nfs"
	NinePMount = "/mnt/9p"
)

// Command is the server to run inside the namespace. In Argv and in the values of Env, the
// words @HOST@, @GUEST@ and @GUESTNET@ are replaced by HostIP, GuestIP and GuestNet.
type Command struct {
	Argv []string
	Env  []string // KEY=VALUE, added to this process's environment
	Dir  string   // working directory; empty means this process's
}

// Options describe one boot.
type Options struct {
	Server Command

	// NFS: mount export NFSExport (default "/") from NFSPort on NFSMount, with
	// nfsvers=3,proto=tcp,port=P,mountport=P,mountproto=tcp,nolock plus NFSOptions: MOUNT
	// and NFS on one port and no lock manager, as go-nfs serves them. The mount is hard
	// unless NFSOptions says "soft".
	NFSPort    int
	NFSExport  string
	NFSOptions string // extra mount options, comma separated (e.g. "soft,timeo=50")

	// 9P: mount from NinePPort on NinePMount with trans=tcp,version=9p2000.L,msize=262144,
	// aname=NinePAname plus NinePOptions.
	NinePPort    int
	NinePAname   string
	NinePOptions string

	// Together mounts both and runs the workload once, as: workload.sh /mnt/nfs both /mnt/9p.
	// Otherwise each mount gets its own run: workload.sh MOUNTPOINT nfs|9p.
	Together bool

	// Workload is a host path to a busybox sh script. Without one the guest lists the mount.
	Workload string

	// Files adds files to the guest: guest absolute path -> host path. A static binary put
	// at /usr/bin/NAME can be run by the workload as NAME.
	Files map[string]string

	// Timeout bounds the boot and workload (default 5 minutes); waiting for a free VM slot
	// (see ASOF_VM_JOBS) is not counted.
	Timeout time.Duration

	// OnCall answers "host-call WORDS..." from the workload. The reply text (one line) is
	// what host-call prints; an error makes host-call fail with the error's text.
	OnCall func(ctx context.Context, words []string) (string, error)

	// Logf, when set, receives the guest's GUEST lines and the harness's events as they
	// happen (t.Logf fits).
	Logf func(format string, args ...any)

	// KeepWork keeps the run's work directory (console.log, server.log, initrd) and logs it.
	KeepWork bool
}

// Mount is what the guest reported for one protocol: "nfs", "9p", or "both" (Together).
type Mount struct {
	Proto         string
	Mounted       bool
	Ran           bool // the workload ran and reported
	Passed        bool // the workload exited 0
	ExitCode      int  // the workload's exit status
	UnmountFailed bool
	Detail        string // the GUEST-MOUNT-FAIL line, when the mount failed
}

// Restart records one restart of the server during the run.
type Restart struct {
	Signal   string        // TERM or KILL
	ExitCode int           // of the stopped server; -1 when a signal ended it
	Down     time.Duration // from the request until the server accepted connections again
	Err      error         // nil when the server came back
}

// Marker is one GUEST line with the time it appeared, counted from qemu's start.
type Marker struct {
	At   time.Duration
	Line string
}

// Result of a Run. Console and ServerLog are filled in whatever happened.
type Result struct {
	Console    string // the guest's console (qemu's output), without \r and terminal escapes
	ServerLog  string // the server's stdout and stderr, across restarts
	Kernel     string // guest kernel release
	Markers    []Marker
	Mounts     []Mount
	Restarts   []Restart
	Done       bool // the guest reached GUEST-DONE
	ExitCode   int  // its rc
	TimedOut   bool
	Boot       time.Duration // qemu start to GUEST-BOOTED
	Elapsed    time.Duration // qemu start to qemu exit
	ServerExit int           // exit status of the final SIGTERM stop; -1 when killed

	expect []string
	errs   []string
}

// Mount returns what the guest reported for proto ("nfs", "9p" or "both").
func (r *Result) Mount(proto string) (Mount, bool) {
	for _, m := range r.Mounts {
		if m.Proto == proto {
			return m, true
		}
	}
	return Mount{Proto: proto}, false
}

// Passed reports whether the guest finished with every mount and workload passing, every
// restart worked and no harness error happened.
func (r *Result) Passed() bool { return r.failure() == "" }

func (r *Result) failure() string {
	var why []string
	why = append(why, r.errs...)
	if r.TimedOut {
		why = append(why, "timed out")
	} else if !r.Done {
		why = append(why, "the guest stopped before GUEST-DONE")
	} else if r.ExitCode != 0 {
		why = append(why, fmt.Sprintf("guest rc=%d", r.ExitCode))
	}
	for _, p := range r.expect {
		m, ok := r.Mount(p)
		switch {
		case !ok:
			why = append(why, p+": no report")
		case m.Detail != "":
			why = append(why, p+": mount failed")
		case !m.Ran:
			why = append(why, p+": workload did not finish")
		case !m.Passed:
			why = append(why, fmt.Sprintf("%s: workload exited %d", p, m.ExitCode))
		}
		if m.UnmountFailed {
			why = append(why, p+": umount failed")
		}
	}
	for _, rs := range r.Restarts {
		if rs.Err != nil {
			why = append(why, "restart: "+rs.Err.Error())
		}
	}
	return strings.Join(why, "; ")
}

// Err is nil when the run passed; otherwise it says why, with the GUEST lines and the tails
// of the console and the server log.
func (r *Result) Err() error {
	f := r.failure()
	if f == "" {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "vm: %s\n--- guest markers ---\n", f)
	for _, m := range r.Markers {
		fmt.Fprintf(&b, "%7.2fs %s\n", m.At.Seconds(), m.Line)
	}
	fmt.Fprintf(&b, "--- console (last 40 lines) ---\n%s\n", tail(r.Console, 40))
	fmt.Fprintf(&b, "--- server log (last 40 lines) ---\n%s", tail(r.ServerLog, 40))
	return errors.New(b.String())
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

//go:embed guest
var guestFiles embed.FS

// Guest is a built guest.
type Guest struct {
	Dir           string
	Kernel        string // vmlinuz
	Initrd        string // initrd.gz
	KernelVersion string
}

// Dir is where the guest is built: $ASOF_VM_DIR, or ~/.cache/asof-linux-vm.
func Dir() string {
	if d := os.Getenv("ASOF_VM_DIR"); d != "" {
		return d
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "asof-linux-vm")
	}
	return filepath.Join(os.TempDir(), "asof-linux-vm")
}

var (
	buildMu sync.Mutex
	built   *Guest
)

// Build builds the guest into Dir() unless an up-to-date one is there (guest/build.sh
// decides). Run calls it; a test may call it first to keep the build out of its timings.
func Build(ctx context.Context) (Guest, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if built != nil {
		return *built, nil
	}
	src, err := os.MkdirTemp("", "asof-vm-guest-")
	if err != nil {
		return Guest{}, err
	}
	defer os.RemoveAll(src)
	err = fs.WalkDir(guestFiles, "guest", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(src, strings.TrimPrefix(p, "guest"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := guestFiles.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o755)
	})
	if err != nil {
		return Guest{}, fmt.Errorf("vm: unpacking the guest sources: %w", err)
	}
	dir := Dir()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(src, "build.sh"), dir)
	cmd.Env = append(os.Environ(), "PATH="+sbinPath())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Guest{}, fmt.Errorf("vm: building the guest in %s: %v\n%s", dir, err, out)
	}
	g := Guest{Dir: dir, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.gz")}
	if v, err := os.ReadFile(filepath.Join(dir, "kernel.version")); err == nil {
		g.KernelVersion = strings.TrimSpace(string(v))
	}
	built = &g
	return g, nil
}

// programs the harness and guest/build.sh run on this machine
var hostPrograms = []string{"ip", "qemu-system-x86_64", "/bin/busybox", "depmod", "cpio", "gzip",
	"ldd", "dpkg", "apt-get", "apt-cache", "flock", "bash",
	// copied into the guest
	"git", "diff", "cmp", "tar", "cp", "mv", "find", "stat", "rsync", "sha256sum", "xargs", "setpriv"}

// Available says why this machine cannot boot the guest, or nil when it can: it needs
// Linux on amd64, root (for network namespaces and tap devices), /dev/net/tun, and the
// programs that scripts/test-deps.sh installs. Tests skip with this reason.
func Available() error {
	var why []string
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		why = append(why, "needs linux/amd64, this is "+runtime.GOOS+"/"+runtime.GOARCH)
	} else {
		if os.Geteuid() != 0 {
			why = append(why, "not root (network namespaces and tap devices need root)")
		}
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			why = append(why, "no /dev/net/tun")
		}
		var missing []string
		for _, p := range hostPrograms {
			if _, err := lookPath(p); err != nil {
				missing = append(missing, p)
			}
		}
		if len(missing) > 0 {
			why = append(why, "missing "+strings.Join(missing, ", ")+" (run scripts/test-deps.sh)")
		}
	}
	if len(why) == 0 {
		return nil
	}
	return errors.New("vm: cannot boot the Linux guest: " + strings.Join(why, "; "))
}

func sbinPath() string {
	p := os.Getenv("PATH")
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if !strings.Contains(":"+p+":", ":"+d+":") {
			p += ":" + d
		}
	}
	return p
}

func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		st, err := os.Stat(name)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s: not an executable", name)
		}
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if p, err := lookPath(filepath.Join(d, name)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

func expand(c Command) Command {
	rep := strings.NewReplacer("@HOST@", HostIP, "@GUESTNET@", GuestNet, "@GUEST@", GuestIP)
	out := Command{Dir: c.Dir}
	for _, a := range c.Argv {
		out.Argv = append(out.Argv, rep.Replace(a))
	}
	for _, e := range c.Env {
		out.Env = append(out.Env, rep.Replace(e))
	}
	return out
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ansiRE matches the terminal escapes firmware and kernel print on the console.
var ansiRE = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-~])`)

// markerRE splits a console line "GUEST-WORD rest".
var markerRE = regexp.MustCompile(`^GUEST-([A-Z-]+)(?: (.*))?$`)

func parseMarkers(res *Result) {
	idx := map[string]int{}
	get := func(p string) *Mount {
		i, ok := idx[p]
		if !ok {
			i = len(res.Mounts)
			idx[p] = i
			res.Mounts = append(res.Mounts, Mount{Proto: p})
		}
		return &res.Mounts[i]
	}
	for _, mk := range res.Markers {
		m := markerRE.FindStringSubmatch(mk.Line)
		if m == nil {
			continue
		}
		arg := m[2]
		proto, rest, _ := strings.Cut(arg, " ")
		proto = strings.TrimSuffix(proto, ":")
		switch m[1] {
		case "BOOTED":
			res.Kernel = arg
			res.Boot = mk.At
		case "MOUNTED":
			get(proto).Mounted = true
		case "MOUNT-FAIL":
			get(proto).Detail = mk.Line
		case "PASS":
			mt := get(proto)
			mt.Ran, mt.Passed, mt.ExitCode = true, true, 0
		case "FAIL":
			mt := get(proto)
			mt.Ran, mt.Passed, mt.ExitCode = true, false, 1
			if v, ok := strings.CutPrefix(rest, "rc="); ok {
				if n, err := strconv.Atoi(v); err == nil {
					mt.ExitCode = n
				}
			}
		case "UMOUNT-FAIL":
			get(proto).UnmountFailed = true
		case "DONE":
			res.Done = true
			if v, ok := strings.CutPrefix(arg, "rc="); ok {
				res.ExitCode, _ = strconv.Atoi(v)
			}
		}
	}
}
