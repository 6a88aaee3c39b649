package nfs_test

// A thin NFSv3 protocol client for the tests, on github.com/willscott/go-nfs-client: its
// MOUNT and RPC transport, and the few procedures the tests need spelled out by hand so
// that they can be called with any handle (a kept one, a forged one) and return the raw
// NFS status instead of an error string.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
	"github.com/willscott/go-nfs-client/nfs/xdr"
)

// NFSv3 procedures and statuses (RFC 1813).
const (
	procGetattr = 1
	procSetattr = 2
	procLookup  = 3
	procRead    = 6
	procWrite   = 7
	procCreate  = 8
	procMkdir   = 9
	procRemove  = 12
	procRmdir   = 13
	procRename  = 14
	procLink    = 15
	procReaddir = 16

	nfsOK          = 0
	errNoEnt       = 2
	errInval       = 22
	errROFS        = 30
	errNameTooLong = 63
	errNotEmpty    = 66
	errStale       = 70
	errBadHandle   = 10001
)

var statusNames = map[uint32]string{
	0: "NFS3_OK", 1: "NFS3ERR_PERM", 2: "NFS3ERR_NOENT", 5: "NFS3ERR_IO", 13: "NFS3ERR_ACCES",
	17: "NFS3ERR_EXIST", 18: "NFS3ERR_XDEV", 20: "NFS3ERR_NOTDIR", 21: "NFS3ERR_ISDIR",
	22: "NFS3ERR_INVAL", 30: "NFS3ERR_ROFS", 63: "NFS3ERR_NAMETOOLONG", 66: "NFS3ERR_NOTEMPTY",
	70: "NFS3ERR_STALE", 10001: "NFS3ERR_BADHANDLE", 10004: "NFS3ERR_NOTSUPP",
	10006: "NFS3ERR_SERVERFAULT", errNoReply: "no reply",
}

func statusName(s uint32) string {
	if n, ok := statusNames[s]; ok {
		return fmt.Sprintf("%s(%d)", n, s)
	}
	return fmt.Sprintf("status %d", s)
}

// proto is one TCP connection to the server, mounted at "/".
type proto struct {
	t     testing.TB
	addr  string
	c     *rpc.Client
	auth  rpc.Auth
	tgt   *nfsc.Target
	root  []byte       // the handle of the mounted root
	stuck *atomic.Bool // a call got no reply: do not Close (see closeClient)
	// onHang, when set, runs before a call that got no reply fails the test (say, to
	// ask the server for a goroutine dump)
	onHang func()
	// soft: a call that gets no reply returns errNoReply instead of failing the test (for
	// calls made off the test's goroutine)
	soft bool
}

// errNoReply is the status call returns, with soft set, when the server did not answer.
const errNoReply = 0xffffffff

// closeClient closes c unless a call on it is still unanswered: go-nfs-client's
// disconnect closes the reply channels it still holds and its receive loop disconnects
// again when the socket closes, which panics (close of closed channel) when a call was
// pending.
func closeClient(c *rpc.Client, stuck *atomic.Bool) func() {
	return func() {
		if !stuck.Load() {
			c.Close()
		}
	}
}

