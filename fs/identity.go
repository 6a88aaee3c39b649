package fs

import (
	"fmt"
	"os/user"
	"strconv"
	"sync"
	"time"
)

// AnonID is the default anonymous uid and gid: nobody and nogroup.
const AnonID = 65534

// Squash is whose identity a caller acts as, as exports.squash names it,
// with knfsd's meaning for each.
type Squash int

const (
	// SquashRoot: every caller acts as the identity its request carries,
	// except uid 0, which acts as the anonymous identity (root_squash).
	SquashRoot Squash = iota
	// SquashNone: every caller acts as itself, root included
	// (no_root_squash).
	SquashNone
	// SquashAll: every caller acts as the anonymous identity (all_squash).
	SquashAll
)

// ParseSquash reads exports.squash.
func ParseSquash(s string) (Squash, error) {
	switch s {
	case "root", "":
		return SquashRoot, nil
	case "none":
		return SquashNone, nil
	case "all":
		return SquashAll, nil
	}
	return 0, fmt.Errorf("squash %q: want root, none or all", s)
}

func (s Squash) String() string {
	switch s {
	case SquashNone:
		return "none"
	case SquashAll:
		return "all"
	}
	return "root"
}

// Caller is the identity a request acts as, given the uid, gid and
// supplementary groups it carries (an NFS AUTH_SYS credential, a 9P
// attach): the squash rule is applied here, once, for both protocols.
// Under SquashRoot, as knfsd's root_squash, uid 0 becomes the anonymous
// uid, and gid 0 the anonymous gid wherever it appears, primary or
// supplementary: group root grants as much on most systems as user root.
func (f *FS) Caller(uid, gid uint32, groups []uint32) Cred {
	switch f.opts.Squash {
	case SquashAll:
		return f.Anonymous()
	case SquashNone:
		return Cred{Uid: uid, Gid: gid, Groups: groups}
	}
	anon := f.opts.Anon
	if uid == 0 {
		uid = anon.Uid
	}
	if gid == 0 {
		gid = anon.Gid
	}
	var out []uint32
	for i, g := range groups {
		if g == 0 {
			if out == nil {
				out = append(make([]uint32, 0, len(groups)), groups[:i]...)
			}
			g = anon.Gid
		}
		if out != nil {
			out = append(out, g)
		}
	}
	if out == nil {
		out = groups
	}
	return Cred{Uid: uid, Gid: gid, Groups: out}
}

// Anonymous is the identity of squashed callers and of callers that carry
// no credential (NFS AUTH_NONE).
func (f *FS) Anonymous() Cred { return Cred{Uid: f.opts.Anon.Uid, Gid: f.opts.Anon.Gid} }

// LocalUser is the identity of a user of the server's own user database,
// by uid, with its primary group and supplementary groups, as diod gives
// a 9P attach that names only a uid. A uid the database does not know
// acts with no groups beyond gid = uid's own number, which is what a
// 9P attach can say about it. The squash rule is applied.
func (f *FS) LocalUser(uid uint32) Cred {
	gid, groups := f.users.groups(uid)
	return f.Caller(uid, gid, groups)
}

// LocalUserByName is LocalUser for a 9P attach that names its user only
// by name (n_uname unset). A name the database does not know is ENOENT's
// kin: ok is false and the caller refuses the attach.
func (f *FS) LocalUserByName(name string) (Cred, bool) {
	u, err := user.Lookup(name)
	if err != nil {
		return Cred{}, false
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return Cred{}, false
	}
	return f.LocalUser(uint32(uid)), true
}

// userDB caches lookups in the server's user database: a 9P client
// attaches once per local user and per mount, and /etc/group is read
// whole on each lookup. Entries expire so that a group change on the
// server reaches new attaches within a minute.
type userDB struct {
	mu sync.Mutex // guards m
	m  map[uint32]userEntry
}

type userEntry struct {
	gid    uint32
	groups []uint32
	at     time.Time
}

const userTTL = time.Minute

func (d *userDB) groups(uid uint32) (uint32, []uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.m[uid]; ok && time.Since(e.at) < userTTL {
		return e.gid, e.groups
	}
	e := userEntry{gid: uid, at: time.Now()}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			e.gid = uint32(g)
		}
		if ids, err := u.GroupIds(); err == nil {
			for _, s := range ids {
				if g, err := strconv.ParseUint(s, 10, 32); err == nil && uint32(g) != e.gid {
					e.groups = append(e.groups, uint32(g))
				}
			}
		}
	}
	if d.m == nil {
		d.m = map[uint32]userEntry{}
	}
	d.m[uid] = e
	return e.gid, e.groups
}
