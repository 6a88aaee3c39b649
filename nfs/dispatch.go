package nfs

import (
	"encoding/binary"
	"errors"
	"runtime/debug"
	"sync/atomic"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/nfs/sunrpc"
)

// The programs served on one port, and their procedures (RFC 1813).
const (
	progNFS   = 100003
	progMount = 100005

	procNull        = uint32(gonfs.NFSProcedureNull)
	procGetattr     = uint32(gonfs.NFSProcedureGetAttr)
	procSetattr     = uint32(gonfs.NFSProcedureSetAttr)
	procLookup      = uint32(gonfs.NFSProcedureLookup)
	procAccess      = uint32(gonfs.NFSProcedureAccess)
	procReadlink    = uint32(gonfs.NFSProcedureReadlink)
	procRead        = uint32(gonfs.NFSProcedureRead)
	procWrite       = uint32(gonfs.NFSProcedureWrite)
	procCreate      = uint32(gonfs.NFSProcedureCreate)
	procMkdir       = uint32(gonfs.NFSProcedureMkDir)
	procSymlink     = uint32(gonfs.NFSProcedureSymlink)
	procMknod       = uint32(gonfs.NFSProcedureMkNod)
	procRemove      = uint32(gonfs.NFSProcedureRemove)
	procRmdir       = uint32(gonfs.NFSProcedureRmDir)
	procRename      = uint32(gonfs.NFSProcedureRename)
	procLink        = uint32(gonfs.NFSProcedureLink)
	procReaddir     = uint32(gonfs.NFSProcedureReadDir)
	procReaddirPlus = uint32(gonfs.NFSProcedureReadDirPlus)
	procFsstat      = uint32(gonfs.NFSProcedureFSStat)
	procFsinfo      = uint32(gonfs.NFSProcedureFSInfo)
	procPathconf    = uint32(gonfs.NFSProcedurePathConf)
	procCommit      = uint32(gonfs.NFSProcedureCommit)

	mountProcNull    = uint32(gonfs.MountProcNull)
	mountProcMnt     = uint32(gonfs.MountProcMount)
	mountProcDump    = uint32(gonfs.MountProcDump)
	mountProcUmnt    = uint32(gonfs.MountProcUmnt)
	mountProcUmntAll = uint32(gonfs.MountProcUmntAll)
	mountProcExport  = uint32(gonfs.MountProcExport)
)

type procKey struct{ prog, proc uint32 }