// dialProto connects and mounts export (usually "/"): MOUNT and NFS share the port.
func dialProto(t testing.TB, addr, export string) *proto {
	t.Helper()
	p, err := tryDialProto(t, addr, export)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tryDialProto(t testing.TB, addr, export string) (*proto, error) {
	c, err := dialRPC(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	stuck := new(atomic.Bool)
	t.Cleanup(closeClient(c, stuck))
	auth := rpc.NewAuthUnix("asof-test", 0, 0).Auth()
	m := &nfsc.Mount{Client: c}
	type mounted struct {
		tgt *nfsc.Target
		err error
	}
	ch := make(chan mounted, 1)
	go func() {
		tgt, err := m.Mount(export, auth)
		ch <- mounted{tgt, err}
	}()
	var mr mounted
	select {
	case mr = <-ch:
	case <-time.After(30 * time.Second):
		stuck.Store(true)
		return nil, fmt.Errorf("MOUNT %s: no answer in 30 s", export)
	}
	if mr.err != nil {
		return nil, fmt.Errorf("MOUNT %s: %w", export, mr.err)
	}
	tgt := mr.tgt
	p := &proto{t: t, addr: addr, c: c, auth: auth, tgt: tgt, stuck: stuck}
	// go-nfs-client keeps the MOUNT handle to itself: LOOKUP "." in it gives it back
	_, root, err := tgt.Lookup(".")
	if err != nil {
		return nil, fmt.Errorf("LOOKUP . of the mounted root: %w", err)
	}
	p.root = root
	return p, nil
}

// dialRPC connects go-nfs-client's RPC client, which binds a random local port of its own
// choosing and fails when that port is taken (say, by an earlier connection in TIME_WAIT):
// it tries again.
func dialRPC(addr string) (*rpc.Client, error) {
	for try := 0; ; try++ {
		c, err := rpc.DialTCP("tcp", addr, false)
		if err == nil || try == 20 || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
	}
}

// redial is a fresh connection without MOUNT: what a client that kept its handles does
// after the server came back.
func (p *proto) redial() *proto {
	p.t.Helper()
	c, err := dialRPC(p.addr)
	if err != nil {
		p.t.Fatalf("dial %s: %v", p.addr, err)
	}
	stuck := new(atomic.Bool)
	p.t.Cleanup(closeClient(c, stuck))
	return &proto{t: p.t, addr: p.addr, c: c, auth: p.auth, root: p.root, stuck: stuck}
}

func (p *proto) hdr(proc uint32) rpc.Header {
	return rpc.Header{Rpcvers: 2, Prog: nfsc.Nfs3Prog, Vers: nfsc.Nfs3Vers, Proc: proc, Cred: p.auth, Verf: rpc.AuthNull}
}

// call sends one call and returns the NFS status and the rest of the reply. An RPC-level
// failure (no reply, GARBAGE_ARGS, ...) fails the test.
func (p *proto) call(args any) (uint32, io.ReadSeeker) {
	p.t.Helper()
	type result struct {
		r   io.ReadSeeker
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := p.c.Call(args)
		ch <- result{r, err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-time.After(30 * time.Second):
		p.stuck.Store(true)
		if p.soft {
			return errNoReply, nil
		}
		if p.onHang != nil {
			p.onHang()
		}
		p.t.Fatalf("NFS call %T: no reply in 30 s", args)
	}
	if res.err != nil {
		if p.soft {
			return errNoReply, nil
		}
		p.t.Fatalf("NFS call %T: %v", args, res.err)
	}
	st, err := xdr.ReadUint32(res.r)
	if err != nil {
		p.t.Fatalf("NFS call %T: reading the status: %v", args, err)
	}
	return st, res.r
}

func (p *proto) getattr(fh []byte) (uint32, *nfsc.Fattr) {
	p.t.Helper()
	st, r := p.call(&struct {
		rpc.Header
		FH []byte
	}{p.hdr(procGetattr), fh})
	if st != nfsOK {
		return st, nil
	}
	var a nfsc.Fattr
	if err := xdr.Read(r, &a); err != nil {
		p.t.Fatalf("GETATTR reply: %v", err)
	}
	return st, &a
}

func (p *proto) lookupFH(dir []byte, name string) (uint32, []byte, *nfsc.Fattr) {
	p.t.Helper()
	if dir == nil {
		dir = p.root
	}
	st, r := p.call(&struct {
		rpc.Header
		What nfsc.Diropargs3
	}{p.hdr(procLookup), nfsc.Diropargs3{FH: dir, Filename: name}})
	if st != nfsOK {
		return st, nil, nil
	}
	var ok struct {
		FH      []byte
		Attr    nfsc.PostOpAttr
		DirAttr nfsc.PostOpAttr
	}
	if err := xdr.Read(r, &ok); err != nil {
		p.t.Fatalf("LOOKUP reply: %v", err)
	}
	var a *nfsc.Fattr
	if ok.Attr.IsSet {
		a = &ok.Attr.Attr
	}
	return st, ok.FH, a
}

// lookup resolves a slash-separated path from the root and fails the test on an error.
func (p *proto) lookup(path string) []byte {
	p.t.Helper()
	fh := p.root
	for _, name := range bytes.Split([]byte(path), []byte("/")) {
		if len(name) == 0 {
			continue
		}
		st, next, _ := p.lookupFH(fh, string(name))
		if st != nfsOK {
			p.t.Fatalf("LOOKUP %q in %s: %s", name, path, statusName(st))
		}
		fh = next
	}
	return fh
}

// read reads count bytes at off.
func (p *proto) read(fh []byte, off uint64, count uint32) (uint32, []byte, bool) {
	p.t.Helper()
	st, r := p.call(&struct {
		rpc.Header
		FH     []byte
		Offset uint64
		Count  uint32
	}{p.hdr(procRead), fh, off, count})
	if st != nfsOK {
		return st, nil, false
	}
	var ok struct {
		Attr  nfsc.PostOpAttr
		Count uint32
		EOF   uint32
		Data  []byte
	}
	if err := xdr.Read(r, &ok); err != nil {
		p.t.Fatalf("READ reply: %v", err)
	}
	return st, ok.Data, ok.EOF != 0
}

// readAll reads a whole (small) file.
func (p *proto) readAll(fh []byte) (uint32, []byte) {
	p.t.Helper()
	var out []byte
	for {
		st, b, eof := p.read(fh, uint64(len(out)), 1<<16)
		if st != nfsOK {
			return st, nil
		}
		out = append(out, b...)
		if eof || len(b) == 0 {
			return st, out
		}
	}
}

// write writes data at off, FILE_SYNC.
func (p *proto) write(fh []byte, off uint64, data []byte) uint32 {
	p.t.Helper()
	st, _ := p.call(&struct {
		rpc.Header
		FH     []byte
		Offset uint64
		Count  uint32
		How    uint32
		Data   []byte
	}{p.hdr(procWrite), fh, off, uint32(len(data)), 2, data})
	return st
}

// create makes a regular file (UNCHECKED, mode 0644) and returns its handle.
func (p *proto) create(dir []byte, name string) (uint32, []byte) {
	p.t.Helper()
	st, r := p.call(&struct {
		rpc.Header
		Where nfsc.Diropargs3
		How   uint32
		Attr  nfsc.Sattr3
	}{p.hdr(procCreate), nfsc.Diropargs3{FH: dir, Filename: name}, 0,
		nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: 0o644}}})
	if st != nfsOK {
		return st, nil
	}
	var ok struct{ FH nfsc.PostOpFH3 }
	if err := xdr.Read(r, &ok); err != nil {
		p.t.Fatalf("CREATE reply: %v", err)
	}
	if !ok.FH.IsSet {
		p.t.Fatalf("CREATE %s: no handle in the reply", name)
	}
	return st, ok.FH.FH
}

func (p *proto) mkdir(dir []byte, name string) (uint32, []byte) {
	p.t.Helper()
	st, r := p.call(&struct {
		rpc.Header
		Where nfsc.Diropargs3
		Attr  nfsc.Sattr3
	}{p.hdr(procMkdir), nfsc.Diropargs3{FH: dir, Filename: name},
		nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: 0o755}}})
	if st != nfsOK {
		return st, nil
	}
	var ok struct{ FH nfsc.PostOpFH3 }
	if err := xdr.Read(r, &ok); err != nil {
		p.t.Fatalf("MKDIR reply: %v", err)
	}
	return st, ok.FH.FH
}

