package nfs

import (
	"container/list"
	"hash/fnv"
	"sync"
	"syscall"

	gonfs "github.com/willscott/go-nfs"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
	"github.com/asof/asof/nfs/sunrpc"
)

// READDIR and READDIRPLUS.
//
// A cookie is a hash of the entry's name, and a listing resumes after
// that name: fs lists in name order, so entries present throughout are
// listed exactly once however the directory changes, and a cookie stays
// valid across server restarts. The name a cookie stands for is remembered
// (a bounded cache), and found again by scanning the directory when it was
// forgotten; only a cookie whose entry was since removed and forgotten
// answers BAD_COOKIE, and the client starts the listing again.
const (
	cookieDot       = 1
	cookieDotDot    = 2
	nfsErrBadCookie = uint32(gonfs.NFSStatusBadCookie)
	nfsErrTooSmall  = uint32(gonfs.NFSStatusTooSmall)
)

func nameCookie(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64() | 1<<63 // never 0, 1 or 2
}

// cookieCache remembers which name each cookie handed out stands for.
type cookieCache struct {
	mu    sync.Mutex
	order *list.List
	m     map[cookieKey]*list.Element
}

type cookieKey struct {
	dir    fs.Node
	cookie uint64
}

type cookieEntry struct {
	k    cookieKey
	name string
}

const cookieCacheMax = 1 << 18

func (c *cookieCache) put(dir fs.Node, cookie uint64, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m, c.order = map[cookieKey]*list.Element{}, list.New()
	}
	k := cookieKey{dir, cookie}
	if e := c.m[k]; e != nil {
		c.order.MoveToFront(e)
		return
	}
	c.m[k] = c.order.PushFront(&cookieEntry{k: k, name: name})
	for c.order.Len() > cookieCacheMax {
		e := c.order.Back()
		c.order.Remove(e)
		delete(c.m, e.Value.(*cookieEntry).k)
	}
}

func (c *cookieCache) get(dir fs.Node, cookie uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[cookieKey{dir, cookie}]; e != nil {
		return e.Value.(*cookieEntry).name, true
	}
	return "", false
}

// resumeAfter finds the name a cookie stands for.
func (h *handler) resumeAfter(cred fs.Cred, dir fs.Node, cookie uint64) (string, bool, error) {
	if name, ok := h.cookies.get(dir, cookie); ok {
		return name, true, nil
	}
	var found string
	ok := false
	err := h.f.ReadDir(cred, dir, "", func(e fs.Dirent) bool {
		if nameCookie(e.Name) == cookie {
			found, ok = e.Name, true
			return false
		}
		return true
	})
	return found, ok, err
}

func xdrStringLen(s string) int { return 4 + (len(s)+3)&^3 }

const (
	fattr3Len   = 84
	postAttrLen = 4 + fattr3Len
	postFhLen   = 4 + 4 + handleLen
)

func (h *handler) readdir(c *sunrpc.Call, cred fs.Cred, w *xdrWriter) error {
	plus := c.Proc == procReaddirPlus
	r := &xdrReader{b: c.Args}
	fh := r.handle()
	cookie := r.u64()
	r.fixed(8) // cookie verifier: cookies here need none
	dircount := r.u32()
	maxcount := dircount
	if plus {
		maxcount = r.u32()
	}
	if r.err != nil {
		return r.err
	}
	dir, dattr, err := h.targetAttr(fh)
	if err != nil {
		w.u32(h.status(err))
		w.postOpAttr(nil)
		return nil
	}
	da := &dattr
	start := len(w.b)
	fail := func(st uint32) error {
		w.b = w.b[:start]
		w.u32(st)
		w.postOpAttr(da)
		return nil
	}
	if da.Kind != history.KindDir {
		return fail(h.status(syscall.ENOTDIR))
	}
	if maxcount < 512 {
		return fail(nfsErrTooSmall)
	}
	// Where to start: the beginning, after "." or "..", or after a name.
	after, dots := "", 0
	switch cookie {
	case 0:
	case cookieDot:
		dots = 1
	case cookieDotDot:
		dots = 2
	default:
		name, ok, err := h.resumeAfter(cred, dir, cookie)
		if err != nil {
			return fail(h.status(err))
		}
		if !ok {
			return fail(nfsErrBadCookie)
		}
		after, dots = name, 2
	}

	w.u32(nfsOK)
	w.postOpAttr(da)
	w.u64(0)                     // cookie verifier
	size := len(w.b) - start + 8 // and the final value_follows and eof
	dsize := 0
	full := false
	emit := func(name string, n fs.Node, a *fs.Attr, ck uint64) bool {
		entry := 4 + 8 + xdrStringLen(name) + 8
		dentry := 8 + xdrStringLen(name) + 8
		if plus {
			entry += postAttrLen + postFhLen
		}
		if size+entry > int(maxcount) || (plus && dsize+dentry > int(dircount)) {
			full = true
			return false
		}
		size, dsize = size+entry, dsize+dentry
		w.bool(true)
		w.u64(a.Ino)
		w.opaque([]byte(name))
		w.u64(ck)
		if plus {
			w.postOpAttr(a)
			w.bool(true)
			h.putHandle(w, n, a.Kind == history.KindDir)
		}
		return true
	}
	if dots < 1 {
		if !emit(".", dir, da, cookieDot) {
			return fail(nfsErrTooSmall)
		}
	}
	if dots < 2 {
		parent, pa, err := h.f.DotDot(cred, dir)
		if err != nil {
			return fail(h.status(err))
		}
		if !emit("..", parent, &pa, cookieDotDot) {
			return w.finish(false)
		}
	}
	var ferr error
	err = h.f.ReadDir(cred, dir, after, func(e fs.Dirent) bool {
		a, err := h.f.Getattr(e.Node)
		if fs.Errno(err) == syscall.ENOENT {
			return true // removed meanwhile
		}
		if err != nil {
			ferr = err
			return false
		}
		ck := nameCookie(e.Name)
		if !emit(e.Name, e.Node, &a, ck) {
			return false
		}
		h.cookies.put(dir, ck, e.Name)
		return true
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return fail(h.status(err))
	}
	return w.finish(!full)
}

// finish ends a directory list.
func (w *xdrWriter) finish(eof bool) error {
	w.bool(false)
	w.bool(eof)
	return nil
}
