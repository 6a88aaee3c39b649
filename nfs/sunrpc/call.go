package sunrpc

import (
	"encoding/binary"
	"errors"
	"net"
	"time"

	gonfs "github.com/willscott/go-nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// Accept statuses of an accepted reply (RFC 5531 accept_stat), from
// go-nfs-client's rpc package: go-nfs's own ResponseCode numbers them
// otherwise than the wire does.
const (
	Success      = rpc.Success
	ProgUnavail  = rpc.ProgUnavail
	ProgMismatch = rpc.ProgMismatch
	ProcUnavail  = rpc.ProcUnavail
	GarbageArgs  = rpc.GarbageArgs
	SystemErr    = rpc.SystemErr
)

// Credential flavours and why one is refused (RFC 5531).
const (
	AuthNone = uint32(gonfs.AuthFlavorNull)
	AuthSys  = uint32(gonfs.AuthFlavorUnix)

	AuthBadCred = uint32(gonfs.AuthStatBadCred)
	AuthTooWeak = uint32(gonfs.AuthStatTooWeak)
)

const (
	msgCall    = 0
	msgReply   = 1
	rpcVersion = 2
	authError  = 1 // reject_stat AUTH_ERROR; RPC_MISMATCH is rpc.RpcMismatch

	// maxAuth bounds an opaque_auth body.
	maxAuth = 400
	// maxGroups bounds AUTH_SYS's supplementary groups.
	maxGroups = 16
	// maxMachineName bounds AUTH_SYS's machine name.
	maxMachineName = 255
)

// A Call is one call of a connection.
type Call struct {
	Xid, Prog, Vers, Proc uint32
	// Flavor is the credential's flavour, Cred its body.
	Flavor uint32
	Cred   []byte
	// Args are the procedure's arguments, undecoded.
	Args []byte
	// Start is when the call's record had arrived.
	Start  time.Time
	Remote net.Addr
	// NoWait asks the Handler not to wait for the disk: the reader
	// goroutine answers the call, and the Handler returns ErrWouldBlock
	// rather than hold up every call behind it.
	NoWait bool
	// Tail, set by the Handler, is data that ends the reply.
	Tail Tail

	rec  *[]byte // the pooled record Cred and Args point into
	unix Unix
}

// A Tail is data that ends a reply after the bytes the Handler wrote: sent
// from where it lies, with its XDR padding, then released.
type Tail interface {
	Buffers() [][]byte
	Len() int
	Release()
}

var errNotCall = errors.New("sunrpc: not an RPC call")

// decodeCall reads a call's header from rec. A record that is no call
// is an error; a call of another RPC version has ok false and is answered
// RPC_MISMATCH.
func decodeCall(rec []byte, c *Call) (ok bool, err error) {
	if len(rec) < 4*10 {
		return false, errNotCall
	}
	u := func(i int) uint32 { return binary.BigEndian.Uint32(rec[4*i:]) }
	c.Xid = u(0)
	if u(1) != msgCall {
		return false, errNotCall
	}
	if u(2) != rpcVersion {
		return false, nil
	}
	c.Prog, c.Vers, c.Proc, c.Flavor = u(3), u(4), u(5), u(6)
	rest := rec[4*7:]
	c.Cred, rest, ok = opaque(rest, maxAuth)
	if !ok || len(rest) < 4 {
		return false, errNotCall
	}
	_, rest, ok = opaque(rest[4:], maxAuth) // the verifier: AUTH_SYS and AUTH_NONE have none to check
	if !ok {
		return false, errNotCall
	}
	c.Args = rest
	return true, nil
}

// opaque splits variable-length opaque data of at most max bytes, padded
// to four, off the front of b.
func opaque(b []byte, max int) (v, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, b, false
	}
	n := binary.BigEndian.Uint32(b)
	if n > uint32(max) || int(n+3)&^3 > len(b)-4 {
		return nil, b, false
	}
	return b[4 : 4+n], b[4+(n+3)&^3:], true
}

// Unix is an AUTH_SYS credential: who the client says the caller is.
type Unix struct {
	Uid, Gid uint32
	gids     [maxGroups]uint32
	ngids    int
}

// Groups are the caller's supplementary groups.
func (u *Unix) Groups() []uint32 { return u.gids[:u.ngids] }

var errBadCred = errors.New("sunrpc: malformed AUTH_SYS credential")

// Unix decodes the call's AUTH_SYS credential. The groups live as long
// as the call.
func (c *Call) Unix() (*Unix, error) {
	if c.Flavor != AuthSys {
		return nil, errBadCred
	}
	if err := parseUnix(c.Cred, &c.unix); err != nil {
		return nil, err
	}
	return &c.unix, nil
}

// parseUnix decodes an AUTH_SYS credential's body into u.
func parseUnix(body []byte, u *Unix) error {
	if len(body) < 4 {
		return errBadCred
	}
	_, rest, ok := opaque(body[4:], maxMachineName) // after the stamp
	if !ok || len(rest) < 12 {
		return errBadCred
	}
	u.Uid = binary.BigEndian.Uint32(rest)
	u.Gid = binary.BigEndian.Uint32(rest[4:])
	n := binary.BigEndian.Uint32(rest[8:])
	rest = rest[12:]
	if n > maxGroups || int(n)*4 > len(rest) {
		return errBadCred
	}
	u.ngids = int(n)
	for i := range u.ngids {
		u.gids[i] = binary.BigEndian.Uint32(rest[4*i:])
	}
	return nil
}

// HeaderLen is the length of an accepted reply's record mark and header:
// the mark, xid, REPLY, MSG_ACCEPTED, an AUTH_NONE verifier, accept_stat.
const HeaderLen = 4 + 24

// appendHeader appends an accepted reply's header, SUCCESS, to b, the
// record mark left to be filled in.
func appendHeader(b []byte, xid uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, xid)
	b = binary.BigEndian.AppendUint32(b, msgReply)
	b = binary.BigEndian.AppendUint32(b, rpc.MsgAccepted)
	b = binary.BigEndian.AppendUint64(b, 0) // AUTH_NONE, empty
	return binary.BigEndian.AppendUint32(b, Success)
}

// Accept turns reply, which begins with the header the Handler was given,
// into a reply with accept_stat stat and no results yet.
func Accept(reply []byte, stat uint32) []byte {
	reply = reply[:HeaderLen]
	binary.BigEndian.PutUint32(reply[HeaderLen-4:], stat)
	return reply
}

// DenyAuth turns reply, which begins with the header the Handler was
// given, into the refusal MSG_DENIED, AUTH_ERROR, why.
func DenyAuth(reply []byte, why uint32) []byte {
	reply = reply[:4+8]
	reply = binary.BigEndian.AppendUint32(reply, rpc.MsgDenied)
	reply = binary.BigEndian.AppendUint32(reply, authError)
	return binary.BigEndian.AppendUint32(reply, why)
}

// rpcMismatch is the refusal of a call of another RPC version than 2,
// record mark included.
func rpcMismatch(b []byte, xid uint32) []byte {
	b = appendHeader(b, xid)[:4+8]
	b = binary.BigEndian.AppendUint32(b, rpc.MsgDenied)
	b = binary.BigEndian.AppendUint32(b, rpc.RpcMismatch)
	b = binary.BigEndian.AppendUint32(b, rpcVersion)
	b = binary.BigEndian.AppendUint32(b, rpcVersion)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4)|lastFragment)
	return b
}