func (p *proto) rename(fromDir []byte, from string, toDir []byte, to string) uint32 {
	p.t.Helper()
	st, _ := p.call(&struct {
		rpc.Header
		From nfsc.Diropargs3
		To   nfsc.Diropargs3
	}{p.hdr(procRename), nfsc.Diropargs3{FH: fromDir, Filename: from}, nfsc.Diropargs3{FH: toDir, Filename: to}})
	return st
}

func (p *proto) remove(dir []byte, name string, rmdir bool) uint32 {
	p.t.Helper()
	proc := uint32(procRemove)
	if rmdir {
		proc = procRmdir
	}
	st, _ := p.call(&struct {
		rpc.Header
		What nfsc.Diropargs3
	}{p.hdr(proc), nfsc.Diropargs3{FH: dir, Filename: name}})
	return st
}

// setattrMode changes the mode (no guard).
func (p *proto) setattrMode(fh []byte, mode uint32) uint32 {
	p.t.Helper()
	st, _ := p.call(&struct {
		rpc.Header
		FH    []byte
		Attr  nfsc.Sattr3
		Guard uint32
	}{p.hdr(procSetattr), fh, nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: mode}}, 0})
	return st
}

// link makes a hard link (RFC 1813 LINK3args: the file, then the directory and name).
func (p *proto) link(file, dir []byte, name string) uint32 {
	p.t.Helper()
	st, _ := p.call(&struct {
		rpc.Header
		File []byte
		Link nfsc.Diropargs3
	}{p.hdr(procLink), file, nfsc.Diropargs3{FH: dir, Filename: name}})
	return st
}

