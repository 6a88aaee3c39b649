//go:build linux

package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var nsCounter atomic.Int64

// errServerDied is the cause a run is cancelled with when the server exits on its own: a
// hard-mounted guest would otherwise wait for it until the timeout.
var errServerDied = errors.New("the server exited on its own")

// Run boots the guest once against the server command and returns what happened. The error
// is nil only when the run passed (Result.Err); the Result is filled in either way. The
// namespace, the server and qemu are gone when Run returns.
func Run(ctx context.Context, o Options) (Result, error) {
	res := Result{ServerExit: -1}
	if err := Available(); err != nil {
		return res, err
	}
	if len(o.Server.Argv) == 0 {
		return res, errors.New("vm: Options.Server.Argv is empty")
	}
	if o.NFSPort == 0 && o.NinePPort == 0 {
		return res, errors.New("vm: neither NFSPort nor NinePPort is set")
	}
	if o.Together && (o.NFSPort == 0 || o.NinePPort == 0) {
		return res, errors.New("vm: Together needs both NFSPort and NinePPort")
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.NFSExport == "" {
		o.NFSExport = "/"
	}
	// Nothing may log through o.Logf (often t.Logf) once Run has returned.
	var logMu sync.Mutex
	logOpen := o.Logf != nil
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		if logOpen {
			o.Logf(format, args...)
		}
	}
	defer func() {
		logMu.Lock()
		logOpen = false
		logMu.Unlock()
	}()
	if o.Together {
		res.expect = []string{"both"}
	} else {
		if o.NFSPort != 0 {
			res.expect = append(res.expect, "nfs")
		}
		if o.NinePPort != 0 {
			res.expect = append(res.expect, "9p")
		}
	}

	guest, err := Build(ctx)
	if err != nil {
		return res, err
	}
	release, err := acquireSlot(ctx, guest.Dir, logf)
	if err != nil {
		return res, err
	}
	defer release()

	sweepStale()
	work, err := os.MkdirTemp("", fmt.Sprintf("asof-vm-%d-", os.Getpid()))
	if err != nil {
		return res, err
	}
	if o.KeepWork {
		defer logf("vm: work directory kept: %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	r := &runner{o: o, logf: logf, work: work}
	defer r.cleanup()
	r.ns = fmt.Sprintf("asofvm-%d-%d", os.Getpid(), nsCounter.Add(1))
	if err := r.setupNetwork(ctx); err != nil {
		return res, err
	}

	srvLog, err := os.Create(filepath.Join(work, "server.log"))
	if err != nil {
		return res, err
	}
	defer srvLog.Close()
	r.srv = &server{ns: r.ns, cmd: expand(o.Server), log: srvLog, logf: logf,
		died: func(err error) { cancelRun(fmt.Errorf("%w (%v)", errServerDied, err)) }}
	for _, p := range []int{o.NFSPort, o.NinePPort} {
		if p != 0 {
			r.srv.addrs = append(r.srv.addrs, net.JoinHostPort(HostIP, strconv.Itoa(p)))
		}
	}
	if err := r.srv.start(ctx); err != nil {
		res.ServerLog = readString(srvLog.Name())
		return res, fmt.Errorf("vm: %v\n--- server log ---\n%s", err, tail(res.ServerLog, 40))
	}

	initrd, err := r.initrd(guest)
	if err != nil {
		return res, err
	}
	bootErr := r.boot(runCtx, guest, initrd, &res)
	if ctx.Err() != nil {
		res.ServerLog = readString(srvLog.Name())
		return res, fmt.Errorf("vm: %w", ctx.Err())
	}
	died := false
	if cause := context.Cause(runCtx); errors.Is(cause, errServerDied) {
		res.errs = append(res.errs, cause.Error())
		died = true
	}
	if bootErr != nil {
		res.ServerLog = readString(srvLog.Name())
		return res, bootErr
	}
	code, err := r.srv.stop(syscall.SIGTERM, 30*time.Second)
	res.ServerExit = code
	if err != nil && !died {
		res.errs = append(res.errs, "final server stop: "+err.Error())
	}
	res.ServerLog = readString(srvLog.Name())
	return res, res.Err()
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

type runner struct {
	o    Options
	logf func(string, ...any)
	work string
	ns   string
	srv  *server
}

func runIP(ctx context.Context, args ...string) error {
	ipPath, err := lookPath("ip")
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, ipPath, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (r *runner) setupNetwork(ctx context.Context) error {
	steps := [][]string{
		{"netns", "add", r.ns},
		{"-n", r.ns, "link", "set", "lo", "up"},
		{"-n", r.ns, "tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"-n", r.ns, "addr", "add", HostIP + "/24", "dev", "tap0"},
		{"-n", r.ns, "link", "set", "tap0", "up"},
	}
	for _, s := range steps {
		if err := runIP(ctx, s...); err != nil {
			return fmt.Errorf("vm: network namespace: %w", err)
		}
	}
	// "ip netns exec" bind-mounts /etc/netns/NAME/* over /etc: give the namespace names for
	// its two addresses, so servers that look their clients up (diod does) get an answer
	// at once instead of waiting for an unreachable DNS server.
	etc := filepath.Join("/etc/netns", r.ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\tasof-vm-host\n%s\tasof-vm-guest\n", HostIP, GuestIP)
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	return nil
}

func (r *runner) cleanup() {
	if r.srv != nil {
		r.srv.stop(syscall.SIGKILL, 10*time.Second)
	}
	if r.ns != "" {
		if err := runIP(context.Background(), "netns", "del", r.ns); err != nil {
			r.logf("vm: %v", err)
		}
		os.RemoveAll(filepath.Join("/etc/netns", r.ns))
	}
}

// sweepStale deletes the namespaces and work directories of test processes that died
// without cleaning up (their qemu and server died with them: Pdeathsig).
func sweepStale() {
	for _, dir := range []string{"/run/netns", "/etc/netns", os.TempDir()} {
		re := regexp.MustCompile(`^asofvm-(\d+)-\d+$`)
		if dir == os.TempDir() {
			re = regexp.MustCompile(`^asof-vm-(\d+)-\d+$`)
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			m := re.FindStringSubmatch(e.Name())
			if m == nil {
				continue
			}
			pid, _ := strconv.Atoi(m[1])
			if pid == os.Getpid() || alive(pid) {
				continue
			}
			if dir == "/run/netns" {
				runIP(context.Background(), "netns", "del", e.Name())
			} else {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses, the state follows the last ')'
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// acquireSlot limits how many guests boot at once on this machine, across test processes
// (go test runs packages in parallel): ASOF_VM_JOBS, or one per two CPUs.
func acquireSlot(ctx context.Context, dir string, logf func(string, ...any)) (func(), error) {
	n := runtime.NumCPU() / 2
	if v, err := strconv.Atoi(os.Getenv("ASOF_VM_JOBS")); err == nil && v > 0 {
		n = v
	}
	n = max(n, 1)
	waiting := false
	for {
		for i := 0; i < n; i++ {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf(".slot%d", i)), os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				return nil, fmt.Errorf("vm: %w", err)
			}
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				return func() { f.Close() }, nil
			}
			f.Close()
		}
		if !waiting {
			logf("vm: waiting for one of %d VM slots (ASOF_VM_JOBS)", n)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("vm: waiting for a VM slot: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// initrd returns the guest's base initrd with this run's files appended as a second
// compressed cpio archive (the kernel unpacks both).
func (r *runner) initrd(g Guest) (string, error) {
	var conf strings.Builder
	set := func(k, v string) { fmt.Fprintf(&conf, "%s=%s\n", k, shellQuote(v)) }
	set("vm_ip", GuestIP+"/24")
	set("vm_server", HostIP)
	if r.o.NFSPort != 0 {
		set("nfs_port", strconv.Itoa(r.o.NFSPort))
		set("nfs_export", r.o.NFSExport)
		set("nfs_opts", r.o.NFSOptions)
	}
	if r.o.NinePPort != 0 {
		set("p9_port", strconv.Itoa(r.o.NinePPort))
		set("p9_aname", r.o.NinePAname)
		set("p9_opts", r.o.NinePOptions)
	}
	if r.o.Together {
		set("together", "1")
	}
	a := newCpio()
	a.file("/etc/asof-vm.conf", 0o644, []byte(conf.String()))
	if r.o.Workload != "" {
		b, err := os.ReadFile(r.o.Workload)
		if err != nil {
			return "", fmt.Errorf("vm: workload: %w", err)
		}
		a.file("/workload.sh", 0o755, b)
	}
	guestPaths := make([]string, 0, len(r.o.Files))
	for gp := range r.o.Files {
		guestPaths = append(guestPaths, gp)
	}
	sort.Strings(guestPaths)
	for _, gp := range guestPaths {
		hp := r.o.Files[gp]
		if !strings.HasPrefix(gp, "/") {
			return "", fmt.Errorf("vm: Files: guest path %q is not absolute", gp)
		}
		st, err := os.Stat(hp)
		if err != nil {
			return "", fmt.Errorf("vm: Files: %w", err)
		}
		b, err := os.ReadFile(hp)
		if err != nil {
			return "", fmt.Errorf("vm: Files: %w", err)
		}
		a.file(gp, uint32(st.Mode().Perm()), b)
	}
	extra, err := a.gzipped()
	if err != nil {
		return "", err
	}
	base, err := os.ReadFile(g.Initrd)
	if err != nil {
		return "", err
	}
	out := filepath.Join(r.work, "initrd.gz")
	return out, os.WriteFile(out, append(base, extra...), 0o644)
}

// boot runs qemu in the namespace until the guest powers off, the timeout, or ctx ends,
// answering the guest's calls meanwhile, and fills res from the console.
func (r *runner) boot(ctx context.Context, g Guest, initrd string, res *Result) error {
	qemu, err := lookPath("qemu-system-x86_64")
	if err != nil {
		return err
	}
	ipPath, err := lookPath("ip")
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	args := []string{"netns", "exec", r.ns, qemu,
		"-accel", "tcg", "-m", "768M", "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", g.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0", "-nic", "none"}
	cmd := exec.CommandContext(rctx, ipPath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		pw.Close()
		return err
	}
	consoleFile, err := os.Create(filepath.Join(r.work, "console.log"))
	if err != nil {
		pw.Close()
		return err
	}
	defer consoleFile.Close()

	started := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("vm: starting qemu: %w", err)
	}
	pw.Close()
	r.logf("vm: booting Linux %s in namespace %s", g.KernelVersion, r.ns)

	var mu sync.Mutex // guards res.Markers, res.Restarts and console
	var console bytes.Buffer

	// Calls are answered one at a time, off the console reader so it never stalls qemu.
	type call struct {
		id    string // empty: nobody waits for the answer
		words []string
	}
	calls := make(chan call, 64)
	callsDone := make(chan struct{})
	go func() {
		defer close(callsDone)
		for c := range calls {
			rc, text := r.answer(rctx, c.words, res, &mu)
			if c.id == "" {
				continue
			}
			reply := fmt.Sprintf("GUEST-REPLY %s rc=%d %s\n", c.id, rc, text)
			if _, err := io.WriteString(stdin, reply); err != nil {
				r.logf("vm: cannot answer the guest: %v", err)
			}
		}
	}()

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		br := bufio.NewReader(pr)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				line = ansiRE.ReplaceAllString(strings.ReplaceAll(line, "\r", ""), "")
				consoleFile.WriteString(line)
				mu.Lock()
				console.WriteString(line)
				mu.Unlock()
				if l := strings.TrimSpace(line); strings.HasPrefix(l, "GUEST") {
					at := time.Since(started)
					mu.Lock()
					res.Markers = append(res.Markers, Marker{At: at, Line: l})
					mu.Unlock()
					r.logf("%6.2fs %s", at.Seconds(), l)
					if m := markerRE.FindStringSubmatch(l); m != nil {
						switch f := strings.Fields(m[2]); m[1] {
						case "CALL": // GUEST-CALL ID WORDS...
							if len(f) > 0 {
								calls <- call{id: f[0], words: f[1:]}
							}
						case "RESTART-SERVER": // GUEST-RESTART-SERVER [TERM|KILL], unanswered
							calls <- call{words: append([]string{"restart-server"}, f...)}
						}
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()

	waitErr := cmd.Wait()
	elapsed := time.Since(started)
	select {
	case <-readerDone:
	case <-time.After(5 * time.Second):
	}
	cancel() // ends a call still being answered
	go func() {
		<-readerDone
		close(calls)
	}()
	select {
	case <-callsDone:
	case <-time.After(90 * time.Second):
		r.logf("vm: a guest call is still being answered after the guest stopped")
	}
	stdin.Close()

	mu.Lock()
	defer mu.Unlock()
	res.Elapsed = elapsed
	res.Console = console.String()
	if rctx.Err() == context.DeadlineExceeded && ctx.Err() == nil && !strings.Contains(res.Console, "GUEST-DONE") {
		res.TimedOut = true
	}
	parseMarkers(res)
	r.logf("vm: guest stopped after %v (boot %v)", elapsed.Round(time.Millisecond), res.Boot.Round(time.Millisecond))
	if waitErr != nil && !res.TimedOut && !res.Done && ctx.Err() == nil {
		res.errs = append(res.errs, "qemu: "+waitErr.Error())
	}
	return nil
}

// answer handles one call from the guest and returns the status and the one-line text of
// its answer.
func (r *runner) answer(ctx context.Context, words []string, res *Result, mu *sync.Mutex) (int, string) {
	reply := func(text string, err error) (int, string) {
		rc := 0
		if err != nil {
			rc, text = 1, err.Error()
		}
		text = strings.Join(strings.Fields(text), " ") // one line, no \r
		if len(text) > 3000 {                          // the guest's tty takes 4095 a line
			text = text[:3000]
		}
		return rc, text
	}
	if len(words) == 0 {
		return reply("", errors.New("empty call"))
	}
	if words[0] == "restart-server" {
		sig, name := syscall.SIGTERM, "TERM"
		if len(words) > 1 && words[1] == "KILL" {
			sig, name = syscall.SIGKILL, "KILL"
		}
		r.logf("vm: restarting the server (SIG%s)", name)
		t0 := time.Now()
		code, err := r.srv.restart(ctx, sig)
		rs := Restart{Signal: name, ExitCode: code, Down: time.Since(t0), Err: err}
		mu.Lock()
		res.Restarts = append(res.Restarts, rs)
		mu.Unlock()
		if err != nil {
			r.logf("vm: restart failed: %v", err)
			return reply("", err)
		}
		r.logf("vm: server back after %v (the old one exited %d)", rs.Down.Round(time.Millisecond), code)
		return reply("restarted", nil)
	}
	if r.o.OnCall == nil {
		return reply("", fmt.Errorf("no Options.OnCall to answer %q", strings.Join(words, " ")))
	}
	return reply(r.o.OnCall(ctx, words))
}

// server is the file server process inside the namespace.
type server struct {
	ns    string
	cmd   Command
	addrs []string // host:port that must accept connections
	log   *os.File
	logf  func(string, ...any)
	died  func(error) // called when it exits without being stopped

	mu   sync.Mutex
	proc *proc
}

type proc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	err      error       // Wait's result, set before done closes
	stopping atomic.Bool // exit expected
}

func (s *server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(ctx)
}

func (s *server) startLocked(ctx context.Context) error {
	ipPath, err := lookPath("ip")
	if err != nil {
		return err
	}
	c := exec.Command(ipPath, append([]string{"netns", "exec", s.ns}, s.cmd.Argv...)...)
	// The test's own ASOF_* variables are not the server's: asof refuses
	// unknown ones.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ASOF_") {
			c.Env = append(c.Env, kv)
		}
	}
	c.Env = append(c.Env, s.cmd.Env...)
	c.Dir = s.cmd.Dir
	c.Stdout, c.Stderr = s.log, s.log
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		return fmt.Errorf("starting the server %q: %w", s.cmd.Argv, err)
	}
	p := &proc{cmd: c, done: make(chan struct{})}
	s.proc = p
	go func() {
		p.err = c.Wait()
		if !p.stopping.Load() && s.died != nil {
			s.logf("vm: the server exited on its own: %v", p.err)
			s.died(p.err)
		}
		close(p.done)
	}()
	return s.waitReady(ctx, p)
}

func (s *server) waitReady(ctx context.Context, p *proc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("the server exited before accepting connections: %v", p.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		var notYet error
		for _, a := range s.addrs {
			if err := dialInNetns(s.ns, a, time.Second); err != nil {
				notYet = err
				break
			}
		}
		if notYet == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server does not accept connections after 30s: %v", notYet)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop signals the server and waits up to grace for it to exit (then kills it). It returns
// the exit status, -1 when a signal ended it or nothing ran.
func (s *server) stop(sig syscall.Signal, grace time.Duration) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(sig, grace)
}

func (s *server) stopLocked(sig syscall.Signal, grace time.Duration) (int, error) {
	p := s.proc
	if p == nil {
		return -1, nil
	}
	s.proc = nil
	p.stopping.Store(true)
	var err error
	select {
	case <-p.done:
		err = fmt.Errorf("it had already exited: %v", p.err)
	default:
		p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			err = fmt.Errorf("still running %v after SIG%s; killed", grace, unix.SignalName(sig)[3:])
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.cmd.ProcessState.ExitCode(), err
}

func (s *server) restart(ctx context.Context, sig syscall.Signal) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	code, err := s.stopLocked(sig, 30*time.Second)
	fmt.Fprintf(s.log, "=== vm: server stopped with SIG%s, exit status %d; starting it again ===\n",
		unix.SignalName(sig)[3:], code)
	if err != nil {
		return code, err
	}
	return code, s.startLocked(ctx)
}

// dialInNetns connects to addr from inside network namespace ns, without a subprocess: a
// locked OS thread enters the namespace for the socket() call and comes back.
func dialInNetns(ns, addr string, timeout time.Duration) error {
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		conn, dialErr := net.DialTimeout("tcp", addr, timeout)
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread ends with this goroutine instead of running others
			// in the wrong namespace.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		if conn != nil {
			conn.Close()
		}
		errc <- dialErr
	}()
	return <-errc
}
