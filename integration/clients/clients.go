// Package clients drives the userspace NFSv3 and 9P2000.L clients that Debian ships, so
// asof's tests talk to the server with software nobody on the project wrote:
//
//   - libnfs-utils: nfs-ls, nfs-cat, nfs-cp (libnfs 4.0) — see NFS
//   - diod: diodls, diodcat — see NineP
//
// scripts/test-deps.sh installs both. Every command runs with a timeout, and a failure
// comes back as an *Error carrying the command line, its exit status and its stderr.
package clients

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// DefaultTimeout bounds one client command when the client's Timeout is zero.
var DefaultTimeout = 30 * time.Second

// Error is a client command that failed.
type Error struct {
	Cmd    []string
	Stdout []byte
	Stderr []byte
	Err    error // *exec.ExitError, context.DeadlineExceeded, or a start error
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(string(e.Stderr))
	if msg == "" {
		msg = strings.TrimSpace(string(e.Stdout))
	}
	if msg != "" {
		msg = ": " + msg
	}
	return fmt.Sprintf("%s: %v%s", strings.Join(e.Cmd, " "), e.Err, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// ExitCode is the command's exit status, or -1 when it did not exit by itself.
func (e *Error) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Run runs a program with a timeout (DefaultTimeout when zero) and returns its stdout and
// stderr. A non-zero exit, a timeout or a start failure is an *Error. Programs are also
// looked for in /usr/sbin and /sbin (Debian puts diod's clients in /usr/sbin).
func Run(ctx context.Context, timeout time.Duration, name string, args ...string) (stdout, stderr []byte, err error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	argv := append([]string{name}, args...)
	prog, err := lookPath(name)
	if err != nil {
		return nil, nil, &Error{Cmd: argv, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %v: %w", timeout, ctx.Err())
	}
	if err != nil {
		return out.Bytes(), errb.Bytes(), &Error{Cmd: argv, Stdout: out.Bytes(), Stderr: errb.Bytes(), Err: err}
	}
	return out.Bytes(), errb.Bytes(), nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (run scripts/test-deps.sh)", name)
}

// Need skips t when a client program is missing.
func Need(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

// Available says which client programs are missing, or nil when all are there.
func Available() error {
	var missing []string
	for _, p := range []string{"nfs-ls", "nfs-cat", "nfs-cp", "diodls", "diodcat"} {
		if _, err := lookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("clients: missing %s (run scripts/test-deps.sh)", strings.Join(missing, ", "))
}

// NFSURL is the libnfs URL that reaches path on an NFSv3 server serving MOUNT and NFS on
// one port (as go-nfs, and so asof, does), at addr "host:port". The path is used as is:
//
//   - nfs-ls mounts the whole path as the export: "/" or "/dir".
//   - nfs-cat and nfs-cp take everything before the last '/' as the export and the rest
//     as the file: a file at the root of export "/" is "//file" (two slashes), and
//     "/sub/f" mounts export "/sub" and opens "f" in it, which reaches sub/f only when the
//     server honours the MOUNT path (NFS.FileURL builds these).
//
// libnfs first asks MOUNTPROC3_EXPORT unless the URL says auto-traverse-mounts=0. go-nfs
// does not answer that procedure (asof's interposer does), so the parameter is added
// unless traverse is true, and a URL works against either.
func NFSURL(addr, p string, traverse bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, "2049"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	q := "version=3&nfsport=" + port + "&mountport=" + port
	if !traverse {
		q += "&auto-traverse-mounts=0"
	}
	return "nfs://" + host + p + "?" + q
}

// NFS runs libnfs-utils against one server. Paths are inside the export, from "/".
type NFS struct {
	Addr     string        // host:port serving both MOUNT and NFS
	Traverse bool          // leave libnfs's auto-traverse-mounts on (see NFSURL)
	Timeout  time.Duration // per command; DefaultTimeout when zero

	// As, when set, is the identity libnfs puts in each call's AUTH_SYS credential (the
	// URL's uid= and gid=; libnfs sends no supplementary groups). Otherwise libnfs sends
	// this process's uid and gid: root's, in tests that run as root.
	As *ID
}

// ID is an AUTH_SYS identity.
type ID struct{ UID, GID int }

// URL is NFSURL for this server with p used as is, and the identity of As.
func (c NFS) URL(p string) string {
	u := NFSURL(c.Addr, p, c.Traverse)
	if c.As != nil {
		u += fmt.Sprintf("&uid=%d&gid=%d", c.As.UID, c.As.GID)
	}
	return u
}

// DirURL is the URL nfs-ls needs to list directory dir ("/" for the root).
func (c NFS) DirURL(dir string) string { return c.URL(path.Clean("/" + dir)) }

// FileURL is the URL nfs-cat and nfs-cp need for file: "//name" for a file at the root,
// "/dir/name" (export /dir, see NFSURL) below it.
func (c NFS) FileURL(file string) string {
	file = path.Clean("/" + file)
	if path.Dir(file) == "/" {
		return c.URL("/" + file)
	}
	return c.URL(file)
}

// Ls runs nfs-ls [flags] on dir and returns its output, one entry a line:
// "MODE NLINK UID GID SIZE NAME" (see ParseNFSLs). flags: -R (recursive), -s (summary).
func (c NFS) Ls(ctx context.Context, dir string, flags ...string) (string, error) {
	out, _, err := Run(ctx, c.Timeout, "nfs-ls", append(flags, c.DirURL(dir))...)
	return string(out), err
}

// List is Ls parsed.
func (c NFS) List(ctx context.Context, dir string, flags ...string) ([]Entry, error) {
	out, err := c.Ls(ctx, dir, flags...)
	if err != nil {
		return nil, err
	}
	return ParseNFSLs(out)
}

// Cat returns the content of file (nfs-cat).
func (c NFS) Cat(ctx context.Context, file string) ([]byte, error) {
	out, _, err := Run(ctx, c.Timeout, "nfs-cat", c.FileURL(file))
	return out, err
}

// Put copies local file local to remote (nfs-cp LOCAL URL).
func (c NFS) Put(ctx context.Context, local, remote string) error {
	_, _, err := Run(ctx, c.Timeout, "nfs-cp", local, c.FileURL(remote))
	return err
}

// Get copies remote to local file local (nfs-cp URL LOCAL).
func (c NFS) Get(ctx context.Context, remote, local string) error {
	_, _, err := Run(ctx, c.Timeout, "nfs-cp", c.FileURL(remote), local)
	return err
}

// Write stores data as remote, through a temporary local file and nfs-cp.
func (c NFS) Write(ctx context.Context, remote string, data []byte) error {
	f, err := os.CreateTemp("", "asof-nfs-cp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return c.Put(ctx, f.Name(), remote)
}

// Entry is one line of nfs-ls output.
type Entry struct {
	Mode  string // as printed: "-rw-r--r--", "drwxr-xr-x", "lrwxrwxrwx"
	Links int
	UID   int
	GID   int
	Size  int64
	Name  string // relative to the listed directory; "sub/file" with -R
}

// IsDir reports whether the entry is a directory.
func (e Entry) IsDir() bool { return strings.HasPrefix(e.Mode, "d") }

// ParseNFSLs parses nfs-ls output ("MODE NLINK UID GID SIZE NAME" lines).
func ParseNFSLs(out string) ([]Entry, error) {
	var ents []Entry
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			return ents, fmt.Errorf("nfs-ls: cannot parse %q", line)
		}
		// the name is what follows the fifth field, spaces included
		rest := line
		for i := 0; i < 5; i++ {
			rest = strings.TrimLeft(rest, " \t")
			rest = rest[len(f[i]):]
		}
		e := Entry{Mode: f[0], Name: strings.TrimPrefix(rest, " ")}
		var err1, err2, err3, err4 error
		e.Links, err1 = strconv.Atoi(f[1])
		e.UID, err2 = strconv.Atoi(f[2])
		e.GID, err3 = strconv.Atoi(f[3])
		e.Size, err4 = strconv.ParseInt(f[4], 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return ents, fmt.Errorf("nfs-ls: cannot parse %q: %v", line, err)
		}
		ents = append(ents, e)
	}
	return ents, nil
}

// NineP runs diod's userspace 9P2000.L clients against one server.
//
// These clients send Tauth first and take an Rlerror(ENOSYS) answer as a failure ("error
// authenticating to server: Function not implemented"); a server must answer ENOENT (or
// accept) for them to go on and attach.
type NineP struct {
	Addr    string        // host:port
	Aname   string        // attach name; always passed (diod's own default is "ctl")
	MSize   int           // 0: the clients' default (65536)
	Timeout time.Duration // per command; DefaultTimeout when zero

	// As, when set, is the uid the clients attach as (-u); otherwise they attach as this
	// process's euid. The attach names it in n_uname, with an empty uname.
	As *int
}

func (c NineP) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// run runs a diod client with its own timeout option (whole seconds, so it reports what it
// waited for) and ours a little later as a backstop.
func (c NineP) run(ctx context.Context, prog string, extra ...string) ([]byte, error) {
	if c.Addr == "" {
		return nil, fmt.Errorf("clients: NineP.Addr is empty (is 9P enabled?)")
	}
	t := c.timeout()
	a := []string{"-s", c.Addr, "-a", c.Aname, "-t", strconv.Itoa(int((t + time.Second - 1) / time.Second))}
	if c.MSize > 0 {
		a = append(a, "-m", strconv.Itoa(c.MSize))
	}
	if c.As != nil {
		a = append(a, "-u", strconv.Itoa(*c.As))
	}
	out, _, err := Run(ctx, t+2*time.Second, prog, append(a, extra...)...)
	return out, err
}

// Ls lists the attach root, or the given paths (relative to it), with diodls: one name a
// line, a directory argument's entries under a "dir:" heading when several are given.
func (c NineP) Ls(ctx context.Context, paths ...string) (string, error) {
	out, err := c.run(ctx, "diodls", paths...)
	return string(out), err
}

// LsLong is Ls with stat information (diodls -l): "MODE. NLINK USER GROUP SIZE DATE NAME".
func (c NineP) LsLong(ctx context.Context, paths ...string) (string, error) {
	out, err := c.run(ctx, "diodls", append([]string{"-l"}, paths...)...)
	return string(out), err
}

// Names lists directory dir ("" for the attach root) and returns the entry names, without
// "." and "..".
func (c NineP) Names(ctx context.Context, dir string) ([]string, error) {
	var paths []string
	if dir != "" && dir != "/" && dir != "." {
		paths = []string{strings.TrimPrefix(dir, "/")}
	}
	out, err := c.Ls(ctx, paths...)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && l != "." && l != ".." {
			names = append(names, l)
		}
	}
	return names, nil
}

// Cat returns the concatenated contents of the files (diodcat), paths relative to the
// attach root.
func (c NineP) Cat(ctx context.Context, files ...string) ([]byte, error) {
	rel := make([]string, len(files))
	for i, f := range files {
		rel[i] = strings.TrimPrefix(f, "/")
	}
	return c.run(ctx, "diodcat", rel...)
}