// readdir lists a directory with READDIR, following cookies, and returns the names
// (without "." and "..").
func (p *proto) readdir(dir []byte) (uint32, []string) {
	p.t.Helper()
	var names []string
	cookie := uint64(0)
	var verf [8]byte
	for round := 0; ; round++ {
		if round > 100000 {
			p.t.Fatal("READDIR: no end after 100000 replies")
		}
		st, r := p.call(&struct {
			rpc.Header
			FH     []byte
			Cookie uint64
			Verf   [8]byte
			Count  uint32
		}{p.hdr(procReaddir), dir, cookie, verf, 8192})
		if st != nfsOK {
			return st, names
		}
		var attr nfsc.PostOpAttr
		if err := xdr.Read(r, &attr); err != nil {
			p.t.Fatalf("READDIR reply: %v", err)
		}
		if _, err := io.ReadFull(r, verf[:]); err != nil {
			p.t.Fatalf("READDIR reply: %v", err)
		}
		for {
			follows, err := xdr.ReadUint32(r)
			if err != nil {
				p.t.Fatalf("READDIR reply: %v", err)
			}
			if follows == 0 {
				break
			}
			var e struct {
				FileID uint64
				Name   string
				Cookie uint64
			}
			if err := xdr.Read(r, &e); err != nil {
				p.t.Fatalf("READDIR entry: %v", err)
			}
			if e.Name != "." && e.Name != ".." {
				names = append(names, e.Name)
			}
			cookie = e.Cookie
		}
		eof, err := xdr.ReadUint32(r)
		if err != nil {
			p.t.Fatalf("READDIR reply: %v", err)
		}
		if eof != 0 {
			return nfsOK, names
		}
	}
}

// as is p with another credential on the same connection: every call it makes carries
// auth (see authSys; rpc.AuthNull is AUTH_NONE).
func (p *proto) as(auth rpc.Auth) *proto {
	q := *p
	q.auth = auth
	return &q
}

// authSys is an AUTH_SYS credential (RFC 5531 authsys_parms) for uid, gid and the
// supplementary groups. go-nfs-client's NewAuthUnix always sends the one group 0.
func authSys(uid, gid uint32, groups ...uint32) rpc.Auth {
	var b bytes.Buffer
	u32 := func(v uint32) { binary.Write(&b, binary.BigEndian, v) }
	u32(0) // stamp
	name := "asof-test"
	u32(uint32(len(name)))
	b.WriteString(name)
	b.Write(make([]byte, (4-len(name)%4)%4))
	u32(uid)
	u32(gid)
	u32(uint32(len(groups)))
	for _, g := range groups {
		u32(g)
	}
	return rpc.Auth{Flavor: 1, Body: b.Bytes()}
}

// setattrOwner changes the owner and/or group (nil leaves it), as chown(2) does.
func (p *proto) setattrOwner(fh []byte, uid, gid *uint32) uint32 {
	p.t.Helper()
	var a nfsc.Sattr3
	if uid != nil {
		a.UID = nfsc.SetUID{SetIt: true, UID: *uid}
	}
	if gid != nil {
		a.GID = nfsc.SetUID{SetIt: true, UID: *gid}
	}
	st, _ := p.call(&struct {
		rpc.Header
		FH    []byte
		Attr  nfsc.Sattr3
		Guard uint32
	}{p.hdr(procSetattr), fh, a, 0})
	return st
}

// rpcDenied sends one NFSv3 GETATTR of fh with credential cred on a connection of its own,
// with hand-written framing (go-nfs-client turns a denied call into an error string), and
// returns the reply's reject_stat and, for AUTH_ERROR, its auth_stat; ok is false when
// the call was accepted.
func rpcDenied(t *testing.T, addr string, cred rpc.Auth, fh []byte) (rejectStat, authStat uint32, ok bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b bytes.Buffer
	u32 := func(v uint32) { binary.Write(&b, binary.BigEndian, v) }
	opaque := func(o []byte) {
		u32(uint32(len(o)))
		b.Write(o)
		b.Write(make([]byte, (4-len(o)%4)%4))
	}
	u32(0x61736f66) // xid
	u32(0)          // CALL
	u32(2)          // RPC version
	u32(nfsc.Nfs3Prog)
	u32(nfsc.Nfs3Vers)
	u32(procGetattr)
	u32(cred.Flavor)
	opaque(cred.Body)
	u32(0) // verifier: AUTH_NONE
	opaque(nil)
	opaque(fh)
	msg := b.Bytes()
	rec := binary.BigEndian.AppendUint32(nil, 1<<31|uint32(len(msg)))
	if _, err := conn.Write(append(rec, msg...)); err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	reply := make([]byte, binary.BigEndian.Uint32(hdr[:])&^(1<<31))
	if _, err := io.ReadFull(conn, reply); err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	word := func(i int) uint32 {
		if len(reply) < 4*(i+1) {
			t.Fatalf("reply too short: %x", reply)
		}
		return binary.BigEndian.Uint32(reply[4*i:])
	}
	if word(0) != 0x61736f66 || word(1) != 1 {
		t.Fatalf("not a reply to the call: %x", reply)
	}
	if word(2) == 0 { // MSG_ACCEPTED
		return 0, 0, false
	}
	if word(3) == 1 { // AUTH_ERROR
		return 1, word(4), true
	}
	return word(3), 0, true
}