// procFunc answers a call acting as cred by appending the results of its
// reply to w, which holds the reply's header already (READ puts file data
// after it, in c.Tail); an error means the arguments did not decode
// (GARBAGE_ARGS).
type procFunc func(h *handler, c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error

// A procedure is a table entry: its name is its metrics label.
type procedure struct {
	name string
	fn   procFunc
}

// procedures is the one dispatch table, NFSv3 and MOUNTv3 alike.
var procedures = map[procKey]procedure{
	{progNFS, procNull}:        {"null", (*handler).null},
	{progNFS, procGetattr}:     {"getattr", (*handler).getattr},
	{progNFS, procSetattr}:     {"setattr", (*handler).setattr},
	{progNFS, procLookup}:      {"lookup", (*handler).lookup},
	{progNFS, procAccess}:      {"access", (*handler).access},
	{progNFS, procReadlink}:    {"readlink", (*handler).readlink},
	{progNFS, procRead}:        {"read", (*handler).read},
	{progNFS, procWrite}:       {"write", (*handler).write},
	{progNFS, procCreate}:      {"create", (*handler).create},
	{progNFS, procMkdir}:       {"mkdir", (*handler).mkdir},
	{progNFS, procSymlink}:     {"symlink", (*handler).symlink},
	{progNFS, procMknod}:       {"mknod", (*handler).mknod},
	{progNFS, procRemove}:      {"remove", (*handler).remove},
	{progNFS, procRmdir}:       {"rmdir", (*handler).remove},
	{progNFS, procRename}:      {"rename", (*handler).rename},
	{progNFS, procLink}:        {"link", (*handler).link},
	{progNFS, procReaddir}:     {"readdir", (*handler).readdir},
	{progNFS, procReaddirPlus}: {"readdirplus", (*handler).readdir},
	{progNFS, procFsstat}:      {"fsstat", (*handler).fsstat},
	{progNFS, procFsinfo}:      {"fsinfo", (*handler).fsinfo},
	{progNFS, procPathconf}:    {"pathconf", (*handler).pathconf},
	{progNFS, procCommit}:      {"commit", (*handler).commit},

	{progMount, mountProcNull}:    {"mount_null", (*handler).null},
	{progMount, mountProcMnt}:     {"mount", (*handler).mnt},
	{progMount, mountProcDump}:    {"mount_dump", (*handler).dump},
	{progMount, mountProcUmnt}:    {"umount", (*handler).umnt},
	{progMount, mountProcUmntAll}: {"umountall", (*handler).null},
	{progMount, mountProcExport}:  {"export", (*handler).exports},
}

// lookupProc finds what answers a call, and its metrics label: "other"
// for every call outside the table, not one label per number a client
// makes up.
//
// Calls of other versions and programs: NFS of another version than 3 gets
// PROG_MISMATCH (3 to 3), which tells a client that asks for version 4
// first (mount.nfs without vers=3) that only version 3 is served. MOUNT v1
// and v2 are answered as v3 (the same formats; showmount asks with v1),
// except MNT, whose v1 reply differs and is followed by NFSv2. Programs
// other than NFS and MOUNT (NFS_ACL, which the Linux client probes at every
// mount; NLM) get PROG_UNAVAIL.
func lookupProc(c *sunrpc.Call) (procFunc, string) {
	switch {
	case c.Prog != progNFS && c.Prog != progMount:
		return progUnavail, "other"
	case c.Prog == progNFS && c.Vers != 3,
		c.Prog == progMount && (c.Vers < 1 || c.Vers > 3),
		c.Prog == progMount && c.Vers != 3 && c.Proc == mountProcMnt:
		return progMismatch, "other"
	}
	p, ok := procedures[procKey{c.Prog, c.Proc}]
	switch {
	case !ok:
		return procUnavail, "other"
	case c.Vers != 3:
		return p.fn, "other"
	}
	return p.fn, p.name
}

func progMismatch(h *handler, c *sunrpc.Call, _ fs.Cred, w *xdrWriter) error {
	h.log.Debug("nfs: program version not served", "prog", c.Prog, "vers", c.Vers, "proc", c.Proc, "client", c.Remote.String())
	w.b = sunrpc.Accept(w.b, sunrpc.ProgMismatch)
	w.u32(3) // lowest version served
	w.u32(3) // highest
	return nil
}

func progUnavail(h *handler, c *sunrpc.Call, _ fs.Cred, w *xdrWriter) error {
	h.log.Debug("nfs: program not served", "prog", c.Prog, "vers", c.Vers, "proc", c.Proc, "client", c.Remote.String())
	w.b = sunrpc.Accept(w.b, sunrpc.ProgUnavail)
	return nil
}

func procUnavail(h *handler, c *sunrpc.Call, _ fs.Cred, w *xdrWriter) error {
	h.log.Debug("nfs: procedure not served", "prog", c.Prog, "vers", c.Vers, "proc", c.Proc, "client", c.Remote.String())
	w.b = sunrpc.Accept(w.b, sunrpc.ProcUnavail)
	return nil
}

// null answers NULL (NFS and MOUNT) and MOUNT's UMNTALL: no arguments, no
// results.
func (h *handler) null(*sunrpc.Call, fs.Cred, *xdrWriter) error { return nil }

// caller is the identity a call acts as, by its credential: AUTH_SYS's
// uid, gid and groups, trusted as knfsd trusts them, under the export's
// squash rule (fs.Caller); AUTH_NONE is the anonymous identity. Any other
// flavour is refused (why is the auth_stat, 0 for none).
func (h *handler) caller(c *sunrpc.Call) (cred fs.Cred, why uint32) {
	switch c.Flavor {
	case sunrpc.AuthSys:
		u, err := c.Unix()
		if err != nil {
			return fs.Cred{}, sunrpc.AuthBadCred
		}
		return h.f.Caller(u.Uid, u.Gid, u.Groups()), 0
	case sunrpc.AuthNone:
		return h.f.Anonymous(), 0
	}
	return fs.Cred{}, sunrpc.AuthTooWeak
}

// testHook, when set (by tests), runs before a call's procedure.
var testHook atomic.Pointer[func(c *sunrpc.Call)]

var (
	errPanicked  = errors.New("nfs: the procedure panicked")
	errDenied    = errors.New("rpc call denied")
	errRPCFailed = errors.New("rpc call not accepted")
	errNFSStatus = errors.New("nfs error status")
)

// Answer is the dispatch: it checks the call's credential, runs its
// procedure and records the call's metrics, once.
func (h *handler) Answer(c *sunrpc.Call, reply []byte) ([]byte, error) {
	w := &xdrWriter{b: reply, fsid: h.f.Fsid()}
	fn, op := lookupProc(c)
	cred, why := h.caller(c)
	var err error
	if why != 0 {
		h.log.Debug("nfs: credential refused", "flavor", c.Flavor, "auth_stat", why, "client", c.Remote.String())
		w.b = sunrpc.DenyAuth(w.b, why)
		err = errDenied
	} else {
		err = h.call(fn, c, cred, w)
	}
	switch {
	case err == nil, err == errDenied:
	case err == sunrpc.ErrWouldBlock:
		return nil, err
	case err == errPanicked:
		w.b = sunrpc.Accept(w.b, sunrpc.SystemErr)
	default:
		h.log.Debug("nfs: garbage arguments", "prog", c.Prog, "proc", c.Proc, "client", c.Remote.String(), "err", err)
		w.b = sunrpc.Accept(w.b, sunrpc.GarbageArgs)
	}
	if err != nil && c.Tail != nil {
		c.Tail.Release()
		c.Tail = nil
	}
	h.observer.Request("nfs", op, c.Start, outcome(c, w.b, err))
	return w.b, nil
}

// call runs a call's procedure. A panic in it is a bug, and the call's
// failure rather than the server's: it is logged with its stack and the
// call answered SYSTEM_ERR (the client sees an I/O error), where it would
// otherwise end the server.
func (h *handler) call(fn procFunc, c *sunrpc.Call, cred fs.Cred, w *xdrWriter) (err error) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("nfs: a call failed on a bug in the server; answered SYSTEM_ERR",
				"prog", c.Prog, "proc", c.Proc, "panic", r, "stack", string(debug.Stack()))
			err = errPanicked
		}
	}()
	if hook := testHook.Load(); hook != nil {
		(*hook)(c)
	}
	return fn(h, c, cred, w)
}

