package nfs

import (
	"container/list"
	"hash/fnv"
	"sync"
	"syscall"

	"github.com/asof/asof/fs"
	"github.com/asof/asof/history"
)

// READDIR and READDIRPLUS, answered by the interposer: go-nfs numbers
// entries by their position in a listing it caches, so a listing that
// changes between pages, or outlives its cache, repeats or skips entries.
//
// Here a cookie is a hash of the entry's name, and a listing resumes after
// that name: fs lists in name order, so entries present throughout are
// listed exactly once however the directory changes, and a cookie stays
// valid across server restarts. The name a cookie stands for is remembered
// (a bounded cache), and found again by scanning the directory when it was
// forgotten; only a cookie whose entry was since removed and forgotten
// answers BAD_COOKIE, and the client starts the listing again.
const (
	procReaddir     = 16
	procReaddirPlus = 17

	cookieDot       = 1
	cookieDotDot    = 2
	nfsErrBadCookie = 10003
	nfsErrTooSmall  = 10005
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
func (h *handler) resumeAfter(dir fs.Node, cookie uint64) (string, bool, error) {
	if name, ok := h.cookies.get(dir, cookie); ok {
		return name, true, nil
	}
	var found string
	ok := false
	err := h.f.ReadDir(h.cred, dir, "", func(e fs.Dirent) bool {
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

func (h *handler) readdir(c *rpcCall, w *xdrWriter) error {
	plus := c.proc == procReaddirPlus
	r := &xdrReader{b: c.args}
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
		w.u32(status(err))
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
		return fail(status(syscall.ENOTDIR))
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
		name, ok, err := h.resumeAfter(dir, cookie)
		if err != nil {
			return fail(status(err))
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
		parent, err := h.f.Lookup(h.cred, dir, "..")
		if dir.Versions || err != nil {
			parent = dir
		}
		pa := h.attr(parent)
		if pa == nil {
			pa = da
		}
		if !emit("..", parent, pa, cookieDotDot) {
			return w.finish(false)
		}
	}
	var ferr error
	err = h.f.ReadDir(h.cred, dir, after, func(e fs.Dirent) bool {
		a, err := h.f.Getattr(e.Node)
		if err != nil {
			return true // removed meanwhile
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
		return fail(status(err))
	}
	return w.finish(!full)
}

// finish ends a directory list.
func (w *xdrWriter) finish(eof bool) error {
	w.bool(false)
	w.bool(eof)
	return nil
}