// outcome is a reply's outcome for the metrics: NFS results, and MOUNT's
// MNT result, start with their status.
func outcome(c *sunrpc.Call, reply []byte, err error) error {
	switch {
	case err != nil:
		return err
	case binary.BigEndian.Uint32(reply[sunrpc.HeaderLen-4:]) != sunrpc.Success:
		return errRPCFailed
	case len(reply) >= sunrpc.HeaderLen+4 && (c.Prog == progNFS || c.Prog == progMount && c.Proc == mountProcMnt) &&
		binary.BigEndian.Uint32(reply[sunrpc.HeaderLen:]) != nfsOK:
		return errNFSStatus
	}
	return nil
}

// Schedule tells where a call is answered (sunrpc.Batch, the reader
// goroutine, unless said otherwise):
//
//   - a call that waits for an fsync (a change) goes to a goroutine of its
//     own when more calls wait, so that changes in flight together share
//     one fsync (group commit); alone it is answered inline;
//   - stable and large WRITEs and COMMIT always go to a goroutine: they
//     may wait long for the engine, and copying a large WRITE is better
//     spread over the cores;
//   - a large READ goes to a goroutine when more calls wait: checking its
//     blocks (CRC-32C over every byte) is better spread over the cores;
//     so do the calls after a READ that needed the disk (DiskBound).
//
// An UNSTABLE WRITE may wait for a commit when too much is buffered, and
// the connection with it: the writer is held back either way.
func (h *handler) Schedule(c *sunrpc.Call, b sunrpc.Backlog) sunrpc.Mode {
	switch {
	case mayWait(c) || syncs(c) && b.Waiting():
		return sunrpc.Spawn
	case syncs(c):
		return sunrpc.Inline
	case b.More && (b.DiskBound || largeRead(c)):
		return sunrpc.Spawn
	}
	return sunrpc.Batch
}

// largeReadMin is the smallest READ that largeRead tells.
const largeReadMin = 128 << 10

// inlineWriteMax is the largest UNSTABLE WRITE the reader answers itself.
const inlineWriteMax = 64 << 10

func nfs3(c *sunrpc.Call) bool { return c.Prog == progNFS && c.Vers == 3 }

// mayWait tells the calls that go to a goroutine of their own whatever
// else waits.
func mayWait(c *sunrpc.Call) bool {
	if !nfs3(c) {
		return false
	}
	switch c.Proc {
	case procCommit:
		return true
	case procWrite:
		count, stable := writeArgsOf(c)
		return stable != stableUnstable || count > inlineWriteMax
	}
	return false
}

// largeRead tells a READ large enough to be worth a goroutine.
func largeRead(c *sunrpc.Call) bool {
	if !nfs3(c) || c.Proc != procRead {
		return false
	}
	count, r := ioArgs(c)
	return count >= largeReadMin && r.err == nil
}

// syncs tells the calls that make their change durable before replying.
func syncs(c *sunrpc.Call) bool {
	if !nfs3(c) {
		return false
	}
	switch c.Proc {
	case procSetattr, procCreate, procMkdir, procSymlink, procMknod, procRemove, procRmdir, procRename, procLink:
		return true
	}
	return false
}

// writeArgsOf reads a WRITE's count and stability (FILE_SYNC when the
// arguments do not decode: the procedure itself will say GARBAGE_ARGS).
func writeArgsOf(c *sunrpc.Call) (count, stable uint32) {
	count, r := ioArgs(c)
	stable = r.u32()
	if r.err != nil {
		return 0, stableFileSync
	}
	return count, stable
}

// ioArgs reads the count that READ's and WRITE's arguments both begin
// with (after the handle and offset), and returns the reader past it.
func ioArgs(c *sunrpc.Call) (uint32, *xdrReader) {
	r := &xdrReader{b: c.Args}
	r.handle()
	r.u64() // offset
	return r.u32(), r
}
